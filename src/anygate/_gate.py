"""The gate, and what ``Gate.acquire()`` returns."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Coroutine
from functools import partial
from time import monotonic
from types import TracebackType
from typing import TYPE_CHECKING, Any, TypeVar, cast, overload

import anyio
import anyio.lowlevel
from typing_extensions import ParamSpec, TypeVarTuple, Unpack, final

from . import _tasks
from ._acquisition import Acquisition, _Acquisition
from ._core import GateCore
from ._diagnostics import GateStatistics
from ._exceptions import GateClosed
from ._guards import GateGuard, NamedGuard, UnnamedGuard, guard_class
from ._records import Holder, Record, holders_of
from ._tasks import TaskStarter
from ._util import (
    check_callable,
    check_limit,
    check_name,
    check_seconds,
    debug_mode,
    require_loop,
)
from ._wakeup import Wakeup

_T = TypeVar("_T")
_P = ParamSpec("_P")
if TYPE_CHECKING:
    # Defined for type checkers only: stubtest cannot compare a TypeVarTuple.
    _PosArgsT = TypeVarTuple("_PosArgsT")


@final
class Gate(GateCore):
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
    Trees may be of any depth: closing and draining walk them without recursion.

    Thread safety: entering, releasing and cloning may be done from any thread,
    including threads that anyio did not start; a last release in a thread wakes
    the tasks awaiting the drain in their own event loops, without blocking and
    without starting a thread. On a gate without a limit, open or closed, these
    paths take no lock.

    :param name: names the gate in errors, log records and ``repr()``
    :param parent: a gate that this one holds while it is open
    :param limit: the most holds admitted at once, or ``None`` for no limit;
        clones are not limited, since they are part of work already admitted;
        ``0`` admits nobody until :attr:`limit` is raised
    :param warn_after: seconds a close may take, after its grace if it has one,
        before the task awaiting it logs a warning that names the holders keeping
        the gate open; ``None`` for no warning
    :param fast_acquire: if true, :meth:`acquire` does not checkpoint when there
        is room: faster in a tight loop, but such a loop of acquires never lets
        other tasks run or notices cancellation while the gate has room
    :param debug: record where every hold is taken (see :attr:`debug`):
        ``None`` follows the process, in debug mode under ``python -X dev`` or
        with ``ANYGATE_DEBUG=1`` in the environment; ``True`` or ``False`` sets
        it for this gate alone
    :raises GateClosed: if ``parent`` is closed
    :raises anyio.WouldBlock: if ``parent`` is at its limit
    :raises TypeError: if an argument has the wrong type
    :raises ValueError: if ``limit`` is negative, or ``warn_after`` negative or NaN
    """

    def __new__(
        cls,
        name: str | None = None,
        *,
        parent: Gate | None = None,
        limit: int | None = None,
        warn_after: float | None = 1.0,
        fast_acquire: bool = False,
        debug: bool | None = None,
    ) -> Gate:
        # Debug mode is a private subclass, chosen here once: the hot paths of
        # a gate out of debug mode are not touched by it.
        if debug_mode(debug) and cls is Gate:
            from ._debug import DebugGate

            return object.__new__(DebugGate)
        return object.__new__(cls)

    def __init__(
        self,
        name: str | None = None,
        *,
        parent: Gate | None = None,
        limit: int | None = None,
        warn_after: float | None = 1.0,
        fast_acquire: bool = False,
        debug: bool | None = None,
    ) -> None:
        check_name(name)
        check_limit(limit)
        if parent is not None and not isinstance(parent, Gate):
            raise TypeError(f"parent must be a Gate or None, not {type(parent).__name__}")
        GateCore.__init__(
            self, name, limit, check_seconds("warn_after", warn_after), bool(fast_acquire)
        )
        self._parent = parent
        if parent is not None:
            parent._hold_for_child(self, self.holders)

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
        return cast("Gate | None", self._parent)

    @property
    def count(self) -> int:
        """How many holds are in progress: guards unreleased plus ``with`` blocks."""
        return len(self._holds)

    @property
    def closed(self) -> bool:
        """``True`` from the moment the gate is closed until :meth:`reopen`."""
        return self._closing is not None

    @property
    def debug(self) -> bool:
        """Whether the gate is in debug mode, set when it was created.

        In debug mode every hold records where it was taken (the first caller
        outside anygate: its file, line and function), by which task (or thread,
        outside a task) and when; named or not, it is then listed by
        :meth:`holders`, :meth:`statistics` and the slow-close warning, and a
        leaked guard's :exc:`ResourceWarning` says where it was taken. It costs
        each hold a few microseconds (see "Debug mode" in the metrics how-to);
        out of debug mode it costs nothing.
        """
        return False

    @property
    def limit(self) -> int | None:
        """The most holds admitted at once, or ``None``; settable on a bounded gate.

        Set it to any ``int`` of 0 or more, from any thread, to grow, shrink or
        pause a pool without rebuilding it. Raising it admits the tasks waiting
        in :meth:`acquire` at once, first come first served. Lowering it admits
        nobody until the holds fall below the new limit; nothing held is
        revoked. ``0`` pauses admission: :meth:`acquire` waits, :meth:`enter`
        raises :exc:`anyio.WouldBlock`.

        :raises TypeError: on a gate made without a limit, or if the new limit
            is not an ``int`` (``None`` and ``bool`` are refused)
        :raises ValueError: if the new limit is negative
        """
        return None if self._admission is None else self._admission.limit

    @limit.setter
    def limit(self, limit: int) -> None:
        self._set_limit(limit)

    # -- The counter -----------------------------------------------------------

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
        if name is None and not cancellable:
            # HOT COPY of GateCore._count, for an unnamed guard.
            guard: GateGuard = UnnamedGuard()
            guard._gate = self
            holds = self._holds
            holds.append(None)
            guard._holds = holds
            if self._closed_or_bounded:
                error = self._refusal()
                if error is not None:
                    guard._holds = None
                    self._refuse()
                    raise error
            return guard
        if not cancellable and name.__class__ is str:
            # HOT COPY of GateCore._count, for a named guard.
            named = NamedGuard()
            named._gate = self
            record = Record()
            record.name = name
            named._record = record
            holds = self._holds
            holds.append(None)
            named._holds = holds
            if self._closed_or_bounded:
                error = self._refusal()
                if error is not None:
                    named._holds = None
                    self._refuse()
                    raise error
            record.since = monotonic()
            self._records[record] = None
            return named
        check_name(name)
        if cancellable:
            require_loop("enter(cancellable=True)")
        guard = self._new_guard(guard_class(name, cancellable), name)
        self._count(guard)
        return guard

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
        # HOT COPY of GateCore._count, with no guard.
        holds = self._holds
        holds.append(None)
        if self._closed_or_bounded:
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
        # HOT COPY of GateCore._drop.
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

    async def __aenter__(self) -> None:
        self.__enter__()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc_val: BaseException | None,
        exc_tb: TracebackType | None,
    ) -> None:
        # HOT COPY of GateCore._drop: no call before the pop, where an
        # interrupt would skip it.
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

    def acquire(self, name: str | None = None, *, cancellable: bool = False) -> Acquisition:
        """Hold the gate, waiting for room if it is at its limit.

        ``guard = await gate.acquire()`` holds until ``guard.release()``;
        ``async with gate.acquire() as guard:`` holds for the block. Waiters are
        admitted first come, first served, on every backend: a call takes its
        hold, or its place in line, before its first checkpoint. On a gate
        without a limit there is always room.

        It is a checkpoint: one cancel point and schedule point when there is
        room, after the hold is taken. With the gate's ``fast_acquire``, a gate
        with room and nobody in line is entered with no checkpoint at all.

        Cancellation: a cancelled call holds nothing afterwards; one admitted
        in the same tick as its cancellation hands its place to the next waiter.

        Unlike a ``CapacityLimiter``, a gate does not yet refuse a task that
        acquires it while holding it through ``acquire()`` already: at the
        limit, that second call waits for the first hold to be released, which
        in the same task is forever. Take more work under the same hold with
        :meth:`GateGuard.clone`, which never waits.

        :param name: names the holder, as in :meth:`enter`
        :param cancellable: with ``async with``, the block is cancelled when a
            close's grace runs out, as for :meth:`enter`; an awaited guard gets
            that behaviour in its own ``with`` block
        :raises GateClosed: if the gate is closed, or closes while this waits
        :raises TypeError: if ``name`` is neither a string nor ``None``
        """
        if name is not None:
            check_name(name)
        # Acquisition(self, name, cls), without a call to __init__.
        acquisition = _Acquisition()
        acquisition._gate = self
        acquisition._name = name
        acquisition._cls = (
            UnnamedGuard if name is None and not cancellable else guard_class(name, cancellable)
        )
        acquisition._guard = None
        return acquisition

    def check(self) -> None:
        """Raise if the gate is closed, so that long work can stop on its own.

        :raises GateClosed: if the gate is closed
        """
        if self._closing is not None:
            raise self._closed_error()

    # -- Tasks -----------------------------------------------------------------

    @overload
    def guarded(
        self, func: Callable[_P, Awaitable[_T]], /
    ) -> Callable[_P, Coroutine[Any, Any, _T]]: ...

    @overload
    def guarded(
        self, func: None = None, /, *, name: str | None = None, cancellable: bool = False
    ) -> Callable[[Callable[_P, Awaitable[_T]]], Callable[_P, Coroutine[Any, Any, _T]]]: ...

    def guarded(
        self,
        func: Callable[_P, Awaitable[_T]] | None = None,
        /,
        *,
        name: str | None = None,
        cancellable: bool = False,
    ) -> Any:
        """Decorate an async function so that each call holds the gate throughout.

        The gate is entered when the call starts running (its first step), with
        ``gate.enter(name, cancellable=cancellable)``: a closed gate raises
        :exc:`GateClosed`, and one at its limit :exc:`anyio.WouldBlock`, from
        the call. A call that is cancelled or dropped before it starts never
        holds the gate. The hold ends when the call ends, however it ends.

        Use it bare, ``@gate.guarded``, or with arguments,
        ``@gate.guarded(name="flush", cancellable=True)``.

        ``inspect.iscoroutinefunction()`` is true for the result, and type
        checkers see the function's own signature. For a method of an object
        that owns its gate, use :func:`gated`.

        :param name: names each call's hold in :meth:`holders` and the
            slow-close warning; by default the function's ``__qualname__``
        :param cancellable: hold each call in a cancellable block: when a
            close's grace runs out, the call is cancelled and raises
            :exc:`GateClosed`
        :raises TypeError: if ``func`` is not callable, or ``name`` not a string
        """
        check_name(name)
        if func is None:
            return partial(_tasks._guard_calls, self, name=name, cancellable=bool(cancellable))
        return _tasks._guard_calls(self, func, name=name, cancellable=bool(cancellable))

    async def to_thread(
        self,
        func: Callable[[Unpack[_PosArgsT]], _T],
        *args: Unpack[_PosArgsT],
        name: str | None = None,
        abandon_on_cancel: bool = False,
        limiter: anyio.CapacityLimiter | None = None,
    ) -> _T:
        """Run ``func(*args)`` in a worker thread, holding the gate until it
        returns or raises, through :func:`anyio.to_thread.run_sync`.

        The gate is entered first, as :meth:`acquire` enters it (waiting for
        room on a bounded gate, first come first served): a closed gate raises
        :exc:`GateClosed` here, and no thread starts. The hold is released by
        the worker thread as ``func`` ends, which wakes a close in its loop.

        With ``abandon_on_cancel=True``, a cancelled caller returns at once, as
        with anyio, but the hold stays until the thread's ``func`` ends: a
        :meth:`close` waits for the thread. A call given up before its thread
        started ``func`` releases the hold, and ``func`` does not run.

        :param name: names the holder, as in :meth:`enter`
        :param abandon_on_cancel: as for :func:`anyio.to_thread.run_sync`
        :param limiter: as for :func:`anyio.to_thread.run_sync`: the capacity
            limiter of the worker threads, anyio's default if ``None``
        :return: what ``func`` returns
        :raises GateClosed: if the gate is closed, or closes while this waits
            for room
        :raises TypeError: if ``func`` is not callable, or ``name`` not a string
        """
        check_callable(func, "to_thread")
        check_name(name)
        guard = await self._acquire(name, UnnamedGuard if name is None else NamedGuard)
        return await _tasks._to_thread(self, guard, func, args, bool(abandon_on_cancel), limiter)

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
        returning, raising or being cancelled. A task that the task group drops
        before it starts (cancelled before its first step, which anyio's and
        trio's task groups never do) is released when it is garbage-collected,
        with a :exc:`ResourceWarning`, as a leaked guard is.

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
            check_callable(func, "start_soon")  # type: ignore[unreachable]
        if name is None and not cancellable:
            # HOT COPY of GateCore._count, for an unnamed guard: a task's
            # start is the hot path here.
            unnamed = UnnamedGuard()
            unnamed._gate = self
            holds = self._holds
            holds.append(None)
            unnamed._holds = holds
            if self._closed_or_bounded:
                error = self._refusal()
                if error is not None:
                    unnamed._holds = None
                    self._refuse()
                    raise error
            guard: GateGuard = unnamed
            # The guard hands its hold to the task as it starts (see _run).
            run: Callable[..., Coroutine[Any, Any, None]] = unnamed._run
        else:
            guard = self.enter(name, cancellable=cancellable)
            run = partial(_tasks._run_cancellable if cancellable else _tasks._run_holding, guard)
        task_name = name if name is not None else getattr(func, "__qualname__", None)
        try:
            task_group.start_soon(run, func, *args, name=task_name)
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
        check_callable(func, "start")
        check_name(name)
        guard = await self._acquire(name, guard_class(name, cancellable))
        handoff = _tasks._Handoff(guard)
        task_name = name if name is not None else getattr(func, "__qualname__", None)
        try:
            return await task_group.start(_tasks._run_started, handoff, func, *args, name=task_name)
        except BaseException:
            if not handoff.taken:
                guard.release()
            raise

    # -- Trees -------------------------------------------------------------------

    # -- Closing -----------------------------------------------------------------

    def close_nowait(self, *, grace: float | None = None) -> None:
        """Shut the gate now: refuse every new entry, and start the close.

        From this call on, :meth:`enter` and ``with gate:`` raise
        :exc:`GateClosed`, tasks waiting in :meth:`acquire` are woken with it,
        tasks in :meth:`wait_closing` are woken, and open child gates are closed
        with the same grace. Guards already held are untouched, and
        :meth:`GateGuard.clone` still works on them, since a clone is part of
        work already admitted. :meth:`close` waits for the drain.

        It may be called from a signal handler (``signal.signal``), at any
        bytecode: it wakes tasks through their event loop's own thread-safe
        scheduling, never directly, so no wakeup is lost even when the handler
        interrupted the loop inside its own scheduling.

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
        grace = check_seconds("grace", grace)
        self._shut(grace, None if grace is None else monotonic() + grace)

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
        grace = check_seconds("grace", grace)
        self._shut(grace, None if grace is None else monotonic() + grace)
        return self._wait_drained(self._closing)

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
            with self._lock:
                waiting = self._closing is None
                if waiting:
                    self._closing_waiters.append(waiter)
            if waiting:
                try:
                    await waiter.event.wait()
                finally:
                    with self._lock:
                        if waiter in self._closing_waiters:
                            self._closing_waiters.remove(waiter)
                return
        await anyio.lowlevel.checkpoint()

    def reopen(self) -> None:
        """Admit entries again after a close that has drained.

        It succeeds on every closed gate whose close has drained, whatever other
        threads are doing (entries being refused count themselves for a moment,
        which does not matter here). Nothing of the last close is left: its
        grace, warning, waiters and hold on the parent belong to it alone, and
        an awaitable from :meth:`close` of that close returns at once. A child
        gate holds its parent again, so reopening it under a closed parent raises.

        :raises RuntimeError: if the gate is not closed, or its close has not
            drained (it is still held)
        :raises GateClosed: if the gate has a parent that is closed; the gate
            stays closed
        """
        parent = self._parent
        wakeups: list[Wakeup] = []
        dropped: GateCore | None = None
        try:
            with self._lock:
                closing = self._closing
                if closing is None:
                    raise RuntimeError(f"cannot reopen {self!r}: it is not closed")
                # The drain seen, its waiters to wake and the parent's hold of
                # this close dropped, here if nobody has yet: before a new close.
                wakeups, dropped = self._settle_locked()
                if not closing.drained():
                    raise RuntimeError(f"cannot reopen {self!r}: it is still held")
                if parent is not None:
                    parent._hold_for_child(self, self.holders)
                self._closing = None
                self._closed_or_bounded = self._admission is not None
        finally:
            for wakeup in wakeups:
                wakeup.wake()
            if dropped is not None:
                dropped._settle()
        # A parent that closed meanwhile found this gate still closed; close it now.
        parent_closing = None if parent is None else parent._closing
        if parent_closing is not None:
            self._shut(
                parent_closing.grace,
                parent_closing.deadline,
                cast("GateCore | None", parent_closing.by),
            )

    # -- Diagnostics -------------------------------------------------------------

    def holders(self) -> list[Holder]:
        """The named holders still holding the gate, oldest first; in debug mode
        (see :attr:`debug`), every holder, with where it took its hold.

        A child gate is listed as ``"gate 'its name'"``.
        """
        return holders_of(tuple(self._records.copy()))

    def statistics(self) -> GateStatistics:
        """One consistent snapshot of the gate, for metrics and debugging.

        Taking one costs the hot paths nothing: the counters it reads are
        kept on the slow paths only. Its ``count`` is never below the number of
        ``holders`` it lists: the holders are read, then the count, then those
        released meanwhile are left out.
        """
        records = self._records
        listed = tuple(records.copy())
        count = len(self._holds)
        still = records.copy()
        admission = self._admission
        return GateStatistics(
            count=count,
            closed=self._closing is not None,
            limit=None if admission is None else admission.limit,
            tasks_waiting=0 if admission is None else len(admission.line),
            holders=tuple(holders_of(r for r in listed if r in still)),
            children=len(self._children),
            refused=self._refused,
            last_close_duration=self._last_close,
        )
