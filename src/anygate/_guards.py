"""Guards: one hold each on a gate, and the one factory that makes them.

The guards reach their gate through :class:`GuardedGate`, a protocol, and never
import the gate's module.
"""

from __future__ import annotations

import warnings
from collections.abc import Awaitable, Callable
from time import monotonic
from types import TracebackType
from typing import TYPE_CHECKING, NoReturn, Protocol, SupportsIndex, cast

import anyio
from typing_extensions import Self, final

from ._closing import Closing
from ._diagnostics import log_leaked_guard
from ._records import CancellableRecord, Record, new_record
from ._util import check_name, require_loop
from ._wakeup import LoopRef

if TYPE_CHECKING:
    from ._gate import Gate


class GuardedGate(Protocol):
    """What a guard needs of its gate (the gate module's :class:`Gate`)."""

    _name: str | None
    #: One item per hold; see :class:`Gate` for the counter's rule.
    _holds: list[None]
    #: Closed, or bounded: a release must settle.
    _closed_or_bounded: bool
    _records: dict[Record, None]
    _closing: Closing | None

    def _settle(self, soon: bool = False) -> None: ...
    def _new_guard(self, cls: type[GateGuard], name: str | None) -> GateGuard: ...
    def _log_late_release(self, record: Record) -> None: ...


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
        # __init__: the cheapest way to build an object.
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
        drain are woken. A ``KeyboardInterrupt`` landing inside the release
        neither loses the hold nor the wakeup: the release finishes before the
        interrupt goes on, or, if it lands before the hold is dropped, the guard
        is still held and calling this again finishes the job.
        """
        self._release(False)

    def _release(self, soon: bool) -> None:
        """Drop the hold, then settle the gate: the rule of a release.

        The guard is marked released and its hold dropped with no call between
        the two, so that an interrupt, which CPython delivers after a call,
        finds both done or neither. An interrupt after the drop finishes the
        settle before it goes on (the interrupt policy, see ``Gate._settle``).
        ``soon``: called from a finalizer, so wake nothing directly.
        """
        holds = self._holds
        if holds is None:
            return
        gate = self._gate
        try:
            self._holds = None
            holds.pop()
            if gate._closed_or_bounded:
                gate._settle(soon)
        except BaseException:
            if gate._closed_or_bounded:
                gate._settle(soon)
            raise

    def _held(self) -> None:
        """The hold just counted and handed over is admitted: record it."""

    def _drop_hold(self) -> None:
        """Drop the hold, if still held, without settling: under a child gate's
        lock, for the hold it has on its parent (the parent settles after)."""
        holds = self._holds
        if holds is not None:
            self._holds = None
            holds.pop()

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
        check_name(name)
        if cancellable:
            require_loop("clone(cancellable=True)")
        holds = self._holds
        if holds is None:
            raise RuntimeError(f"cannot clone {self!r}: it has been released")
        # Built before the count is taken, as in Gate.enter(), so that a
        # KeyboardInterrupt can leak a hold only as the counting call returns.
        clone = self._gate._new_guard(guard_class(name, cancellable), name)
        holds.append(None)
        clone._holds = holds
        # Released by another thread meanwhile: the count may have reached zero
        # and a close may have drained, so the clone must not be admitted.
        if self._holds is None:
            clone.release()
            raise RuntimeError(f"cannot clone {self!r}: it has been released")
        clone._held()
        return clone

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc_val: BaseException | None,
        exc_tb: TracebackType | None,
    ) -> bool | None:
        # HOT COPY of GateGuard._release (the hot path of `with gate.enter():`);
        # tests/test_enter.py::TestEveryWayToHold runs the rule over every copy.
        holds = self._holds
        if holds is not None:
            gate = self._gate
            try:
                self._holds = None
                holds.pop()
                if gate._closed_or_bounded:
                    gate._settle()
            except BaseException:
                if gate._closed_or_bounded:
                    gate._settle()
                raise
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
        record = self._holder_record()
        taken = None if record is None else record.taken
        if taken is not None:
            # Debug mode: where it was entered.
            message += f"; it was taken with {taken.kind} {taken}"
        # A finalizer may run inside the event loop's own machinery: wake
        # nothing directly, only queue the wakeups.
        self._release(soon=True)
        gate = self._gate
        log_leaked_guard(message, gate._name, record, len(gate._holds))
        warnings.warn(message, ResourceWarning, stacklevel=1, source=self)

    def _holder_record(self) -> Record | None:
        """The record of this holder, if it keeps one."""
        return None


@final
class UnnamedGuard(GateGuard):
    """An unnamed guard, as :meth:`Gate.enter` builds it."""

    __slots__ = ()
    if not TYPE_CHECKING:
        __init__ = object.__init__

    async def _run(self, func: Callable[..., Awaitable[object]], *args: object) -> None:
        """Run a task of :meth:`Gate.start_soon`, whose hold this guard carried.

        The guard keeps the hold only until the task starts: a task that its
        task group drops unstarted (cancelled before its first step) releases
        it when the guard is collected. Once started, the hold passes to this
        coroutine, which drops it when the task ends, and the guard is freed:
        each running task then keeps one object fewer for the collector.
        """
        gate = self._gate
        holds = self._holds
        assert holds is not None
        # No call between these and the try: an interrupt lands before (the
        # guard still holds, and its finalizer releases) or inside the try.
        self._holds = None
        del self
        try:
            await func(*args)
        finally:
            # HOT COPY of GateGuard._release: a call here could be interrupted
            # as it starts, with nothing left to release the hold.
            try:
                holds.pop()
                if gate._closed_or_bounded:
                    gate._settle()
            except BaseException:
                if gate._closed_or_bounded:
                    gate._settle()
                raise


class NamedGuard(GateGuard):
    """A guard with a holder record: named, cancellable, or a child gate's."""

    __slots__ = ("_record",)
    if not TYPE_CHECKING:
        __init__ = object.__init__

    _record: Record

    @property
    def name(self) -> str | None:
        return self._record.name

    def _holder_record(self) -> Record | None:
        return self._record

    def _held(self) -> None:
        record = self._record
        record.since = monotonic()
        # After the count: the count is never below the records.
        self._gate._records[record] = None

    def _release(self, soon: bool) -> None:
        holds = self._holds
        if holds is None:
            return
        gate = self._gate
        # Forget the record before the count drops, so that holders() never
        # lists a holder after the close it held up has drained. Interrupted
        # here, the guard is still held, and a second release does it all.
        record = self._record
        gate._records.pop(record, None)
        if gate._closing is not None:
            gate._log_late_release(record)
        # HOT COPY of GateGuard._release, from here on.
        try:
            self._holds = None
            holds.pop()
            if gate._closed_or_bounded:
                gate._settle(soon)
        except BaseException:
            if gate._closed_or_bounded:
                gate._settle(soon)
            raise

    def _drop_hold(self) -> None:
        self._gate._records.pop(self._record, None)
        GateGuard._drop_hold(self)

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc_val: BaseException | None,
        exc_tb: TracebackType | None,
    ) -> bool | None:
        self._release(False)
        return None


@final
class CancellableGuard(NamedGuard):
    """A guard from ``enter(cancellable=True)``: a close's grace can cancel its block.

    A subclass, so that plain guards pay nothing for the cancel scope.
    """

    __slots__ = ()
    if not TYPE_CHECKING:
        __init__ = object.__init__

    def _cancellable_record(self) -> CancellableRecord:
        return cast(CancellableRecord, self._record)

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
            loop = LoopRef("a cancellable guard's block")
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
            closing.give_deadline(record, scope)
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


def guard_class(name: str | None, cancellable: bool) -> type[GateGuard]:
    """The kind of guard a public entry makes: chosen there, once."""
    if cancellable:
        return CancellableGuard
    return UnnamedGuard if name is None else NamedGuard


def new_guard(gate: GuardedGate, cls: type[GateGuard], name: str | None) -> GateGuard:
    """A guard of class ``cls`` on ``gate``, not yet holding: the one factory.

    The caller counts the hold, hands it over (``guard._holds = holds``, with
    nothing between: see ``Gate.enter``), then admits it with ``guard._held()``.
    """
    guard = cls()
    guard._gate = cast("Gate", gate)
    if cls is not UnnamedGuard:
        named = cast(NamedGuard, guard)
        named._record = CancellableRecord(name) if cls is CancellableGuard else new_record(name)
    return guard


def recorded_guard(gate: GuardedGate, record: Record) -> GateGuard:
    """A guard on ``gate`` with a record made by the caller (debug mode's, which
    knows where the hold is taken), not yet holding: as :func:`new_guard`."""
    guard: NamedGuard = (
        CancellableGuard() if isinstance(record, CancellableRecord) else NamedGuard()
    )
    guard._gate = cast("Gate", gate)
    guard._record = record
    return guard


def child_guard(gate: GuardedGate, record: Record) -> GateGuard:
    """A guard for a child gate's hold on ``gate``, with the child's record."""
    guard = NamedGuard()
    guard._gate = cast("Gate", gate)
    guard._record = record
    return guard
