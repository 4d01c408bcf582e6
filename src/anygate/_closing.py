"""One close of a gate, as an object (its deadline, waiters and parent hold),
and the wait for its drain."""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Sequence
from threading import get_ident
from time import monotonic
from typing import Protocol

import anyio
import anyio.lowlevel
from anyio import CancelScope, current_time
from typing_extensions import final

from ._diagnostics import log_close_completed
from ._lock import GateLock
from ._records import CancellableRecord, Record
from ._wakeup import LoopRef, Wakeup

#: How long past the deadline a block's cancel scope still fires on its own while
#: a task in its event loop awaits the drain (see :meth:`Closing.give_deadline`):
#: only if that task has not run for so long, as when the loop is blocked.
_HOLD_BACK = 1.0


class ParentHold(Protocol):
    """What a close needs of its gate's hold on the parent gate (a guard)."""

    def _drop_hold(self) -> None:
        """Drop the hold without settling its gate, if not dropped yet."""
        ...


@final
class Closing:
    """A close of a gate, from the moment the gate was shut until it drained.

    Everything one close needs lives here and nowhere else, so that a cancelled
    waiter, a completed drain or a reopen cannot leak state into the next close:
    its deadline, its waiters, and the hold its gate had on its parent.
    The gate changes it only under its lock; its fields are read without one.

    Times are :func:`time.monotonic`, not an event loop's clock: a gate can
    outlive any one loop, and trio's clock has a random offset. Each loop that
    meets the deadline converts it to its own clock once (:meth:`deadline_on`),
    so that a mock clock moves it as it moves the loop's timeouts.
    """

    __slots__ = (
        "_on_loop",
        "by",
        "completion_logged",
        "deadline",
        "drained_at",
        "grace",
        "parent_hold",
        "reason",
        "started",
        "waiters",
        "warned_at",
        "watchers",
    )

    def __init__(self, parent_hold: ParentHold | None, by: object) -> None:
        self.started = monotonic()
        #: The gate whose close this is: the gate itself, or the ancestor whose
        #: close reached it (named by the refusals, GateClosed.closed_by).
        self.by = by
        #: The gate's hold on its parent while this close runs; dropped, exactly
        #: once, by whoever sees the drain (under the gate's lock). It belongs
        #: to this close: a reopen makes a new hold for the next one.
        self.parent_hold = parent_hold
        #: When cancellable holders are cancelled, and the grace that set it.
        self.deadline: float | None = None
        self.grace: float | None = None
        #: Why cancellable holders are cancelled: the cancel scopes' reason.
        self.reason = ""
        #: Tasks awaiting the drain, woken by it. Each leaves the list itself,
        #: so that a drain can be woken again after an interruption.
        self.waiters: list[Wakeup] = []
        #: Tasks that cancel this close's blocks in their own event loops at
        #: the deadline (see :meth:`give_deadline`), woken when it moves: those
        #: awaiting the drain of this close or of an ancestor's.
        self.watchers: list[Wakeup] = []
        #: When the slow-close warning was logged.
        self.warned_at: float | None = None
        self.completion_logged = False
        #: When the last hold was released; ``None`` until then.
        self.drained_at: float | None = None
        # The deadline on each loop's clock: {LoopRef.key: (deadline, on the loop)}.
        self._on_loop: dict[tuple[int, int], tuple[float, float]] = {}

    def drained(self) -> bool:
        return self.drained_at is not None

    def tighten(self, gate: str, grace: float | None, deadline: float | None) -> bool:
        """Add a deadline for the cancellable holders; the earliest wins.

        :return: whether the deadline moved, so holders must be told
        """
        if deadline is None or (self.deadline is not None and self.deadline <= deadline):
            return False
        self.deadline = deadline
        self.grace = grace
        self.reason = f"{gate} closed" + (
            "" if grace is None else f" and its grace of {grace:g}s ran out"
        )
        return True

    def deadline_is_by(self, deadline: float) -> bool:
        """Whether this close's deadline is ``deadline`` or earlier."""
        return self.deadline is not None and self.deadline <= deadline

    def deadline_on(self, loop: LoopRef) -> float:
        """The deadline on the clock of ``loop``, the event loop of this thread.

        Converted the first time a loop asks, and kept: a mock clock that jumps
        then finds the deadline passed, as it finds its own timeouts.
        """
        deadline = self.deadline
        assert deadline is not None
        key = loop.key
        known = self._on_loop.get(key)
        if known is not None and known[0] == deadline:
            return known[1]
        at = current_time() + deadline - monotonic()
        self._on_loop[key] = (deadline, at)
        return at

    def note_loop(self) -> None:
        """Convert the deadline to the clock of this thread's loop, if one runs."""
        if self.deadline is None:
            return
        try:
            loop = LoopRef()
        except anyio.NoEventLoopError:
            return
        self.deadline_on(loop)

    def give_deadline(self, record: CancellableRecord, scope: CancelScope) -> None:
        """Give the block of ``record`` this close's deadline; in its own thread.

        The block's cancel scope carries the deadline, so that it fires whether
        or not any task awaits the drain. But a scope's deadline cancels with
        anyio's reason, "deadline exceeded". So while a task in the block's own
        event loop awaits the drain, that task cancels the block at the deadline
        with this close's reason, which names the gate and its grace, and the
        scope's deadline is held back by :data:`_HOLD_BACK` as a backstop.
        Whoever changes the deadline or the tasks awaiting calls this again, so
        it reads everything afresh.
        """
        loop = record.loop
        if record.scope is not scope or loop is None or self.deadline is None or self.drained():
            # The block has ended, or there is no deadline. A drained close has
            # no blocks: those of a reopened gate are the next close's.
            return
        at = self.deadline_on(loop)
        if at <= current_time():
            scope.cancel(self.reason)
            return
        me = get_ident()
        if any(watcher.loop.thread == me for watcher in self.watchers.copy()):
            at += _HOLD_BACK
        scope.deadline = at

    def give_deadline_everywhere(self, records: Iterable[Record], soon: bool) -> None:
        """:meth:`give_deadline` for each block among ``records``, in its own
        event loop: after the deadline moved. ``soon``: in a signal handler, so
        through the loop even in this thread."""
        for record, scope, loop in _running_blocks(records):
            if loop.in_this_thread() and not soon:
                self.give_deadline(record, scope)
            else:
                loop.call_soon(self.give_deadline, record, scope)

    def give_deadline_here(self, records: Iterable[Record]) -> None:
        """:meth:`give_deadline` for the blocks among ``records`` that run in
        this thread: for a task awaiting the drain, as it starts and stops."""
        for record, scope, _ in _running_blocks(records, here=True):
            self.give_deadline(record, scope)

    def cancel_here(self, records: Iterable[Record]) -> None:
        """Cancel the blocks among ``records`` that run in this thread, with this
        close's reason: for a task awaiting the drain, at the deadline."""
        if self.drained():
            return  # as in give_deadline
        for _, scope, _ in _running_blocks(records, here=True):
            scope.cancel(self.reason)

    def warn_at(self, warn_after: float | None) -> float | None:
        """When the slow-close warning is due, or ``None`` if it is not to come.

        A close inside its grace period is going as planned, so the warning
        counts from the end of the grace.
        """
        if warn_after is None or self.warned_at is not None:
            return None
        start = self.started if self.deadline is None else max(self.started, self.deadline)
        return start + warn_after

    def mark_drained(self) -> None:
        """Under the gate's lock: the last hold is gone."""
        self.drained_at = monotonic()
        self.watchers = []  # a drained close has no blocks left to cancel

    def drop_parent_hold(self) -> ParentHold | None:
        """Under the gate's lock, once drained: drop the hold on the parent, if
        not dropped yet. Return the hold, whose gate is to be settled."""
        hold = self.parent_hold
        if hold is not None:
            hold._drop_hold()
        return hold

    def duration(self) -> float | None:
        return None if self.drained_at is None else self.drained_at - self.started


class DrainingGate(Protocol):
    """What the drain wait needs of a gate (the gate module's :class:`Gate`)."""

    _lock: GateLock
    _records: dict[Record, None]
    _warn_after: float | None
    _name: str | None

    def _descendant_closes(self) -> Sequence[tuple[DrainingGate, Closing]]: ...
    def _warn(self, closing: Closing) -> None: ...


async def wait_drained(gate: DrainingGate, closing: Closing) -> None:
    """Wait for the drain of ``closing``, a close of ``gate``; see :meth:`Gate.close`.

    This task watches the close of ``gate`` and those of its descendants, which
    it closed: it cancels their blocks in this event loop at their deadlines
    itself, with their close's reason (:meth:`Closing.give_deadline`). It logs
    the slow-close warning, and the completion after one.
    """
    watched = [(gate, closing), *gate._descendant_closes()]
    waiter = _watch(watched)
    waited = False
    loop = waiter.loop
    # The warning's time on this loop's clock, converted once, as the deadlines.
    warn_on_loop: dict[float, float] = {}
    expired: set[int] = set()
    try:
        while not closing.drained():
            loop_now = current_time()
            warn_at = closing.warn_at(gate._warn_after)
            wake = math.inf
            if warn_at is not None:
                wake = warn_on_loop.setdefault(warn_at, loop_now + warn_at - monotonic())
                if wake <= loop_now:
                    gate._warn(closing)
                    continue
            for i, (watched_gate, watched_closing) in enumerate(watched):
                if watched_closing.deadline is None or i in expired:
                    continue
                at = watched_closing.deadline_on(loop)
                if at <= loop_now:
                    expired.add(i)
                    watched_closing.cancel_here(tuple(watched_gate._records.copy()))
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
    with gate._lock:
        log = closing.warned_at is not None and not closing.completion_logged
        closing.completion_logged = True
    took = closing.duration()
    if log and took is not None:
        log_close_completed(gate._name, took)
    if not waited:
        await anyio.lowlevel.checkpoint()  # every call is a checkpoint


def _watch(watched: list[tuple[DrainingGate, Closing]]) -> Wakeup:
    """Await the drain of the first close in ``watched``, and watch them all.

    Watching a close, this task cancels its blocks in this event loop at the
    deadline, so they are held back for it, and wakes when the deadline moves.
    """
    waiter = Wakeup()
    for i, (gate, closing) in enumerate(watched):
        with gate._lock:
            if not closing.drained():
                closing.watchers.append(waiter)
                if not i:
                    closing.waiters.append(waiter)
        closing.give_deadline_here(tuple(gate._records.copy()))
    return waiter


def _unwatch(watched: list[tuple[DrainingGate, Closing]], waiter: Wakeup) -> None:
    """Stop awaiting and watching, and give each block in this event loop its
    scope's deadline back, unless another task here still watches."""
    for gate, closing in watched:
        with gate._lock:
            for registered in (closing.waiters, closing.watchers):
                if waiter in registered:
                    registered.remove(waiter)
        closing.give_deadline_here(tuple(gate._records.copy()))


def _running_blocks(
    records: Iterable[Record], here: bool = False
) -> Iterator[tuple[CancellableRecord, CancelScope, LoopRef]]:
    """The cancellable blocks among ``records`` that are running, with their
    loops; ``here``: only those in this thread."""
    for record in records:
        if isinstance(record, CancellableRecord):
            scope, loop = record.scope, record.loop
            if scope is not None and loop is not None and (not here or loop.in_this_thread()):
                yield record, scope, loop
