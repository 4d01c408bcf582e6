from __future__ import annotations

import math
import sysconfig
import warnings
from collections.abc import Awaitable, Callable, Coroutine, Generator
from threading import RLock, get_ident
from time import monotonic
from types import TracebackType
from typing import TYPE_CHECKING, Any, NoReturn, SupportsIndex, TypeVar, cast

import anyio
import anyio.lowlevel
from typing_extensions import ParamSpec, Self, TypeVarTuple, Unpack, final

from . import _diagnostics, _tasks
from ._admission import ADMITTED, REFUSED, Admission, Waiter
from ._closing import Closing
from ._diagnostics import (
    GateStatistics,
    Holder,
    _CancellableRecord,
    _ChildRecord,
    _Record,
)
from ._exceptions import GateClosed
from ._tasks import TaskStarter
from ._wakeup import LoopRef, Wakeup

_T = TypeVar("_T")
_P = ParamSpec("_P")
if TYPE_CHECKING:
    # Defined for type checkers only: stubtest cannot compare a TypeVarTuple.
    _PosArgsT = TypeVarTuple("_PosArgsT")


@final
class Gate:
    """A gate that work enters, and that shutdown closes and drains.

    Each unit of work that uses a shared object (a tenant, a pool, files on disk)
    holds the gate while it uses the object: ``with gate:`` for a block, or a
    :class:`GateGuard` from :meth:`enter` when the hold outlives a block.
    Shutdown closes the gate, which refuses every new entry at once, and waits
    until the last holder has let go. After that, nothing is using the object.

    :meth:`enter` and ``with gate:`` never wait and never yield to the event loop:
    they succeed at once or raise. To wait for room on a bounded gate, use
    :meth:`acquire`.

    A gate needs no running event loop to be created, and it is not tied to one:
    the same gate can serve successive :func:`anyio.run` calls on any backend.

    A gate can have a parent: the child holds its parent while it is open, so the
    parent cannot finish closing before the child has; closing the parent closes
    the child with the same grace. Holds on the child do not count on the parent.

    Thread safety: entering, releasing and cloning may be done from any thread,
    including threads that anyio did not start; a last release in a thread wakes
    the tasks awaiting the drain in their own event loops, without blocking and
    without starting a thread. On a gate without a limit, open or closed, these
    paths take no lock.

    :param name: names the gate in errors, log records and ``repr()``
    :param parent: a gate that this one holds while it is open
    :param limit: the most holds admitted at once, or ``None`` for no limit;
        clones are not limited, since they are part of work already admitted
    :param warn_after: seconds a close may take, after its grace if it has one,
        before the task awaiting it logs a warning that names the holders keeping
        the gate open; ``None`` for no warning
    :param fast_acquire: if true, :meth:`acquire` does not checkpoint when there
        is room: faster in a tight loop, but such a loop of acquires never lets
        other tasks run or notices cancellation while the gate has room
    :raises GateClosed: if ``parent`` is closed
    :raises anyio.WouldBlock: if ``parent`` is at its limit
    :raises TypeError: if an argument has the wrong type
    :raises ValueError: if ``limit`` is below 1, or ``warn_after`` is negative or NaN
    """

    __slots__ = (
        "_admission",
        "_children",
        "_closing",
        "_closing_waiters",
        "_dirty",
        "_fast_acquire",
        "_holds",
        "_last_close",
        "_lock",
        "_locked",
        "_name",
        "_owner",
        "_parent",
        "_parent_guard",
        "_pending_shuts",
        "_records",
        "_refused",
        "_slow",
        "_warn_after",
    )

    def __init__(
        self,
        name: str | None = None,
        *,
        parent: Gate | None = None,
        limit: int | None = None,
        warn_after: float | None = 1.0,
        fast_acquire: bool = False,
    ) -> None:
        _check_name(name)
        _check_limit(limit)
        if parent is not None and not isinstance(parent, Gate):
            raise TypeError(f"parent must be a Gate or None, not {type(parent).__name__}")
        self._name = name
        # One item per hold: list.append and list.pop are atomic in CPython, which
        # makes len() an exact, lock-free counter for threads.
        self._holds: list[None] = []
        # The close in progress or done, or None while open. Set before _slow.
        self._closing: Closing | None = None
        self._admission = None if limit is None else Admission(limit)
        # One flag for everything off the fast path (closed, or bounded), so that
        # an open unbounded gate pays a single test per entry and release.
        self._slow = self._admission is not None
        # Guards the state changes of a close, a reopen and the line of waiters.
        # Never held while calling out (waking, logging, releasing).
        # Reentrant only so that a KeyboardInterrupt landing right after an
        # acquire can be undone (RLock._is_owned); it is never taken twice, since
        # every acquire first checks _owner.
        self._lock = RLock()
        # The thread holding the lock, so that a finalizer or a signal handler
        # running inside a locked region of this gate, in that same thread,
        # neither waits for the lock forever nor runs in the middle of it.
        self._owner: int | None = None
        # Set by a release whose follow-up awaits the lock's holder (see _settle).
        self._dirty = False
        # Shuts requested from inside a locked region, by a signal handler or a
        # finalizer: (grace, deadline), done as the region is left.
        self._pending_shuts: list[tuple[float | None, float | None]] = []
        # `with self._locked:` takes the lock, and settles after letting it go.
        self._locked = _Locked(self)
        # Named and cancellable holds, oldest first. Changed without a lock, even
        # by finalizers, so read only through dict.copy(): one C call, which
        # nothing can interleave with.
        self._records: dict[_Record, None] = {}
        self._warn_after = _check_seconds("warn_after", warn_after)
        self._fast_acquire = bool(fast_acquire)
        # Tasks in wait_closing().
        self._closing_waiters: list[Wakeup] = []
        self._children: dict[Gate, None] = {}
        self._refused = 0
        self._last_close: float | None = None
        self._parent = parent
        # The hold on the parent while open; set by the parent, under its lock.
        self._parent_guard: GateGuard | None = None
        if parent is not None:
            parent._adopt_child(self)

    def __repr__(self) -> str:
        state = "open" if self._closing is None else "closed"
        name = "" if self._name is None else f" {self._name!r}"
        return f"<Gate{name} {state}, count={len(self._holds)}>"

    @property
    def name(self) -> str | None:
        """The gate's name, or ``None``."""
        return self._name

    @property
    def parent(self) -> Gate | None:
        """The gate this one was created under, or ``None``."""
        return self._parent

    @property
    def count(self) -> int:
        """How many holds are in progress: guards unreleased plus ``with`` blocks."""
        return len(self._holds)

    @property
    def closed(self) -> bool:
        """``True`` from the moment the gate is closed until :meth:`reopen`."""
        return self._closing is not None

    @property
    def limit(self) -> int | None:
        """The most holds admitted at once, or ``None``."""
        return None if self._admission is None else self._admission.limit

    # -- Entering ------------------------------------------------------------

    def enter(self, name: str | None = None, *, cancellable: bool = False) -> GateGuard:
        """Hold the gate until the returned guard is released.

        Never waits and never yields to the event loop: it is not a checkpoint,
        so cancellation cannot interrupt it. Safe to call from any thread.

        A ``KeyboardInterrupt`` raised right after the hold is counted and before
        the guard owns it leaks the hold: CPython may check for signals when the
        counting call returns. The guard is built first, so that window is that
        one check, which CPython's specialised bytecode skips once warm.

        :param name: names the holder: :meth:`holders` lists it, and a slow
            close logs it. Unnamed holds are only counted, which is faster.
        :param cancellable: when the guard is used with ``with`` or ``async with``,
            a close's grace running out cancels the block; the block then ends
            like :func:`anyio.move_on_after`, and :attr:`GateGuard.cancelled_caught`
            is set. It needs an event loop in the calling thread.
        :return: a guard to :meth:`~GateGuard.release`, or to use with ``with``
        :raises GateClosed: if the gate is closed
        :raises anyio.WouldBlock: if the gate is at its limit, or tasks wait in
            :meth:`acquire`
        :raises TypeError: if ``name`` is neither a string nor ``None``
        :raises anyio.NoEventLoopError: if ``cancellable`` is true and no event
            loop runs in this thread
        """
        if cancellable:
            return self._enter_cancellable(name)
        holds = self._holds
        if name is None:
            guard = _Guard()
            guard._gate = self
            # Count first, then look at the flag: a close sets the flag before
            # it looks at the count, so one of the two always sees the other.
            holds.append(None)
            guard._holds = holds
            if self._slow:
                self._admit(guard)
            return guard
        if name.__class__ is not str:
            _check_name(name)
        # As above, with a record: this is the hot path of a named entry.
        named = _NamedGuard()
        named._gate = self
        record = _Record()
        record.name = name
        record.since = monotonic()
        named._record = record
        holds.append(None)
        named._holds = holds
        if self._slow:
            self._admit(named)
        self._records[record] = None
        return named

    def _enter_cancellable(self, name: str | None) -> GateGuard:
        _check_name(name)
        _require_loop("enter(cancellable=True)")
        guard = self._new_named(_CancellableGuard, _CancellableRecord(name))
        holds = self._holds
        holds.append(None)
        guard._holds = holds
        if self._slow:
            self._admit(guard)
        self._records[guard._record] = None
        return guard

    def _new_named(self, cls: type[_NamedGuard], record: _Record) -> _NamedGuard:
        guard = cls()
        guard._gate = self
        guard._record = record
        return guard

    def _unheld_guard(self, name: str | None, cancellable: bool) -> GateGuard:
        """A guard, and its record if it has one, for a hold not yet counted."""
        if name is None and not cancellable:
            guard = _Guard()
            guard._gate = self
            return guard
        record: _Record
        if cancellable:
            record = _CancellableRecord(name)
        else:
            record = _Record()
            record.name = name
            record.since = monotonic()
        return self._new_named(_CancellableGuard if cancellable else _NamedGuard, record)

    def _adopt(self, holds: list[None], name: str | None, cancellable: bool) -> GateGuard:
        """Make the guard for a hold already counted in ``holds``."""
        guard = self._unheld_guard(name, cancellable)
        guard._holds = holds
        if isinstance(guard, _NamedGuard):
            self._records[guard._record] = None
        return guard

    def _admit(self, guard: GateGuard) -> None:
        """Keep the hold just counted for ``guard``, or give it back and raise."""
        error = self._refusal()
        if error is not None:
            guard._holds = None
            self._refuse()
            raise error

    def _refusal(self) -> Exception | None:
        if self._closing is not None:
            return self._closed_error()
        admission = self._admission
        if admission is not None and not admission.has_room(len(self._holds)):
            return anyio.WouldBlock(f"{self._describe()} is at its limit of {admission.limit}")
        return None

    def _refuse(self) -> None:
        """Give back the hold of a refused entry."""
        self._leave()
        # No lock: an entry may be refused in a signal handler that interrupted
        # this gate's own locked region. Under the GIL, from Python 3.11, nothing
        # can run between the read and the write; on 3.10 and on free-threaded
        # builds, concurrent refusals in threads may be undercounted.
        self._refused += 1

    def try_enter(self, name: str | None = None, *, cancellable: bool = False) -> GateGuard | None:
        """Like :meth:`enter`, but return ``None`` where it would raise
        :exc:`GateClosed` or :exc:`anyio.WouldBlock`.

        :raises TypeError: if ``name`` is neither a string nor ``None``
        :raises anyio.NoEventLoopError: if ``cancellable`` is true and no event
            loop runs in this thread
        """
        try:
            return self.enter(name, cancellable=cancellable)
        except (GateClosed, anyio.WouldBlock):
            return None

    def __enter__(self) -> None:
        holds = self._holds
        holds.append(None)
        if self._slow:
            error = self._refusal()
            if error is not None:
                self._refuse()
                raise error

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
            self._settle()

    async def __aenter__(self) -> None:
        self.__enter__()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc_val: BaseException | None,
        exc_tb: TracebackType | None,
    ) -> None:
        self.__exit__(exc_type, exc_val, exc_tb)

    def acquire(self, name: str | None = None, *, cancellable: bool = False) -> Acquisition:
        """Hold the gate, waiting for room if it is at its limit.

        ``guard = await gate.acquire()`` holds until ``guard.release()``;
        ``async with gate.acquire() as guard:`` holds for the block. Waiters are
        admitted first come, first served; on a gate without a limit there is
        always room.

        It is a checkpoint: one cancel point and schedule point when there is
        room, then the hold is taken without yielding again. With the gate's
        ``fast_acquire``, a gate with room and nobody in line is entered with no
        checkpoint at all.

        Cancellation: a cancelled waiter holds nothing afterwards; one admitted
        in the same tick as its cancellation hands its place to the next waiter.

        :param name: names the holder, as in :meth:`enter`
        :param cancellable: with ``async with``, the block is cancelled when a
            close's grace runs out, as for :meth:`enter`; an awaited guard gets
            that behaviour in its own ``with`` block
        :raises GateClosed: if the gate is closed, or closes while this waits
        :raises TypeError: if ``name`` is neither a string nor ``None``
        """
        if name is not None:
            _check_name(name)
        # Acquisition(self, name, cancellable), without a call to __init__.
        acquisition = _Acquisition()
        acquisition._gate = self
        acquisition._name = name
        acquisition._cancellable = cancellable
        acquisition._guard = None
        return acquisition

    async def _acquire(self, name: str | None, cancellable: bool) -> GateGuard:
        if not self._fast_acquire:
            await anyio.lowlevel.checkpoint()
        admission = self._admission
        # Straight to the line when there is no room, so as not to count a refusal.
        if admission is None or admission.has_room(len(self._holds) + 1):
            try:
                return self.enter(name, cancellable=cancellable)
            except anyio.WouldBlock:
                pass
        return await self._wait_in_line(name, cancellable)

    async def _wait_in_line(self, name: str | None, cancellable: bool) -> GateGuard:
        admission = self._admission
        assert admission is not None
        waiter = Waiter()
        holds = self._holds
        with self._locked:
            error = self._closed_error() if self._closing is not None else None
            if error is None:
                # Count first, as enter() does, so that no entry from another
                # thread fits into the room between a look and the count.
                holds.append(None)
                if admission.has_room(len(holds)):
                    waiter.state = ADMITTED
                else:
                    admission.join(waiter)
                    holds.pop()
                    self._dirty = True  # that pop's follow-up, once unlocked
        if error is not None:
            raise error
        if waiter.state != ADMITTED:
            try:
                await waiter.wakeup.event.wait()
            except BaseException:
                with self._locked:
                    admission.leave(waiter)
                if waiter.state == ADMITTED:
                    self._leave()  # admitted in the same tick: hand the place on
                raise
            if waiter.state == REFUSED:
                raise self._closed_error()
        return self._adopt(holds, name, cancellable)

    def check(self) -> None:
        """Raise if the gate is closed, so that long work can stop on its own.

        :raises GateClosed: if the gate is closed
        """
        if self._closing is not None:
            raise self._closed_error()

    # -- Tasks -----------------------------------------------------------------

    def guarded(self, func: Callable[_P, Awaitable[_T]]) -> Callable[_P, Coroutine[Any, Any, _T]]:
        """Decorate an async function so that each call holds the gate throughout.

        The gate is entered when the call starts running (its first step), with
        ``with gate:``: a closed gate raises :exc:`GateClosed`, and one at its
        limit :exc:`anyio.WouldBlock`, from the call. A call that is cancelled or
        dropped before it starts never holds the gate. The hold ends when the
        call ends, however it ends.

        ``inspect.iscoroutinefunction()`` is true for the result, and type
        checkers see the function's own signature. For a method of an object
        that owns its gate, use :func:`gated`.

        :raises TypeError: if ``func`` is not callable
        """
        return _tasks._guard_calls(self, func)

    def start_soon(
        self,
        task_group: TaskStarter,
        func: Callable[[Unpack[_PosArgsT]], Awaitable[Any]],
        *args: Unpack[_PosArgsT],
        name: str | None = None,
        cancellable: bool = False,
    ) -> None:
        """Start ``func(*args)`` in ``task_group``, holding the gate until it ends.

        The gate is entered here, before the task is scheduled: a closed gate
        raises :exc:`GateClosed` in the caller, and a close waits for the task
        even if it has not started yet. The hold ends when the task ends, by
        returning, raising or being cancelled.

        :param task_group: an anyio task group, a trio nursery, or anything with
            their ``start_soon`` and ``start``
        :param name: names the holder and the task
        :param cancellable: run the whole task in a cancellable hold: when a
            close's grace runs out, the task is cancelled and ends quietly
        :raises GateClosed: if the gate is closed
        :raises anyio.WouldBlock: if the gate is at its limit
        :raises TypeError: if ``func`` is not callable, or ``name`` not a string
        """
        if not callable(func):
            _tasks._check_callable(func, "start_soon")  # type: ignore[unreachable]
        if cancellable:
            guard = self.enter(name, cancellable=True)
            run = _tasks._run_cancellable
        elif name is None:
            # Gate.enter(), inlined for an unnamed hold: start_soon sits close
            # to its target of 1.1x tg.start_soon, and the call costs ~0.5%.
            guard = _Guard()
            guard._gate = self
            holds = self._holds
            holds.append(None)
            guard._holds = holds
            if self._slow:
                self._admit(guard)
            run = _tasks._run_holding
        else:
            guard = self.enter(name)
            run = _tasks._run_holding
        task_name = name if name is not None else getattr(func, "__qualname__", None)
        try:
            task_group.start_soon(run, guard, func, *args, name=task_name)
        except BaseException:
            guard.release()
            raise

    async def start(
        self,
        task_group: TaskStarter,
        func: Callable[..., Awaitable[Any]],
        *args: object,
        name: str | None = None,
        cancellable: bool = False,
    ) -> Any:
        """Start ``func(*args, task_status=...)`` in ``task_group`` as anyio's
        ``start`` does, holding the gate until the task ends.

        The gate is entered first, as :meth:`acquire` does (waiting for room on a
        gate at its limit), so a closed gate raises :exc:`GateClosed` here and
        nothing starts. It returns the value the task passes to
        ``task_status.started()``. A task that fails before that releases its
        hold, and its exception propagates from here as anyio's ``start`` does.

        :param task_group: an anyio task group, a trio nursery, or anything with
            their ``start_soon`` and ``start``
        :param name: names the holder and the task
        :param cancellable: run the whole task in a cancellable hold; if a close's
            grace runs out before the task called ``task_status.started()``, this
            raises :exc:`GateClosed`
        :raises GateClosed: if the gate is closed, or its close cancelled the task
            before it started
        :raises TypeError: if ``func`` is not callable, or ``name`` not a string
        """
        _tasks._check_callable(func, "start")
        guard = await self.acquire(name, cancellable=cancellable)
        handoff = _tasks._Handoff(guard)
        task_name = name if name is not None else getattr(func, "__qualname__", None)
        try:
            return await task_group.start(_tasks._run_started, handoff, func, *args, name=task_name)
        except BaseException:
            if not handoff.taken:
                guard.release()
            raise

    # -- Children --------------------------------------------------------------

    def _adopt_child(self, child: Gate, settle: bool = True) -> None:
        """Hold this gate for ``child``, a gate being created or reopened under it.

        Under this gate's lock, so that a close sees either the child, with its
        hold, or the gate shut. ``settle=False`` leaves the follow-up of releases
        made meanwhile to the caller, which holds the child's lock.
        """
        name = f"gate {child._name!r}" if child._name is not None else "an unnamed child gate"
        record = _ChildRecord(name, child.holders)
        guard = self._new_named(_NamedGuard, record)
        holds = self._holds
        _lock_for(self)
        try:
            error = self._refusal()
            if error is None:
                holds.append(None)
                guard._holds = holds
                child._parent_guard = guard
                self._records[record] = None
                self._children[child] = None
        finally:
            self._owner = None
            self._lock.release()
            if settle:
                self._after_unlock()
        if error is not None:
            raise error

    # -- Closing -----------------------------------------------------------------

    def close_nowait(self, *, grace: float | None = None) -> None:
        """Shut the gate now: refuse every new entry, and start the close.

        From this call on, :meth:`enter` and ``with gate:`` raise
        :exc:`GateClosed`, tasks waiting in :meth:`acquire` are woken with it,
        tasks in :meth:`wait_closing` are woken, and open child gates are closed
        with the same grace. Guards already held are untouched, and
        :meth:`GateGuard.clone` still works on them, since a clone is part of
        work already admitted. :meth:`close` waits for the drain.

        The grace belongs to the close, not to a task awaiting it: ``grace``
        seconds after this call, the blocks of cancellable guards are cancelled,
        whether or not any task awaits the drain, and cancelling such a task does
        not revoke it. When several calls give a grace, the earliest deadline
        wins; ``grace=None`` adds none and removes none. A :meth:`reopen` starts
        afresh. The slow-close warning counts from this call too.

        The cancellation names the gate and its grace as its reason (the message
        of the cancel exception), as in ``gate 'tenant' closed and its grace of
        5s ran out``, when the block is cancelled at once (``grace=0``, or a
        block entered after the deadline), and when a task in the block's own
        event loop awaits :meth:`close` of its gate or of an ancestor as the
        grace runs out: that task cancels the block. Otherwise the block's
        cancel scope ends it on its own deadline, with the backend's reason for
        a deadline (``deadline exceeded`` on asyncio, ``cancelled due to
        deadline`` on trio), since anyio has no timer in an event loop other
        than a task's.

        Calling it on a closed gate does nothing but add its grace.

        :param grace: seconds before cancellable holders are cancelled (``0``:
            at once), or ``None`` for never
        :raises TypeError: if ``grace`` is not a number
        :raises ValueError: if ``grace`` is negative or NaN
        """
        grace = _check_seconds("grace", grace)
        self._shut(grace, None if grace is None else monotonic() + grace)

    def _shut(self, grace: float | None, deadline: float | None) -> Closing | None:
        """Shut the gate; ``None`` if that had to wait for a locked region to end.

        A signal handler or finalizer may call this inside one of this gate's
        locked regions, in the thread holding the lock: then the shut is done as
        the region is left, before that thread runs anything else.
        """
        if self._owner == get_ident():
            self._pending_shuts.append((grace, deadline))
            self._dirty = True
            return None
        refused: list[Waiter] = []
        opening_waiters: list[Wakeup] = []
        children: tuple[Gate, ...] = ()
        records: tuple[_Record, ...] = ()
        drained: list[Wakeup] | None = None
        with self._locked:
            closing = self._closing
            shut_now = closing is None
            if closing is None:
                closing = Closing()
                self._closing = closing
                # After _closing: an entry that sees the flag must see the close.
                self._slow = True
                if self._admission is not None:
                    refused = self._admission.refuse_all()
                    self._refused += len(refused)
                opening_waiters, self._closing_waiters = self._closing_waiters, []
            tightened = closing.tighten(self._describe(), grace, deadline)
            if shut_now or tightened:
                children = tuple(self._children.copy())
            if tightened:
                records = tuple(self._records.copy())
                # Tasks watching the blocks wake for the new deadline.
                opening_waiters += closing.watchers
            if not _count_after_store(self._holds) and not closing.drained():
                drained = self._drain(closing)
        if tightened:
            # Before the wakeups: a task awaiting the drain then finds the blocks
            # that the deadline cancelled already cancelled, from any thread.
            closing.escalate(records)
        for waiter in refused:
            waiter.wakeup.wake()
        for wakeup in opening_waiters:
            wakeup.wake()
        for child in children:
            child._shut(grace, deadline)
        if drained is not None:
            self._drained(drained, soon=False)
        return closing

    def close(self, *, grace: float | None = None) -> Coroutine[Any, Any, None]:
        """Shut the gate now, as :meth:`close_nowait`; the awaitable returned
        waits for the drain.

        ``await gate.close()`` is the usual call. The gate is shut by the call
        itself, before anything is awaited, so ``drained = gate.close()`` shuts
        the door at once and ``await drained`` waits later; the grace counts from
        the call. To shut without ever waiting, use :meth:`close_nowait`.

        The wait ends when :attr:`count` reaches zero, woken by the last release
        with no polling; at once (after a checkpoint) if nothing is held, or if
        the close it belongs to has already drained, whatever happened since.
        Any number of tasks, in any number of event loops, may wait, and each
        returns once drained. With a parent, the children's holders are waited
        for too: each child holds its parent until it has drained.

        If the wait goes on for the gate's ``warn_after`` past the end of the
        grace, a warning on the ``anygate`` logger names the holders; each named
        holder released after that logs that it kept the gate from closing, and
        the completion is logged with the close's total time.

        Cancellation: cancelling the waiting task raises the cancellation in it and
        nothing else: the gate stays closed, and its grace still runs out. To
        bound the whole wait, wrap it in :func:`anyio.fail_after` or
        :func:`anyio.move_on_after`.

        A task that awaits the close of a gate it holds itself would wait
        forever. Inside the block of a guard entered with ``cancellable=True``
        this is detected, and the await raises :exc:`RuntimeError` (the gate
        stays closed). Other holds do not record their task, to stay cheap: the
        slow-close warning then names the task awaiting the close.

        :param grace: seconds before cancellable holders are cancelled, or
            ``None`` to never cancel them; see :meth:`close_nowait`
        :raises TypeError: if ``grace`` is not a number
        :raises ValueError: if ``grace`` is negative or NaN
        :raises RuntimeError: when awaited inside the block of a cancellable
            guard on this gate
        """
        grace = _check_seconds("grace", grace)
        closing = self._shut(grace, None if grace is None else monotonic() + grace)
        return self._wait_drained(closing)

    async def _wait_drained(self, closing: Closing | None) -> None:
        if closing is None:
            # Shut from inside a locked region: done by the time this runs.
            closing = self._closing
            assert closing is not None
        if closing.drained():
            await anyio.lowlevel.checkpoint()
            return
        self._check_not_held_by_closer()
        # This task watches the close of this gate and those of its descendants,
        # which it closed: it cancels their blocks in this event loop at their
        # deadlines itself, with their close's reason (Closing.escalate_here).
        watched = [(self, closing), *self._descendant_closes()]
        waiter = _watch(watched)
        waited = False
        # The times to wake at (the warning's, the deadlines), each put on this
        # loop's clock once, as the blocks' cancel scopes have the deadlines:
        # so a mock clock moves them all alike, and the wait never spins.
        on_loop: dict[float, float] = {}
        expired: set[Closing] = set()
        try:
            while not closing.drained():
                now, loop_now = monotonic(), anyio.current_time()
                warn_at = closing.warn_at(self._warn_after)
                wake = math.inf
                if warn_at is not None:
                    wake = on_loop.setdefault(warn_at, loop_now + warn_at - now)
                    if wake <= loop_now:
                        self._warn(closing)
                        continue
                for gate, watched_closing in watched:
                    deadline = watched_closing.deadline
                    if deadline is None or watched_closing in expired:
                        continue
                    at = on_loop.setdefault(deadline, loop_now + deadline - now)
                    if at <= loop_now:
                        expired.add(watched_closing)
                        watched_closing.expire_local(tuple(gate._records.copy()))
                    else:
                        wake = min(wake, at)
                with anyio.move_on_after(wake - loop_now):
                    await waiter.event.wait()
                waited = True
                if waiter.event.is_set() and not closing.drained():
                    # Woken by a deadline moved: wait on, from the loop's top.
                    waiter.rearm()
                    # A deadline moved into the past cancelled blocks as it woke
                    # this task: let them end first, so that whether they are
                    # still held when this task looks does not depend on the
                    # order the loop runs its tasks in.
                    await anyio.lowlevel.checkpoint()
        finally:
            _unwatch(watched, waiter)
        with self._locked:
            log = closing.warned_at is not None and not closing.completion_logged
            closing.completion_logged = True
        took = closing.duration()
        if log and took is not None:
            _diagnostics._log_close_completed(self._name, took)
        if not waited:
            await anyio.lowlevel.checkpoint()  # every call is a checkpoint

    def _descendant_closes(self) -> list[tuple[Gate, Closing]]:
        """The open descendants' closes, which this gate's close made."""
        found = []
        gates = list(self._children.copy())
        while gates:
            gate = gates.pop()
            closing = gate._closing
            if closing is not None and not closing.drained():
                found.append((gate, closing))
            gates += gate._children.copy()
        return found

    def _warn(self, closing: Closing) -> None:
        with self._locked:
            first = closing.warned_at is None
            if first:
                closing.warned_at = monotonic()
        if not first:
            return
        task = anyio.get_current_task()
        _diagnostics._warn_slow_close(
            self._name,
            monotonic() - closing.started,
            self.count,
            tuple(self._records.copy()),
            task.name,
            task.id,
        )

    def _check_not_held_by_closer(self) -> None:
        # Only blocks of cancellable guards know their task; other holds are
        # named, if at all, by the slow-close warning.
        if not self._records:
            return
        task = anyio.get_current_task().id
        for record in tuple(self._records.copy()):
            if isinstance(record, _CancellableRecord) and record.task == task:
                holder = "an unnamed guard" if record.name is None else repr(record.name)
                raise RuntimeError(
                    f"close() of {self._describe()} awaited inside the block of "
                    f"{holder} that holds it: it would wait for itself forever"
                )

    async def wait_closing(self) -> None:
        """Return once the gate is closed: at once if it is, else when it closes.

        It returns when the close begins, before the drain, so that a background
        loop can finish the item in hand and exit, letting the close complete::

            async def flush_loop(gate: Gate) -> None:
                async with anyio.create_task_group() as tg:

                    async def stop_when_closing() -> None:
                        await gate.wait_closing()
                        tg.cancel_scope.cancel()

                    tg.start_soon(stop_when_closing)
                    while True:
                        await anyio.sleep(60)  # cancelled once closing begins
                        with anyio.CancelScope(shield=True):
                            await flush()  # an item in hand is finished

        It is a checkpoint, as :meth:`anyio.Event.wait` is, and cancellable. Any
        number of tasks may wait, in any event loop.
        """
        if self._closing is None:
            waiter = Wakeup()
            with self._locked:
                waiting = self._closing is None
                if waiting:
                    self._closing_waiters.append(waiter)
            if waiting:
                try:
                    await waiter.event.wait()
                finally:
                    with self._locked:
                        if waiter in self._closing_waiters:
                            self._closing_waiters.remove(waiter)
                return
        await anyio.lowlevel.checkpoint()

    def reopen(self) -> None:
        """Admit entries again after a close that has drained.

        It succeeds on every closed gate whose close has drained, whatever other
        threads are doing (entries being refused count themselves for a moment,
        which does not matter here). Nothing of the last close is left: its
        grace, warning and waiters belong to it alone, and an awaitable from
        :meth:`close` of that close returns at once. A child gate holds its
        parent again, so reopening it under a closed parent raises.

        :raises RuntimeError: if the gate is not closed, or its close has not
            drained (it is still held)
        :raises GateClosed: if the gate has a parent that is closed; the gate
            stays closed
        """
        with self._locked:
            closing = self._closing
            error = None
            drained = None
            if closing is None:
                error = RuntimeError(f"cannot reopen {self!r}: it is not closed")
            elif not closing.drained():
                if self._holds:
                    error = RuntimeError(f"cannot reopen {self!r}: it is still held")
                else:
                    # Nothing holds it: this call is the one to see the drain.
                    drained = self._drain(closing)
        if error is not None:
            raise error
        if drained is not None:
            self._drained(drained, soon=False)
        parent = self._parent
        _lock_for(self)
        try:
            if self._closing is not closing:
                raise RuntimeError(f"cannot reopen {self!r}: another call reopened it")
            if parent is not None:
                # Nested locks go from child to parent only.
                parent._adopt_child(self, settle=False)
            self._closing = None
            self._slow = self._admission is not None
        finally:
            self._owner = None
            self._lock.release()
            self._after_unlock()
            if parent is not None:
                parent._after_unlock()
        # A parent that closed meanwhile found this gate still closed; close it now.
        parent_closing = None if parent is None else parent._closing
        if parent_closing is not None:
            self._shut(parent_closing.grace, parent_closing.deadline)

    # -- Releasing ---------------------------------------------------------------

    def _after_unlock(self) -> None:
        """What every holder of the lock does after letting it go."""
        if self._pending_shuts:
            self._shut_pending()
        if self._dirty:
            self._settle()

    def _leave(self) -> None:
        self._holds.pop()
        if self._slow:
            self._settle()

    def _settle(self, soon: bool = False) -> None:
        """Act on a release of a slow gate: drain a close, or admit waiters.

        Never blocks: a release can run from a finalizer at any allocation,
        even inside this gate's own locked regions. So a release that cannot
        take the lock leaves ``_dirty`` for the lock's holder, which settles
        again after letting go. Wakeups are done with the lock released.
        """
        admission = self._admission
        if self._closing is None and admission is not None and not admission.line:
            # Open, and nobody in line: nothing to do. A waiter joins the line,
            # then settles itself, so one of the two sees the other.
            return
        self._dirty = True
        me = get_ident()
        lock = self._lock
        while self._dirty:
            if self._owner == me or not _take(lock, blocking=False):
                return  # the holder settles on its way out
            self._owner = me
            try:
                self._dirty = False
                drained = admitted = None
                closing = self._closing
                holds = self._holds
                if closing is not None:
                    if not holds and not closing.drained():
                        drained = self._drain(closing)
                elif self._admission is not None and self._admission.line:
                    admitted = self._admission.admit(holds)
            finally:
                self._owner = None
                lock.release()
            if drained is not None:
                self._drained(drained, soon)
            if admitted:
                for waiter in admitted:
                    waiter.wakeup.wake(soon)
            self._shut_pending()

    def _shut_pending(self) -> None:
        """Carry out the shuts requested inside a locked region, now it is left."""
        pending = self._pending_shuts
        while pending:
            grace, deadline = pending.pop(0)
            self._shut(grace, deadline)

    def _drain(self, closing: Closing) -> list[Wakeup]:
        """Under the lock: mark ``closing`` drained."""
        waiters = closing.drain()
        self._last_close = closing.duration()
        return waiters

    def _drained(self, waiters: list[Wakeup], soon: bool) -> None:
        """After the lock: wake the waiters of a drained close; a child lets go."""
        for waiter in waiters:
            waiter.wake(soon)
        parent_guard = self._parent_guard
        if parent_guard is not None:
            self._parent_guard = None
            parent = parent_guard._gate
            parent._children.pop(self, None)
            parent_guard._release(soon)

    # -- Diagnostics -------------------------------------------------------------

    def holders(self) -> list[Holder]:
        """The named holders still holding the gate, oldest first.

        A child gate is listed as ``"gate 'its name'"``.
        """
        return _diagnostics._holders(tuple(self._records.copy()))

    def statistics(self) -> GateStatistics:
        """A snapshot of the gate, for metrics and debugging.

        Taking one costs the hot paths nothing: the counters it reads are
        kept on the slow paths only.
        """
        admission = self._admission
        return GateStatistics(
            count=len(self._holds),
            closed=self._closing is not None,
            limit=None if admission is None else admission.limit,
            tasks_waiting=0 if admission is None else len(admission.line),
            holders=tuple(self.holders()),
            children=len(self._children),
            refused=self._refused,
            last_close_duration=self._last_close,
        )

    def _log_late_release(self, record: _Record) -> None:
        closing = self._closing
        if closing is not None and closing.warned_at is not None and record.name is not None:
            _diagnostics._log_late_release(self._name, record, closing.started)

    def _describe(self) -> str:
        return _diagnostics._describe(self._name)

    def _closed_error(self) -> GateClosed:
        return GateClosed(f"{self._describe()} is closed")


@final
class _Locked:
    """The gate's lock as a context manager that keeps the ``_dirty`` promise.

    A release that found the lock taken left its follow-up to the lock's
    holder: every holder settles after letting go, so none is ever lost.
    """

    __slots__ = ("_gate",)

    def __init__(self, gate: Gate) -> None:
        self._gate = gate

    def __enter__(self) -> None:
        _lock_for(self._gate)

    def __exit__(self, *exc_info: object) -> None:
        gate = self._gate
        gate._owner = None
        gate._lock.release()
        gate._after_unlock()


# Not @final at runtime only for its private subclass; the stubs forbid subclassing.
class Acquisition:
    """What :meth:`Gate.acquire` returns: await it, or use it with ``async with``."""

    __slots__ = ("_cancellable", "_gate", "_guard", "_name")

    def __init__(self, gate: Gate, name: str | None, cancellable: bool) -> None:
        self._gate = gate
        self._name = name
        self._cancellable = cancellable
        self._guard: GateGuard | None = None

    def __await__(self) -> Generator[Any, None, GateGuard]:
        return self._gate._acquire(self._name, self._cancellable).__await__()

    async def __aenter__(self) -> GateGuard:
        # Gate._acquire(), inlined: this is the hot path of `async with acquire()`.
        gate = self._gate
        if not gate._fast_acquire:
            await anyio.lowlevel.checkpoint()
        admission = gate._admission
        guard: GateGuard | None = None
        if self._name is None and not self._cancellable:
            # Gate.enter(), inlined for an unnamed hold, counting first.
            holds = gate._holds
            guard = _Guard()
            guard._gate = gate
            holds.append(None)
            guard._holds = holds
            # Admission.has_room(), inlined.
            if not gate._slow or (
                gate._closing is None
                and (admission is None or (len(holds) <= admission.limit and not admission.line))
            ):
                self._guard = guard
                return guard
            guard._holds = None
            if gate._closing is not None:
                gate._refuse()
                raise gate._closed_error()
            gate._leave()  # no room: not a refusal, a wait in line
            guard = None
        elif admission is None or admission.has_room(len(gate._holds) + 1):
            try:
                guard = gate.enter(self._name, cancellable=self._cancellable)
            except anyio.WouldBlock:
                guard = None
        if guard is None:
            guard = await gate._wait_in_line(self._name, self._cancellable)
        self._guard = guard
        return guard.__enter__() if self._cancellable else guard

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc_val: BaseException | None,
        exc_tb: TracebackType | None,
    ) -> bool | None:
        guard = self._guard
        if guard is None:
            return None
        self._guard = None
        if guard.__class__ is _Guard:
            # GateGuard.release(), inlined, with the first test of Gate._settle().
            holds = guard._holds
            if holds is not None:
                guard._holds = None
                holds.pop()
                gate = guard._gate
                if gate._slow:
                    admission = gate._admission
                    if gate._closing is not None or admission is None or admission.line:
                        gate._settle()
            return None
        return guard.__exit__(exc_type, exc_val, exc_tb)


@final
class _Acquisition(Acquisition):
    """An :class:`Acquisition` built the cheapest way, as :class:`_Guard` is."""

    __slots__ = ()
    if TYPE_CHECKING:

        def __init__(self) -> None: ...

    else:
        __init__ = object.__init__


# Not @final at runtime only for its private subclasses; the stubs forbid subclassing.
class GateGuard:
    """One hold on a :class:`Gate`, from :meth:`Gate.enter` until :meth:`release`.

    The gate cannot finish closing while the guard is held. Use the guard as a
    (sync or async) context manager to release it when a block ends; exceptions
    from the block propagate unchanged. A guard entered with ``cancellable=True``
    is the exception: when a close's grace runs out and cancels its block, the
    block ends quietly, as with :func:`anyio.move_on_after`. Its block must end
    in the task that began it: leaving it in another task (an async generator
    suspended inside it, a response body sent by the server's task) raises
    :exc:`RuntimeError`, with the hold released.

    A guard that is garbage-collected while still held is released then, and a
    :exc:`ResourceWarning` names the gate and the holder: a leaked guard delays
    a close only until the guard is collected.

    A guard cannot be copied or pickled (:exc:`TypeError`): its hold is its
    own. To hand a hold on, :meth:`clone` it.

    Thread safety: a guard may be released or cloned from any thread.
    """

    # Two slots only: an unnamed guard is the hot path. Named and cancellable
    # guards are private subclasses that also keep a record.
    __slots__ = ("_gate", "_holds")

    _gate: Gate
    # The gate's hold list while held, None once released.
    _holds: list[None] | None

    def __init__(self) -> None:
        # Guards are built by calling a private subclass that has object's
        # __init__: the cheapest way to build an object, cheaper than
        # object.__new__(cls), which goes through a generic wrapper.
        raise TypeError("guards are made by Gate.enter() and GateGuard.clone()")

    def __reduce_ex__(self, protocol: SupportsIndex) -> NoReturn:
        # A copy would share this guard's one hold, and a pickle cannot carry it.
        raise TypeError(
            "guards are made by Gate.enter() and GateGuard.clone(), not copied or "
            "pickled: clone() the guard to hand a hold on"
        )

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
        """``True`` if a close's grace ran out and cancelled this guard's block."""
        return False

    def release(self) -> None:
        """Let go of the gate. Calling it again does nothing.

        If this was the last hold on a closed gate, the tasks waiting for the
        drain are woken.
        """
        holds = self._holds
        if holds is None:
            return
        self._holds = None
        holds.pop()
        gate = self._gate
        if gate._slow:
            gate._settle()

    def _release(self, soon: bool) -> None:
        """:meth:`release`; ``soon`` when called from a finalizer."""
        holds = self._holds
        if holds is None:
            return
        self._holds = None
        holds.pop()
        gate = self._gate
        if gate._slow:
            gate._settle(soon)

    def clone(self, name: str | None = None, *, cancellable: bool = False) -> GateGuard:
        """Return a new guard on the same gate, to hand to work this holder started.

        Succeeds even on a closed or full gate, since the clone's work is part of
        work already admitted; a close waits for the clone too.

        :param name: names the new holder
        :param cancellable: as for :meth:`Gate.enter`
        :raises RuntimeError: if this guard has been released
        :raises TypeError: if ``name`` is neither a string nor ``None``
        :raises anyio.NoEventLoopError: if ``cancellable`` is true and no event
            loop runs in this thread
        """
        _check_name(name)
        if cancellable:
            _require_loop("clone(cancellable=True)")
        holds = self._holds
        if holds is None:
            raise RuntimeError(f"cannot clone {self!r}: it has been released")
        gate = self._gate
        # Built before the count is taken, as in Gate.enter(), so that a
        # KeyboardInterrupt can leak a hold only as the counting call returns.
        clone = gate._unheld_guard(name, cancellable)
        holds.append(None)
        clone._holds = holds
        # Released by another thread meanwhile: the count may have reached zero
        # and a close may have drained, so the clone must not be admitted.
        if self._holds is None:
            clone._holds = None
            gate._leave()
            raise RuntimeError(f"cannot clone {self!r}: it has been released")
        if isinstance(clone, _NamedGuard):
            gate._records[clone._record] = None
        return clone

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
                gate._settle()
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
        # Runs for every guard, so it must be cheap. A guard built for an entry
        # that was refused, or interrupted before it was counted, never got its
        # hold list.
        try:
            if self._holds is None:
                return
        except AttributeError:
            return
        message = f"{self!r} was garbage-collected without being released"
        # A finalizer may run inside the event loop's own machinery: wake
        # nothing directly, only queue the wakeups.
        self._release(soon=True)
        warnings.warn(message, ResourceWarning, stacklevel=1, source=self)


@final
class _Guard(GateGuard):
    """An unnamed guard, as :meth:`Gate.enter` builds it."""

    __slots__ = ()
    if not TYPE_CHECKING:
        __init__ = object.__init__


class _NamedGuard(GateGuard):
    """A guard with a holder record: named, cancellable, or a child gate's."""

    __slots__ = ("_record",)
    if not TYPE_CHECKING:
        __init__ = object.__init__

    _record: _Record

    @property
    def name(self) -> str | None:
        return self._record.name

    def release(self) -> None:
        self._release(False)

    def _release(self, soon: bool) -> None:
        holds = self._holds
        if holds is None:
            return
        self._holds = None
        gate = self._gate
        # Forget the record before the count drops, so that holders() never
        # lists a holder after the close it held up has drained.
        gate._records.pop(self._record, None)
        if gate._closing is not None:
            gate._log_late_release(self._record)
        holds.pop()
        if gate._slow:
            gate._settle(soon)

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc_val: BaseException | None,
        exc_tb: TracebackType | None,
    ) -> bool | None:
        self._release(False)
        return None


class _CancellableGuard(_NamedGuard):
    """A guard from ``enter(cancellable=True)``: a close's grace can cancel its block.

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
        if self._holds is None:
            raise RuntimeError(f"{self!r} has been released")
        try:
            loop = LoopRef()
        except anyio.NoEventLoopError as exc:
            self.release()
            raise anyio.NoEventLoopError(
                "a cancellable guard must be used in a thread running an event loop"
            ) from exc
        task = anyio.get_current_task().id
        scope = anyio.CancelScope()
        scope.__enter__()
        record.loop = loop
        record.task = task
        # Set the scope, then look at the close: a close sets its deadline, then
        # looks at the scopes, so one of the two always sees the other.
        record.scope = scope
        closing = self._gate._closing
        if closing is not None and closing.deadline is not None:
            closing.escalate_here(record, scope)
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
        if anyio.get_current_task().id != record.task:
            # Exiting the scope here would corrupt both tasks' cancel scopes.
            record.scope = None
            self.release()
            raise RuntimeError(
                f"the block of {self!r} was left in another task than the one that "
                "entered it, as when an async generator or a response body holds a "
                "cancellable guard across a yield; enter it where the whole block "
                "runs in one task, or hold a plain guard there"
            )
        record.scope = None
        record.task = None
        try:
            caught = bool(scope.__exit__(exc_type, exc_val, exc_tb))
        finally:
            self.release()
        record.cancelled_caught = scope.cancelled_caught
        return caught


def _watch(watched: list[tuple[Gate, Closing]]) -> Wakeup:
    """Await the drain of the first close in ``watched``, and watch them all.

    Watching a close, this task cancels its blocks in this event loop at the
    deadline, so they are held back for it, and wakes when the deadline moves.
    """
    waiter = Wakeup()
    for i, (gate, closing) in enumerate(watched):
        with gate._locked:
            if not closing.drained():
                closing.watchers.append(waiter)
                if not i:
                    closing.waiters.append(waiter)
        closing.escalate_local(tuple(gate._records.copy()))
    return waiter


def _unwatch(watched: list[tuple[Gate, Closing]], waiter: Wakeup) -> None:
    """Stop awaiting and watching, and give each block in this event loop its
    scope's deadline back, unless another task here still watches."""
    for gate, closing in watched:
        with gate._locked:
            for registered in (closing.waiters, closing.watchers):
                if waiter in registered:
                    registered.remove(waiter)
        closing.escalate_local(tuple(gate._records.copy()))


def _take(lock: RLock, blocking: bool = True) -> bool:
    """``lock.acquire()``, undone if a KeyboardInterrupt lands as it returns."""
    try:
        return lock.acquire(blocking)
    except BaseException:
        if lock._is_owned():  # type: ignore[attr-defined]
            lock.release()
        raise


def _lock_for(gate: Gate) -> None:
    """Take ``gate``'s lock for this thread, which must not hold it already."""
    me = get_ident()
    if gate._owner == me:
        raise RuntimeError(
            f"{gate!r} was used from a signal handler or finalizer that interrupted "
            "the gate's own locked region; only entering, releasing, cloning and "
            "close_nowait() are allowed there"
        )
    _take(gate._lock)
    gate._owner = me


if sysconfig.get_config_var("Py_GIL_DISABLED"):

    def _count_after_store(holds: list[None]) -> int:
        """The count, read after a full barrier that follows the caller's stores.

        An entry counts itself, then reads the closed flag; a close sets the
        flag, then reads the count. Each side needs its store ordered before
        its load (Dekker). The entry's append ends by unlocking the list, a
        sequentially consistent compare-and-swap; here, copying the list locks
        it, another one. Both are full barriers on x86-64 and on AArch64 with
        its LSE atomics. Under the GIL the GIL's hand-off is one, so the GIL
        build reads the length directly.
        """
        return len(holds.copy())

else:

    def _count_after_store(holds: list[None]) -> int:
        return len(holds)


def _require_loop(what: str) -> None:
    try:
        anyio.lowlevel.current_token()
    except anyio.NoEventLoopError as exc:
        raise anyio.NoEventLoopError(f"{what} needs an event loop in the calling thread") from exc


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
