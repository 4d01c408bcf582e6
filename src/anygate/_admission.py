"""A first-come, first-served line of tasks waiting for room under a limit."""

from __future__ import annotations

import enum
from collections import deque

from typing_extensions import final

from ._wakeup import Wakeup


class WaiterState(enum.Enum):
    """What became of a waiter. Only the owner of the line moves a waiter on."""

    WAITING = "waiting"
    ADMITTED = "admitted"
    REFUSED = "refused"
    LEFT = "left"


@final
class Waiter:
    """A task in line, made in that task so that its wakeup belongs to its loop."""

    __slots__ = ("state", "wakeup")

    def __init__(self) -> None:
        self.wakeup = Wakeup()
        self.state = WaiterState.WAITING

    def admitted(self) -> bool:
        """Whether the line's owner admitted it (read after a wait)."""
        return self.state is WaiterState.ADMITTED


@final
class Admission:
    """The limit of a bounded gate, and the tasks waiting in line for room.

    It knows nothing of what it admits to: the owner counts the holds, passes the
    count in, and serialises every call that changes the line (under its lock).
    ``has_room`` and reading ``line`` alone may be done without that lock.
    """

    __slots__ = ("limit", "line")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        #: The waiters, first come first; for the owner to read, not to change.
        self.line: deque[Waiter] = deque()

    def has_room(self, count: int) -> bool:
        """Whether ``count`` holds, one just counted among them, fit the limit.

        Waiters in line come first, so nobody may pass them.
        """
        return count <= self.limit and not self.line

    def join(self, waiter: Waiter) -> None:
        self.line.append(waiter)

    def leave(self, waiter: Waiter) -> None:
        """Take a waiting ``waiter`` out of line."""
        if waiter.state is WaiterState.WAITING:
            self.line.remove(waiter)
            waiter.state = WaiterState.LEFT

    def admit(self, holds: list[None]) -> list[Waiter]:
        """Admit waiters, oldest first, while the holds counted in ``holds``
        leave room, counting a hold for each; the owner then wakes them.

        Each hold is counted before its waiter leaves the line: an entry that
        counts itself meanwhile finds the line still full, or the room taken.
        """
        admitted: list[Waiter] = []
        line = self.line
        while line and len(holds) < self.limit:
            holds.append(None)
            waiter = line.popleft()
            waiter.state = WaiterState.ADMITTED
            admitted.append(waiter)
        return admitted

    def refuse_all(self) -> list[Waiter]:
        """Empty the line: the owner wakes each waiter returned to be refused."""
        refused = list(self.line)
        self.line.clear()
        for waiter in refused:
            waiter.state = WaiterState.REFUSED
        return refused
