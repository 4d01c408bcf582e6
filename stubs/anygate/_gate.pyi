from collections.abc import Awaitable, Callable, Coroutine
from types import TracebackType
from typing import Any, TypeVar

from anyio.abc import TaskGroup
from typing_extensions import Never, ParamSpec, TypeVarTuple, Unpack, final

from ._admission import Acquisition
from ._diagnostics import Holder

_T = TypeVar("_T")
_P = ParamSpec("_P")
_PosArgsT = TypeVarTuple("_PosArgsT")

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
    def __init__(
        self,
        name: str | None = None,
        *,
        limit: int | None = None,
        warn_after: float | None = 1.0,
    ) -> None: ...
    @property
    def name(self) -> str | None:
        """The gate's name, or ``None``."""
    @property
    def count(self) -> int:
        """How many holds are in progress: guards unreleased plus ``with`` blocks."""
    @property
    def closed(self) -> bool:
        """``True`` from the moment :meth:`close` is called until :meth:`reopen`."""
    @property
    def limit(self) -> int | None:
        """The most holds admitted at once, or ``None``."""
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
    def try_enter(self, name: str | None = None, *, cancellable: bool = False) -> GateGuard | None:
        """Like :meth:`enter`, but return ``None`` where it would raise
        :exc:`GateClosed` or :exc:`anyio.WouldBlock`.

        :raises TypeError: if ``name`` is neither a string nor ``None``
        :raises RuntimeError: if ``cancellable`` is true and no event loop runs in
            this thread
        """
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
    def check(self) -> None:
        """Raise if the gate is closed, so that long work can stop on its own.

        :raises GateClosed: if the gate is closed
        """
    def guarded(self, func: Callable[_P, Awaitable[_T]]) -> Callable[_P, Coroutine[Any, Any, _T]]:
        """Decorate an async function so that each call holds the gate throughout.

        The gate is entered when the function is called, before the coroutine
        is awaited, so a call on a closed gate raises :exc:`GateClosed` at once.
        The hold ends when the call ends, however it ends.

        :raises TypeError: if ``func`` is not callable
        """
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
    def holders(self) -> list[Holder]:
        """The named holders still holding the gate, oldest first."""
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
    def reopen(self) -> None:
        """Admit entries again after a completed close.

        :raises RuntimeError: if the gate is not closed, or is closed but still held
        """

@final
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
        """``True`` if :meth:`Gate.close` cancelled this guard's block after its grace."""
    def release(self) -> None:
        """Let go of the gate. Calling it again does nothing.

        If this was the last hold on a closed gate, the tasks waiting in
        :meth:`Gate.close` are woken.
        """
    def clone(self, name: str | None = None, *, cancellable: bool = False) -> GateGuard:
        """Return a new guard on the same gate, to hand to work this holder started.

        Succeeds even on a closed or full gate, since the clone's work is part of
        work already admitted; :meth:`Gate.close` waits for the clone too.

        :param name: names the new holder
        :param cancellable: as for :meth:`Gate.enter`
        :raises RuntimeError: if this guard has been released
        :raises TypeError: if ``name`` is neither a string nor ``None``
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
