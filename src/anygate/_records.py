"""What a gate keeps of its named holders, and what it reports of them."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from time import monotonic
from typing import TYPE_CHECKING, NamedTuple

if TYPE_CHECKING:
    from anyio import CancelScope

    from ._wakeup import LoopRef


class Holder(NamedTuple):
    """A named holder of a gate, as :meth:`Gate.holders` reports it."""

    #: The name given to :meth:`Gate.enter`, :meth:`Gate.acquire`,
    #: :meth:`Gate.start_soon`, :meth:`Gate.start` or :meth:`GateGuard.clone`;
    #: for a child gate, ``"gate 'its name'"``.
    name: str
    #: Seconds since the holder entered.
    held_for: float


class Record:
    """What a gate keeps of a named holder while it holds.

    A gate keeps its records in a dict used as an ordered set, changed without
    a lock (even by finalizers) and so read only through ``dict.copy()``. A
    record is added after its hold is counted and removed before the hold is
    dropped, so the count is never below the records held.
    """

    __slots__ = ("name", "since")

    name: str | None
    since: float


class ChildRecord(Record):
    """The hold of a child gate on its parent, which can list the child's holders."""

    __slots__ = ("holders",)

    def __init__(self, name: str, holders: Callable[[], list[Holder]]) -> None:
        self.name = name
        self.since = monotonic()
        self.holders = holders


class CancellableRecord(Record):
    """A record of a guard entered with ``cancellable=True``."""

    __slots__ = ("cancelled_caught", "loop", "scope", "task")

    def __init__(self, name: str | None) -> None:
        self.name = name
        self.since = monotonic()
        #: Set while the guard's block runs, so that a close can end it.
        self.scope: CancelScope | None = None
        self.loop: LoopRef | None = None
        #: The task running the block: to catch it closing the gate, or leaving
        #: the block in another task.
        self.task: int | None = None
        self.cancelled_caught = False


def new_record(name: str | None) -> Record:
    record = Record()
    record.name = name
    record.since = monotonic()
    return record


def holders_of(records: Iterable[Record]) -> list[Holder]:
    now = monotonic()
    return [Holder(r.name, now - r.since) for r in records if r.name is not None]
