"""One close of a gate, as an object: its clock, grace, warning and waiters."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from threading import get_ident
from time import monotonic

from anyio import CancelScope, current_time
from typing_extensions import final

from ._diagnostics import _CancellableRecord, _Record
from ._wakeup import LoopRef, Wakeup

#: How long past the deadline a block's cancel scope still fires on its own while
#: a task in its event loop awaits the drain (see :meth:`Closing.escalate_here`):
#: only if that task has not run for so long, as when the loop is blocked.
_HOLD_BACK = 1.0


@final
class Closing:
    """A close of a gate, from the moment the gate was shut until it drained.

    Everything one close needs lives here and nowhere else, so that a cancelled
    waiter, a completed drain or a reopen cannot leak state into the next close.
    The gate changes it only under its lock; its fields are read without one.

    Times are :func:`time.monotonic`, not an event loop's clock: a gate can
    outlive any one loop, and trio's clock has a random offset.
    """

    __slots__ = (
        "completion_logged",
        "deadline",
        "drained_at",
        "grace",
        "reason",
        "started",
        "waiters",
        "warned_at",
        "watchers",
    )

    def __init__(self) -> None:
        self.started = monotonic()
        #: When cancellable holders are cancelled, and the grace that set it.
        self.deadline: float | None = None
        self.grace: float | None = None
        #: Why cancellable holders are cancelled: the cancel scopes' reason.
        self.reason = ""
        #: Tasks awaiting the drain, woken by it.
        self.waiters: list[Wakeup] = []
        #: Tasks that cancel this close's blocks in their own event loops at
        #: the deadline (see :meth:`escalate_here`), woken when it moves: those
        #: awaiting the drain of this close or of an ancestor's.
        self.watchers: list[Wakeup] = []
        #: When the slow-close warning was logged.
        self.warned_at: float | None = None
        self.completion_logged = False
        #: When the last hold was released; ``None`` until then.
        self.drained_at: float | None = None

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

    def escalate(self, records: Iterable[_Record]) -> None:
        """Hand the deadline to the cancellable blocks among ``records``, each in
        its own event loop: call after the deadline moved."""
        for record, scope, loop in _running_blocks(records):
            loop.call(self.escalate_here, record, scope)

    def escalate_here(self, record: _CancellableRecord, scope: CancelScope) -> None:
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
        deadline = self.deadline
        if record.scope is not scope or deadline is None or self.drained():
            # The block has ended, or there is no deadline. A drained close has
            # no blocks: those of a reopened gate are the next close's.
            return
        remaining = deadline - monotonic()
        if remaining <= 0:
            scope.cancel(self.reason)
            return
        me = get_ident()
        if any(watcher.loop.thread == me for watcher in self.watchers.copy()):
            remaining += _HOLD_BACK
        scope.deadline = current_time() + remaining

    def escalate_local(self, records: Iterable[_Record]) -> None:
        """:meth:`escalate_here` for the blocks among ``records`` that run in this
        thread: for a task awaiting the drain, as it starts and stops waiting."""
        for record, scope in _local_scopes(records):
            self.escalate_here(record, scope)

    def expire_local(self, records: Iterable[_Record]) -> None:
        """Cancel the blocks among ``records`` that run in this thread, with this
        close's reason: for a task awaiting the drain, at the deadline."""
        if self.drained():
            return  # as in escalate_here
        for _, scope in _local_scopes(records):
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

    def drain(self) -> list[Wakeup]:
        """Mark the close drained; return the waiters to wake."""
        self.drained_at = monotonic()
        waiters, self.waiters = self.waiters, []
        self.watchers = []  # a drained close has no blocks left to cancel
        return waiters

    def duration(self) -> float | None:
        return None if self.drained_at is None else self.drained_at - self.started


def _running_blocks(
    records: Iterable[_Record],
) -> Iterator[tuple[_CancellableRecord, CancelScope, LoopRef]]:
    """The cancellable blocks among ``records`` that are running, with their loops."""
    for record in records:
        if isinstance(record, _CancellableRecord):
            scope, loop = record.scope, record.loop
            if scope is not None and loop is not None:
                yield record, scope, loop


def _local_scopes(records: Iterable[_Record]) -> Iterator[tuple[_CancellableRecord, CancelScope]]:
    """The cancellable blocks among ``records`` that run in this thread."""
    for record, scope, loop in _running_blocks(records):
        if loop.in_this_thread():
            yield record, scope
