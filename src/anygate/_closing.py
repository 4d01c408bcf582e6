"""One close of a gate, as an object: its clock, grace, warning and waiters."""

from __future__ import annotations

from time import monotonic

from typing_extensions import final

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
        "started",
        "waiters",
        "warned_at",
    )

    def __init__(self) -> None:
        self.started = monotonic()
        #: When cancellable holders are cancelled, and the grace that set it.
        self.deadline: float | None = None
        self.grace: float | None = None
        #: Tasks awaiting the drain.
        self.waiters: list[Wakeup] = []
        #: When the slow-close warning was logged.
        self.warned_at: float | None = None
        self.completion_logged = False
        #: When the last hold was released; ``None`` until then.
        self.drained_at: float | None = None

    def drained(self) -> bool:
        return self.drained_at is not None

    def tighten(self, grace: float | None, deadline: float | None) -> bool:
        """Add a deadline for the cancellable holders; the earliest wins.

        :return: whether the deadline moved, so holders must be told
        """
        if deadline is None or (self.deadline is not None and self.deadline <= deadline):
            return False
        self.deadline = deadline
        self.grace = grace
        return True

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

    def cancel_reason(self, gate: str) -> str:
        if self.grace is None:
            return f"{gate} closed"
        return f"{gate} closed and its grace of {self.grace:g}s ran out"
