from collections.abc import Awaitable, Callable, Coroutine, Generator
from dataclasses import dataclass
from types import TracebackType
from typing import Any, NamedTuple, TypeVar, overload

from anyio import CapacityLimiter, ClosedResourceError
from typing_extensions import Never, ParamSpec, TypeVarTuple, Unpack, final

from ._tasks import TaskStarter
from ._tasks import gated as gated

__version__: str

__all__ = [
    "Acquisition",
    "Gate",
    "GateClosed",
    "GateGuard",
    "GateStatistics",
    "Holder",
    "__version__",
    "gated",
]

_T = TypeVar("_T")
_P = ParamSpec("_P")
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
    ) -> Gate: ...
    def __init__(
        self,
        name: str | None = None,
        *,
        parent: Gate | None = None,
        limit: int | None = None,
        warn_after: float | None = 1.0,
        fast_acquire: bool = False,
        debug: bool | None = None,
    ) -> None: ...
    @property
    def name(self) -> str | None:
        """The gate's name, or ``None``."""
    @property
    def parent(self) -> Gate | None:
        """The gate this one was created under, or ``None``."""
    @property
    def count(self) -> int:
        """How many holds are in progress: guards unreleased plus ``with`` blocks."""
    @property
    def closed(self) -> bool:
        """``True`` from the moment the gate is closed until :meth:`reopen`."""
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
    @limit.setter
    def limit(self, limit: int) -> None:
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
    def try_enter(self, name: str | None = None, *, cancellable: bool = False) -> GateGuard | None:
        """Like :meth:`enter`, but return ``None`` where it would raise
        :exc:`GateClosed` or :exc:`anyio.WouldBlock`.

        :raises TypeError: if ``name`` is neither a string nor ``None``
        :raises anyio.NoEventLoopError: if ``cancellable`` is true and no event
            loop runs in this thread
        """
    def __enter__(self) -> None: ...
    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc_val: BaseException | None,
        exc_tb: TracebackType | None,
    ) -> None: ...
    async def __aenter__(self) -> None: ...
    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc_val: BaseException | None,
        exc_tb: TracebackType | None,
    ) -> None: ...
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
    def check(self) -> None:
        """Raise if the gate is closed, so that long work can stop on its own.

        :raises GateClosed: if the gate is closed
        """
    @overload
    def guarded(
        self, func: Callable[_P, Awaitable[_T]], /
    ) -> Callable[_P, Coroutine[Any, Any, _T]]:
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
    @overload
    def guarded(
        self, func: None = None, /, *, name: str | None = None, cancellable: bool = False
    ) -> Callable[[Callable[_P, Awaitable[_T]]], Callable[_P, Coroutine[Any, Any, _T]]]:
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
    async def to_thread(
        self,
        func: Callable[[Unpack[_PosArgsT]], _T],
        *args: Unpack[_PosArgsT],
        name: str | None = None,
        abandon_on_cancel: bool = False,
        limiter: CapacityLimiter | None = None,
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
    def holders(self) -> list[Holder]:
        """The named holders still holding the gate, oldest first; in debug mode
        (see :attr:`debug`), every holder, with where it took its hold.

        A child gate is listed as ``"gate 'its name'"``.
        """
    def statistics(self) -> GateStatistics:
        """One consistent snapshot of the gate, for metrics and debugging.

        Taking one costs the hot paths nothing: the counters it reads are
        kept on the slow paths only. Its ``count`` is never below the number of
        ``holders`` it lists: the holders are read, then the count, then those
        released meanwhile are left out.
        """

@final
class Acquisition:
    """What :meth:`Gate.acquire` returns: await it, or use it with ``async with``."""
    def __init__(self, gate: Gate, name: str | None, cancellable: bool) -> None: ...
    def __await__(self) -> Generator[Any, None, GateGuard]: ...
    async def __aenter__(self) -> GateGuard: ...
    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc_val: BaseException | None,
        exc_tb: TracebackType | None,
    ) -> bool | None: ...

@final
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
    def __new__(cls) -> Never: ...
    @property
    def gate(self) -> Gate:
        """The gate this guard holds."""
    @property
    def name(self) -> str | None:
        """The holder's name given to :meth:`Gate.enter` or :meth:`clone`, or ``None``."""
    @property
    def released(self) -> bool:
        """``True`` once :meth:`release` has been called."""
    @property
    def cancelled_caught(self) -> bool:
        """``True`` if a close's grace ran out and cancelled this guard's block."""
    def release(self) -> None:
        """Let go of the gate. Calling it again does nothing.

        If this was the last hold on a closed gate, the tasks waiting for the
        drain are woken. A ``KeyboardInterrupt`` landing inside the release
        neither loses the hold nor the wakeup: the release finishes before the
        interrupt goes on, or, if it lands before the hold is dropped, the guard
        is still held and calling this again finishes the job.
        """
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
    def __enter__(self) -> GateGuard: ...
    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc_val: BaseException | None,
        exc_tb: TracebackType | None,
    ) -> bool | None: ...
    async def __aenter__(self) -> GateGuard: ...
    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc_val: BaseException | None,
        exc_tb: TracebackType | None,
    ) -> bool | None: ...
    def __del__(self) -> None: ...

class Holder(NamedTuple):
    """A holder of a gate, as :meth:`Gate.holders` reports it.

    Outside debug mode only named holders are listed, and :attr:`site` and
    :attr:`taken_by` are ``None``; in debug mode (see :attr:`Gate.debug`)
    every hold is listed, with both.
    """

    name: str
    held_for: float
    site: str | None = None
    taken_by: str | None = None

@final
@dataclass(frozen=True)
class GateStatistics:
    """A snapshot of a gate, as :meth:`Gate.statistics` returns it.

    One consistent snapshot: :attr:`count` is never below the number of
    :attr:`holders`.
    """

    count: int
    closed: bool
    limit: int | None
    tasks_waiting: int
    holders: tuple[Holder, ...]
    children: int
    refused: int
    last_close_duration: float | None

class GateClosed(ClosedResourceError):
    """Raised when trying to enter a gate that is closed.

    Its message names the gate, and the ancestor whose close reached it if
    that is what closed it, as in ``gate 'pool t1' is closed: its parent
    'tenant t1' is closing``. It may also be built by hand, with a message
    only: :attr:`gate` and :attr:`closed_by` are then ``None``.
    """

    gate: Gate | None
    closed_by: Gate | None
    def __init__(self, *args: object) -> None: ...
