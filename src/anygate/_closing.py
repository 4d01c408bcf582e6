"""One close of a gate, as an object: its clock, grace, warning and waiters."""

from __future__ import annotations

from collections.abc import Iterable
from time import monotonic

from anyio import CancelScope
from typing_extensions import final

from ._diagnostics import _CancellableRecord, _Record
from ._wakeup import Wakeup


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
    )

    def __init__(self) -> None:
        self.started = monotonic()
        #: When cancellable holders are cancelled, and the grace that set it.
        self.deadline: float | None = None
        self.grace: float | None = None
        #: Why cancellable holders are cancelled: the cancel scopes' reason.
        self.reason = ""
        #: Tasks awaiting the drain.
        self.waiters: list[Wakeup] = []
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
        """Hand the deadline to the cancellable holders among ``records``.

        Each block's cancel scope carries it from then on, in its own event
        loop, so the grace runs out whether or not any task awaits the drain.
        """
        deadline = self.deadline
        if deadline is None:
            return
        for record in records:
            if isinstance(record, _CancellableRecord):
                record.escalate(deadline, self.reason)

    def hold_back(self, records: Iterable[_Record]) -> list[tuple[_CancellableRecord, CancelScope]]:
        """Take over the cancelling of the cancellable blocks among ``records``
        that run in this thread's event loop, for a task here awaiting the drain.

        The task then cancels them at the deadline with :meth:`cancel_held`,
        giving the close's reason (see :meth:`_CancellableRecord.hold_back`).
        """
        deadline = self.deadline
        if deadline is None or monotonic() >= deadline:
            return []
        held = []
        for record in records:
            if isinstance(record, _CancellableRecord):
                scope = record.hold_back(deadline)
                if scope is not None:
                    held.append((record, scope))
        return held

    def cancel_held(self, held: Iterable[tuple[_CancellableRecord, CancelScope]]) -> None:
        """Cancel the blocks taken over by :meth:`hold_back` if the deadline has
        passed, else give them back their scope's deadline."""
        deadline = self.deadline
        assert deadline is not None
        for record, scope in held:
            record.escalate_here(scope, deadline, self.reason)

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
        return waiters

    def duration(self) -> float | None:
        return None if self.drained_at is None else self.drained_at - self.started
