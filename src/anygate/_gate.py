from __future__ import annotations

import math
import warnings
from collections.abc import Awaitable, Callable, Coroutine
from functools import wraps
from time import monotonic
from types import TracebackType
from typing import TYPE_CHECKING, Any, TypeVar, cast

import anyio
import anyio.lowlevel
from anyio.abc import TaskGroup
from typing_extensions import ParamSpec, Self, TypeVarTuple, Unpack, final

from . import _diagnostics, _tasks
from ._admission import Acquisition, _Admission
from ._diagnostics import Holder, _CancellableRecord, _new_record, _Record
from ._exceptions import GateClosed
from ._wakeup import LoopRef, Wakeup

_T = TypeVar("_T")
_P = ParamSpec("_P")
if TYPE_CHECKING:
    # Defined for type checkers only: stubtest cannot compare a TypeVarTuple.
    _PosArgsT = TypeVarTuple("_PosArgsT")

# Bypassing GateGuard.__new__ and __init__ makes this the cheapest way to build one.
_new_guard = cast("Callable[[type[GateGuard]], GateGuard]", object.__new__)
_new_named_guard = cast("Callable[[type[_NamedGuard]], _NamedGuard]", object.__new__)


@final
class Gate:
    """A gate that work enters, and that shutdown closes and drains.

    Each unit of work that uses a shared object (a tenant, a pool, files on disk)
    holds the gate while it uses the object: ``with gate:`` for a block, or a
    :class:`GateGuard` from :meth:`enter` when the hold outlives a block.
    Shutdown calls :meth:`close`, which refuses every new entry at once and returns
    when the last holder has let go. After that, nothing is using the object.

    :meth:`enter` and ``with gate:`` never wait and never yield to the event loop:
    they succeed at once or raise. To wait for room on a bounded gate, use
    :meth:`acquire`.

    A gate needs no running event loop to be created, and it is not tied to one:
    the same gate can serve successive :func:`anyio.run` calls on any backend.

    Thread safety: entering, releasing and cloning may be done from any thread,
    including threads that anyio did not start; a last release in a thread wakes
    :meth:`close` in its own event loop. On a gate without a limit, no lock is
    taken on these paths.

    :param name: names the gate in errors, log records and ``repr()``
    :param limit: the most holds admitted at once, or ``None`` for no limit;
        clones are not limited, since they are part of work already admitted
    :param warn_after: seconds :meth:`close` waits before it logs a warning that
        names the holders keeping the gate open, or ``None`` for no warning
    :raises TypeError: if an argument has the wrong type
    :raises ValueError: if ``limit`` is below 1, or ``warn_after`` is negative or NaN
    """

    __slots__ = (
        "_admission",
        "_cancelling",
        "_closed",
        "_closers",
        "_holds",
        "_name",
        "_records",
        "_slow",
        "_warn_after",
        "_warned_since",
    )

    def __init__(
        self, name: str | None = None, *, limit: int | None = None, warn_after: float | None = 1.0
    ) -> None:
        _check_name(name)
        _check_limit(limit)
        self._name = name
        # One item per hold: list.append and list.pop are atomic in CPython, which
        # makes len() an exact, lock-free counter for threads.
        self._holds: list[None] = []
        self._closed = False
        self._admission = None if limit is None else _Admission(limit)
        # One flag for everything off the fast path (closed, or bounded), so that
        # an open unbounded gate pays a single test per entry and release.
        self._slow = self._admission is not None
        self._closers: list[Wakeup] = []
        # Named and cancellable holds, oldest first.
        self._records: dict[_Record, None] = {}
        self._warn_after = _check_seconds("warn_after", warn_after)
        # When a close that has logged a slow-close warning started.
        self._warned_since: float | None = None
        self._cancelling = False

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        name = "" if self._name is None else f" {self._name!r}"
        return f"<Gate{name} {state}, count={len(self._holds)}>"

    @property
    def name(self) -> str | None:
        """The gate's name, or ``None``."""
        return self._name

    @property
    def count(self) -> int:
        """How many holds are in progress: guards unreleased plus ``with`` blocks."""
        return len(self._holds)

    @property
    def closed(self) -> bool:
        """``True`` from the moment :meth:`close` is called until :meth:`reopen`."""
        return self._closed

    @property
    def limit(self) -> int | None:
        """The most holds admitted at once, or ``None``."""
        return None if self._admission is None else self._admission.limit

    def enter(self, name: str | None = None, *, cancellable: bool = False) -> GateGuard:
        """Hold the gate until the returned guard is released.

        Never waits and never yields to the event loop: it is not a checkpoint,
        so cancellation cannot interrupt it. Safe to call from any thread.

        :param name: names the holder: :meth:`holders` lists it, and a slow
            :meth:`close` logs it. Unnamed holds are only counted, which is faster.
        :param cancellable: when the guard is used with ``with`` or ``async with``,
            :meth:`close` with a ``grace`` cancels the block once the grace period
            is over; the block then ends like :func:`anyio.move_on_after`, and
            :attr:`GateGuard.cancelled_caught` is set. It needs an event loop in
            the calling thread.
        :return: a guard to :meth:`~GateGuard.release`, or to use with ``with``
        :raises GateClosed: if the gate is closed
        :raises anyio.WouldBlock: if the gate is at its limit, or tasks wait in
            :meth:`acquire`
        :raises TypeError: if ``name`` is neither a string nor ``None``
        :raises RuntimeError: if ``cancellable`` is true and no event loop runs in
            this thread
        """
        if cancellable:
            return self._enter_cancellable(name)
        holds = self._holds
        if name is None:
            # Count first, then look at the flag: close() sets the flag before
            # it looks at the count, so one of the two always sees the other.
            holds.append(None)
            if self._slow:
                self._admit_or_leave()
            guard = _new_guard(GateGuard)
            guard._gate = self
            guard._holds = holds
            return guard
        if name.__class__ is not str:
            _check_name(name)
        # As above, with _adopt() inlined: this is the hot path of a named entry.
        holds.append(None)
        if self._slow:
            self._admit_or_leave()
        named = _new_named_guard(_NamedGuard)
        named._gate = self
        named._holds = holds
        record = _new_record(_Record)
        record.name = name
        record.since = monotonic()
        named._record = record
        self._records[record] = None
        return named

    def _enter_cancellable(self, name: str | None) -> GateGuard:
        _check_name(name)
        try:
            anyio.lowlevel.current_token()
        except RuntimeError as exc:
            raise RuntimeError(
                "enter(cancellable=True) needs an event loop in the calling thread"
            ) from exc
        holds = self._holds
        holds.append(None)
        if self._slow:
            self._admit_or_leave()
        return self._adopt(holds, name, cancellable=True)

    def _adopt(self, holds: list[None], name: str | None, cancellable: bool = False) -> GateGuard:
        """Make the guard for a hold already counted in ``holds``."""
        if name is None and not cancellable:
            guard = _new_guard(GateGuard)
            guard._gate = self
            guard._holds = holds
            return guard
        named = _new_named_guard(_CancellableGuard if cancellable else _NamedGuard)
        named._gate = self
        named._holds = holds
        record: _Record
        if cancellable:
            record = _CancellableRecord(name)
        else:
            record = _new_record(_Record)
            record.name = name
            record.since = monotonic()
        named._record = record
        self._records[record] = None
        return named

    def _admit_or_leave(self) -> None:
        if self._closed:
            self._leave()
            raise self._closed_error()
        admission = self._admission
        if admission is not None and not admission.has_room(self._holds):
            self._leave()
            raise anyio.WouldBlock(f"{self._describe()} is at its limit of {admission.limit}")

    def try_enter(self, name: str | None = None, *, cancellable: bool = False) -> GateGuard | None:
        """Like :meth:`enter`, but return ``None`` where it would raise
        :exc:`GateClosed` or :exc:`anyio.WouldBlock`.

        :raises TypeError: if ``name`` is neither a string nor ``None``
        :raises RuntimeError: if ``cancellable`` is true and no event loop runs in
            this thread
        """
        try:
            return self.enter(name, cancellable=cancellable)
        except (GateClosed, anyio.WouldBlock):
            return None

    def acquire(self, name: str | None = None) -> Acquisition:
        """Hold the gate, waiting for room if it is at its limit.

        ``guard = await gate.acquire()`` holds until ``guard.release()``;
        ``async with gate.acquire() as guard:`` holds for the block. Waiters are
        admitted first come, first served; on a gate without a limit there is
        always room. This is a checkpoint.

        Cancellation: a waiter that is cancelled holds nothing afterwards.

        :param name: names the holder, as in :meth:`enter`
        :raises GateClosed: if the gate is closed, or closes while this waits
        :raises TypeError: if ``name`` is neither a string nor ``None``
        """
        _check_name(name)
        return Acquisition(self, name)

    def check(self) -> None:
        """Raise if the gate is closed, so that long work can stop on its own.

        :raises GateClosed: if the gate is closed
        """
        if self._closed:
            raise self._closed_error()

    def guarded(self, func: Callable[_P, Awaitable[_T]]) -> Callable[_P, Coroutine[Any, Any, _T]]:
        """Decorate an async function so that each call holds the gate throughout.

        The gate is entered when the function is called, before the coroutine
        is awaited, so a call on a closed gate raises :exc:`GateClosed` at once.
        The hold ends when the call ends, however it ends.

        :raises TypeError: if ``func`` is not callable
        """
        _tasks.check_callable(func, "guarded")

        @wraps(func)
        def call(*args: _P.args, **kwargs: _P.kwargs) -> Coroutine[Any, Any, _T]:
            guard = self.enter()
            try:
                awaitable = func(*args, **kwargs)
            except BaseException:
                guard.release()
                raise
            return _tasks.hold_while(guard, awaitable)

        return call

    def start_soon(
        self,
        task_group: TaskGroup,
        func: Callable[[Unpack[_PosArgsT]], Awaitable[Any]],
        *args: Unpack[_PosArgsT],
        name: str | None = None,
    ) -> None:
        """Start ``func(*args)`` in ``task_group``, holding the gate until it ends.

        The gate is entered here, before the task is scheduled: a closed gate
        raises :exc:`GateClosed` in the caller, and :meth:`close` waits for the
        task even if it has not started yet. The hold ends when the task ends,
        by returning, raising or being cancelled.

        :param name: names the holder and the task
        :raises GateClosed: if the gate is closed
        :raises anyio.WouldBlock: if the gate is at its limit
        :raises TypeError: if ``func`` is not callable, or ``name`` not a string
        """
        _tasks.check_callable(func, "start_soon")
        guard = self.enter(name)
        task_name = name if name is not None else getattr(func, "__qualname__", None)
        try:
            task_group.start_soon(_tasks.run_holding, guard, func, *args, name=task_name)
        except BaseException:
            guard.release()
            raise

    def holders(self) -> list[Holder]:
        """The named holders still holding the gate, oldest first."""
        return _diagnostics._holders(list(self._records))

    def __enter__(self) -> None:
        holds = self._holds
        holds.append(None)
        if self._slow:
            self._admit_or_leave()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc_val: BaseException | None,
        exc_tb: TracebackType | None,
    ) -> None:
        holds = self._holds
        try:
            holds.pop()
        except IndexError:
            raise RuntimeError(f"{self!r} was exited more often than entered") from None
        if self._slow:
            self._after_release()

    async def __aenter__(self) -> None:
        self.__enter__()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc_val: BaseException | None,
        exc_tb: TracebackType | None,
    ) -> None:
        self.__exit__(exc_type, exc_val, exc_tb)

    def close(self, *, grace: float | None = None) -> Coroutine[Any, Any, None]:
        """Refuse new entries now; the awaitable returned waits for the drain.

        ``await gate.close()`` is the usual call. The gate is closed by the call
        itself, before anything is awaited: from then on, :meth:`enter` and
        ``with gate:`` raise :exc:`GateClosed`, and tasks waiting in
        :meth:`acquire` are woken with it. So ``drained = gate.close()`` shuts the
        door at once, and ``await drained`` waits later. Guards already held are
        untouched, and :meth:`GateGuard.clone` still works on them, since a clone
        is part of work already admitted.

        The wait ends when :attr:`count` reaches zero, woken by the last release
        with no polling; at once (after a checkpoint) if nothing is held. Any
        number of tasks, in any number of event loops, may wait for the same
        gate, and a later call returns once the gate is drained.

        With a ``grace``, once that many seconds have passed the blocks of guards
        entered with ``cancellable=True`` are cancelled, and the wait goes on
        until they have unwound. ``grace=0`` cancels them at once. Other holds are
        never cancelled by the gate.

        If the wait lasts longer than the gate's ``warn_after``, a warning on the
        ``anygate`` logger names the holders; each named holder released after
        that logs that it kept the gate from closing, and the completion is
        logged with the total time.

        Cancellation: cancelling the waiting task raises the cancellation in it and
        nothing else: no further holders are cancelled, the gate stays closed,
        and a later ``close()`` waits again. To bound the whole wait, wrap it in
        :func:`anyio.fail_after` or :func:`anyio.move_on_after`.

        A task that awaits the close of a gate it holds itself would wait
        forever. Inside the block of a guard entered with ``cancellable=True``
        this is detected, and the await raises :exc:`RuntimeError` (the gate
        stays closed). Other holds do not record their task, to stay cheap: the
        slow-close warning then names the task awaiting the close.

        :param grace: seconds to wait before cancelling cancellable holders, or
            ``None`` to never cancel them
        :raises TypeError: if ``grace`` is not a number
        :raises ValueError: if ``grace`` is negative or NaN
        :raises RuntimeError: when awaited inside the block of a cancellable
            guard on this gate
        """
        grace = _check_seconds("grace", grace)
        self._closed = True
        self._slow = True
        if self._admission is not None:
            self._admission.fail_waiters()
        return self._drained(grace)

    async def _drained(self, grace: float | None) -> None:
        if self._holds:
            self._check_not_held_by_closer()
            closer = Wakeup()
            # Register before looking at the count, so that the last release
            # either sees this closer or happens before the look.
            self._closers.append(closer)
            try:
                if self._holds:
                    await self._wait(closer.event, grace)
                    return
            finally:
                self._closers.remove(closer)
        await anyio.lowlevel.checkpoint()

    async def _wait(self, drained: anyio.Event, grace: float | None) -> None:
        started = monotonic()
        now = anyio.current_time()
        warn_at = None if self._warn_after is None else now + self._warn_after
        cancel_at = None if grace is None else now + grace
        while True:
            # Due deadlines first: warn_after=0 and grace=0 act before any wait.
            now = anyio.current_time()
            if warn_at is not None and now >= warn_at:
                warn_at = None
                if self._warned_since is None:
                    self._warned_since = started
                records = list(self._records)
                _diagnostics._warn_slow_close(
                    self._name,
                    monotonic() - started,
                    self.count,
                    records,
                    anyio.get_current_task().name,
                )
            if cancel_at is not None and now >= cancel_at:
                cancel_at = None
                self._cancelling = True
                for record in list(self._records):
                    if isinstance(record, _CancellableRecord):
                        record.cancel()
            deadline = min((t for t in (warn_at, cancel_at) if t is not None), default=math.inf)
            with anyio.CancelScope(deadline=deadline):
                await drained.wait()
            if drained.is_set():
                break
        if self._warned_since is not None:
            _diagnostics._log_close_completed(self._name, monotonic() - self._warned_since)
            self._warned_since = None

    def _check_not_held_by_closer(self) -> None:
        # Only blocks of cancellable guards know their task; other holds are
        # named, if at all, by the slow-close warning.
        if not self._records:
            return
        task = anyio.get_current_task().id
        for record in list(self._records):
            if isinstance(record, _CancellableRecord) and record.task == task:
                holder = "an unnamed guard" if record.name is None else repr(record.name)
                raise RuntimeError(
                    f"close() of {self._describe()} awaited inside the block of "
                    f"{holder} that holds it: it would wait for itself forever"
                )

    def reopen(self) -> None:
        """Admit entries again after a completed close.

        :raises RuntimeError: if the gate is not closed, or is closed but still held
        """
        if not self._closed:
            raise RuntimeError(f"cannot reopen {self!r}: it is not closed")
        if self._holds:
            raise RuntimeError(f"cannot reopen {self!r}: it is still held")
        self._cancelling = False
        self._closed = False
        self._slow = self._admission is not None

    def _leave(self) -> None:
        self._holds.pop()
        if self._slow:
            self._after_release()

    def _after_release(self) -> None:
        holds = self._holds
        if self._closed:
            if not holds:
                for closer in self._closers.copy():
                    closer.wake()
        elif self._admission is not None:
            self._admission.admit_waiters(holds)

    def _log_late_release(self, record: _Record) -> None:
        closing_since = self._warned_since
        if closing_since is not None and record.name is not None:
            _diagnostics._log_late_release(self._name, record, closing_since)

    def _describe(self) -> str:
        return _diagnostics._describe(self._name)

    def _closed_error(self) -> GateClosed:
        return GateClosed(f"{self._describe()} is closed")


# Not @final at runtime only for its private subclasses; the stubs forbid subclassing.
class GateGuard:
    """One hold on a :class:`Gate`, from :meth:`Gate.enter` until :meth:`release`.

    The gate cannot finish closing while the guard is held. Use the guard as a
    (sync or async) context manager to release it when a block ends; exceptions
    from the block propagate unchanged. A guard entered with ``cancellable=True``
    is the exception: when :meth:`Gate.close` cancels its block after the grace
    period, the block ends quietly, as with :func:`anyio.move_on_after`.

    A guard that is garbage-collected while still held is released then, and a
    :exc:`ResourceWarning` names the gate and the holder: a leaked guard delays
    :meth:`Gate.close` only until the guard is collected.

    Thread safety: a guard may be released or cloned from any thread.
    """

    # Two slots only: an unnamed guard is the hot path. Named and cancellable
    # guards are private subclasses that also keep a record.
    __slots__ = ("_gate", "_holds")

    _gate: Gate
    # The gate's hold list while held, None once released.
    _holds: list[None] | None

    def __new__(cls) -> Self:
        raise TypeError("guards are made by Gate.enter() and GateGuard.clone()")

    def __repr__(self) -> str:
        state = "released" if self._holds is None else "held"
        name = "" if self.name is None else f" {self.name!r}"
        return f"<GateGuard{name} {state} on {self._gate!r}>"

    @property
    def gate(self) -> Gate:
        """The gate this guard holds."""
        return self._gate

    @property
    def name(self) -> str | None:
        """The holder's name given to :meth:`Gate.enter` or :meth:`clone`, or ``None``."""
        return None

    @property
    def released(self) -> bool:
        """``True`` once :meth:`release` has been called."""
        return self._holds is None

    @property
    def cancelled_caught(self) -> bool:
        """``True`` if :meth:`Gate.close` cancelled this guard's block after its grace."""
        return False

    def release(self) -> None:
        """Let go of the gate. Calling it again does nothing.

        If this was the last hold on a closed gate, the tasks waiting in
        :meth:`Gate.close` are woken.
        """
        holds = self._holds
        if holds is None:
            return
        self._holds = None
        holds.pop()
        gate = self._gate
        if gate._slow:
            gate._after_release()

    def clone(self, name: str | None = None, *, cancellable: bool = False) -> GateGuard:
        """Return a new guard on the same gate, to hand to work this holder started.

        Succeeds even on a closed or full gate, since the clone's work is part of
        work already admitted; :meth:`Gate.close` waits for the clone too.

        :param name: names the new holder
        :param cancellable: as for :meth:`Gate.enter`
        :raises RuntimeError: if this guard has been released
        :raises TypeError: if ``name`` is neither a string nor ``None``
        """
        _check_name(name)
        holds = self._holds
        if holds is None:
            raise RuntimeError(f"cannot clone {self!r}: it has been released")
        holds.append(None)
        # Released by another thread meanwhile: the count may have reached zero
        # and a close may have returned, so the clone must not be admitted.
        if self._holds is None:
            self._gate._leave()
            raise RuntimeError(f"cannot clone {self!r}: it has been released")
        return self._gate._adopt(holds, name, cancellable)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc_val: BaseException | None,
        exc_tb: TracebackType | None,
    ) -> bool | None:
        # release(), inlined: this is the hot path of `with gate.enter():`.
        holds = self._holds
        if holds is not None:
            self._holds = None
            holds.pop()
            gate = self._gate
            if gate._slow:
                gate._after_release()
        return None

    async def __aenter__(self) -> Self:
        return self.__enter__()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc_val: BaseException | None,
        exc_tb: TracebackType | None,
    ) -> bool | None:
        return self.__exit__(exc_type, exc_val, exc_tb)

    def __del__(self) -> None:
        if self._holds is not None:
            message = f"{self!r} was garbage-collected without being released"
            self.release()
            warnings.warn(message, ResourceWarning, stacklevel=1, source=self)


class _NamedGuard(GateGuard):
    """A guard with a holder record: named, or cancellable, or both."""

    __slots__ = ("_record",)

    _record: _Record

    @property
    def name(self) -> str | None:
        return self._record.name

    def release(self) -> None:
        holds = self._holds
        if holds is None:
            return
        self._holds = None
        gate = self._gate
        # Forget the record before the count drops, so that holders() never
        # lists a holder after the close it held up has returned.
        gate._records.pop(self._record, None)
        if gate._warned_since is not None:
            gate._log_late_release(self._record)
        holds.pop()
        if gate._slow:
            gate._after_release()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc_val: BaseException | None,
        exc_tb: TracebackType | None,
    ) -> bool | None:
        self.release()
        return None


class _CancellableGuard(_NamedGuard):
    """A guard from ``enter(cancellable=True)``: close(grace=) can cancel its block.

    A subclass, so that plain guards pay nothing for the cancel scope.
    """

    __slots__ = ()

    def _cancellable_record(self) -> _CancellableRecord:
        return cast(_CancellableRecord, self._record)

    @property
    def cancelled_caught(self) -> bool:
        return self._cancellable_record().cancelled_caught

    def __enter__(self) -> Self:
        record = self._cancellable_record()
        if record.scope is not None:
            raise RuntimeError(f"{self!r} is already in use as a context manager")
        try:
            record.loop = LoopRef()
            scope = anyio.CancelScope()
            scope.__enter__()
        except RuntimeError as exc:
            self.release()
            raise RuntimeError(
                "a cancellable guard must be used in a thread running an event loop"
            ) from exc
        record.scope = scope
        record.task = anyio.get_current_task().id
        if self._gate._cancelling:
            scope.cancel()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc_val: BaseException | None,
        exc_tb: TracebackType | None,
    ) -> bool:
        record = self._cancellable_record()
        scope = record.scope
        if scope is None:
            self.release()
            return False
        record.scope = None
        record.task = None
        try:
            caught = bool(scope.__exit__(exc_type, exc_val, exc_tb))
        finally:
            self.release()
        record.cancelled_caught = scope.cancelled_caught
        return caught


def _check_name(name: object) -> None:
    if name is not None and not isinstance(name, str):
        raise TypeError(f"name must be a str or None, not {type(name).__name__}")


def _check_limit(limit: object) -> None:
    if limit is None:
        return
    if not isinstance(limit, int) or isinstance(limit, bool):
        raise TypeError(f"limit must be an int or None, not {type(limit).__name__}")
    if limit < 1:
        raise ValueError(f"limit must be at least 1, not {limit}")


def _check_seconds(argument: str, seconds: object) -> float | None:
    if seconds is None:
        return None
    if not isinstance(seconds, (int, float)) or isinstance(seconds, bool):
        raise TypeError(
            f"{argument} must be a number of seconds or None, not {type(seconds).__name__}"
        )
    if math.isnan(seconds) or seconds < 0:
        raise ValueError(f"{argument} must be a number of seconds >= 0, not {seconds}")
    return float(seconds)
