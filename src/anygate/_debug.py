"""Debug mode: a gate that records where every hold was taken, and by whom.

``Gate(debug=True)`` (or ``python -X dev``, or ``ANYGATE_DEBUG=1``) makes a
:class:`DebugGate`, a private subclass chosen once, in ``Gate.__new__``: the
hot paths of every other gate are left as they are. Each way to hold ends in
one of these methods, which take a :class:`~anygate._records.Taken` (the first
caller outside anygate, and the task or thread) before the hold is counted:

* ``with gate:`` and ``async with gate:``: :meth:`DebugGate.__enter__`, whose
  records wait on a stack per task (or thread), since with-blocks nest;
* ``enter()``, ``try_enter()`` and ``start_soon()``: :meth:`DebugGate._enter_recorded`;
* ``clone()``, ``acquire()`` and ``start()``: ``_new_guard``, which the core
  calls for the guards it makes (``acquire()`` here makes no unnamed guard);
* ``guarded``/``gated``: ``with gate:`` inside their wrapper;
* a child gate's hold on this gate: ``_new_child_record``.

Every such hold is a guard with a record (or, for a with-block, a record on
the stack), so the rule of the counter is the core's, unchanged.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Awaitable, Callable
from functools import partial
from time import monotonic
from types import FrameType, TracebackType
from typing import Any

import anyio
from typing_extensions import TypeVarTuple, Unpack

from . import _tasks
from ._acquisition import Acquisition, recorded_acquisition
from ._exceptions import GateClosed
from ._gate import Gate
from ._guards import CancellableGuard, GateGuard, recorded_guard
from ._records import CancellableRecord, ChildRecord, Holder, Record, Taken
from ._tasks import TaskStarter
from ._util import check_callable, check_name, require_loop

_PosArgsT = TypeVarTuple("_PosArgsT")

#: How an unnamed hold is listed, by the anygate function the caller called
#: (the outermost anygate frame on the stack).
_KINDS = {
    "__enter__": "with gate:",
    "__aenter__": "acquire()",
    "_acquire": "acquire()",
    "acquire": "acquire()",
    "enter": "enter()",
    "try_enter": "try_enter()",
    "clone": "clone()",
    "start_soon": "start_soon()",
    "start": "start()",
    "to_thread": "to_thread()",
    "__init__": "Gate(parent=...)",
    "reopen": "reopen()",
}


class DebugRecord(Record):
    __slots__ = ("taken",)

    def __init__(self, name: str | None, taken: Taken) -> None:
        self.name = name
        self.since = monotonic()
        self.taken = taken


class DebugCancellableRecord(CancellableRecord):
    __slots__ = ("taken",)

    def __init__(self, name: str | None, taken: Taken) -> None:
        CancellableRecord.__init__(self, name)
        self.taken = taken


class DebugChildRecord(ChildRecord):
    __slots__ = ("taken",)

    def __init__(self, name: str, holders: Callable[[], list[Holder]], taken: Taken) -> None:
        ChildRecord.__init__(self, name, holders)
        self.taken = taken


def _in_anygate(frame: FrameType) -> bool:
    module = str(frame.f_globals.get("__name__", ""))
    return module == "anygate" or module.startswith("anygate.")


def _kind_of(frame: FrameType | None) -> str:
    """How an unnamed hold taken through ``frame`` (anygate's outermost) is listed."""
    if frame is None:
        return "a hold"
    name = frame.f_code.co_name
    if name == "call":
        # The wrapper of guarded() or gated(): name what it wraps.
        func = frame.f_locals.get("func", frame.f_locals.get("method"))
        return f"guarded call of {getattr(func, '__qualname__', '?')}()"
    return _KINDS.get(name, f"{name}()")


def _current() -> tuple[str, object]:
    """Who is running: ``"task 'name'"`` or ``"thread 'name'"``, and a key for it."""
    try:
        task = anyio.get_current_task()
    except Exception:  # no event loop in this thread, or not in a task of it
        thread = threading.current_thread()
        return f"thread {thread.name!r}", ("thread", thread.ident)
    return f"task {task.name!r}", task.id


def taken(kind: str | None, by: str | None = None) -> Taken:
    """Where and by whom (``by``, if the caller knows) the hold about to be
    counted is taken."""
    frame: FrameType | None = sys._getframe(1)
    outermost = None
    while frame is not None and _in_anygate(frame):
        outermost = frame
        frame = frame.f_back
    if frame is None:
        site = "<unknown>"
    else:
        code = frame.f_code
        site = f"{code.co_filename}:{frame.f_lineno} in {code.co_name}"
    return Taken(kind or _kind_of(outermost), site, by or _current()[0])


class DebugGate(Gate):  # type: ignore[misc]  # Gate is final for users only
    """A :class:`Gate` in debug mode; it says it is a ``Gate`` (see the end)."""

    __slots__ = ("_blocks",)

    #: The records of the with-blocks in progress, a stack per task or thread.
    _blocks: dict[object, list[Record]]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._blocks = {}
        Gate.__init__(self, *args, **kwargs)

    @property
    def debug(self) -> bool:
        return True

    # -- Guards --------------------------------------------------------------

    def _new_guard(self, cls: type[GateGuard], name: str | None) -> GateGuard:
        return self._recorded_guard(name, cls is CancellableGuard, taken(None))

    def _recorded_guard(self, name: str | None, cancellable: bool, where: Taken) -> GateGuard:
        if cancellable:
            return recorded_guard(self, DebugCancellableRecord(name, where))
        return recorded_guard(self, DebugRecord(name, where))

    def _new_child_record(self, name: str, holders: Callable[[], list[Holder]]) -> ChildRecord:
        return DebugChildRecord(name, holders, taken(None))

    def _enter_recorded(self, name: str | None, cancellable: bool, kind: str) -> GateGuard:
        check_name(name)
        if cancellable:
            require_loop(f"{kind.rstrip('()')}(cancellable=True)")
        guard = self._recorded_guard(name, cancellable, taken(kind))
        self._count(guard)
        return guard

    def enter(self, name: str | None = None, *, cancellable: bool = False) -> GateGuard:
        return self._enter_recorded(name, cancellable, "enter()")

    def try_enter(self, name: str | None = None, *, cancellable: bool = False) -> GateGuard | None:
        try:
            return self._enter_recorded(name, cancellable, "try_enter()")
        except (GateClosed, anyio.WouldBlock):
            return None

    def acquire(self, name: str | None = None, *, cancellable: bool = False) -> Acquisition:
        return recorded_acquisition(self, name, cancellable)

    def start_soon(
        self,
        task_group: TaskStarter,
        func: Callable[[Unpack[_PosArgsT]], Awaitable[Any]],
        *args: Unpack[_PosArgsT],
        name: str | None = None,
        cancellable: bool = False,
    ) -> None:
        if not callable(func):
            check_callable(func, "start_soon")  # type: ignore[unreachable]
        task_name = name if name is not None else getattr(func, "__qualname__", None)
        kind = f"start_soon({task_name})" if task_name is not None else "start_soon()"
        guard = self._enter_recorded(name, cancellable, kind)
        run = partial(_tasks._run_cancellable if cancellable else _tasks._run_holding, guard)
        try:
            task_group.start_soon(run, func, *args, name=task_name)
        except BaseException:
            guard.release()
            raise

    # -- with gate: ------------------------------------------------------------

    def __enter__(self) -> None:
        self._enter_block("with gate:")

    async def __aenter__(self) -> None:
        self._enter_block("async with gate:")

    def _enter_block(self, kind: str) -> None:
        by, key = _current()
        record = DebugRecord(None, taken(kind, by))
        blocks = self._blocks
        # HOT COPY of GateCore._count, with no guard.
        holds = self._holds
        holds.append(None)
        if self._closed_or_bounded:
            error = self._refusal()
            if error is not None:
                self._refuse()
                raise error
        try:
            record.since = monotonic()
            blocks.setdefault(key, []).append(record)
            # After the count: the count is never below the records.
            self._records[record] = None
        except BaseException:
            # Interrupted: the with statement will not call __exit__.
            self._records.pop(record, None)
            stack = blocks.get(key)
            if stack and stack[-1] is record:
                stack.pop()
            self._drop()
            raise

    def _forget_block(self) -> None:
        """Forget the record of the with-block ending in this task, before its
        hold is dropped (so that holders() never outlives a drain)."""
        key = _current()[1]
        blocks = self._blocks
        stack = blocks.get(key)
        if not stack:
            # Left in another task than it was entered in (an async generator
            # resumed elsewhere): the count is right, but which record goes
            # cannot be known; the newest one does.
            stacks = [s for s in blocks.copy().values() if s]
            if not stacks:
                return
            stack = max(stacks, key=lambda s: s[-1].since)
        record = stack.pop()
        if not stack:
            blocks.pop(key, None)
        self._records.pop(record, None)
        if self._closing is not None:
            self._log_late_release(record)

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc_val: BaseException | None,
        exc_tb: TracebackType | None,
    ) -> None:
        try:
            self._forget_block()
        finally:
            # HOT COPY of GateCore._drop: in the finally, so that nothing
            # interrupted above keeps the hold.
            try:
                self._holds.pop()
                if self._closed_or_bounded:
                    self._settle()
            except IndexError:
                raise RuntimeError(f"{self!r} was exited more often than entered") from None
            except BaseException:
                if self._closed_or_bounded:
                    self._settle()
                raise

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc_val: BaseException | None,
        exc_tb: TracebackType | None,
    ) -> None:
        # Not a hot path: the call's own start is the one window an interrupt
        # has before the drop, as for any exit written in Python.
        self.__exit__(exc_type, exc_val, exc_tb)


# It is a Gate to its users: type(gate).__name__, reprs and tracebacks say so.
DebugGate.__name__ = DebugGate.__qualname__ = "Gate"
DebugGate.__module__ = "anygate"
