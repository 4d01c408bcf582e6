"""What a gate keeps of its named holders, and what it reports of them."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from time import monotonic
from typing import TYPE_CHECKING, NamedTuple

if TYPE_CHECKING:
    from anyio import CancelScope

    from ._wakeup import LoopRef


class Holder(NamedTuple):
    """A holder of a gate, as :meth:`Gate.holders` reports it.

    Outside debug mode only named holders are listed, and :attr:`site` and
    :attr:`taken_by` are ``None``; in debug mode (see :attr:`Gate.debug`)
    every hold is listed, with both.
    """

    #: The name given to :meth:`Gate.enter`, :meth:`Gate.acquire`,
    #: :meth:`Gate.start_soon`, :meth:`Gate.start` or :meth:`GateGuard.clone`;
    #: for a child gate, ``"gate 'its name'"``. In debug mode, an unnamed hold
    #: is listed under the way it was taken: ``"with gate:"``, ``"enter()"``,
    #: ``"acquire()"``, ``"start_soon()"``...
    name: str
    #: Seconds since the holder entered.
    held_for: float
    #: Where the hold was taken, in debug mode: ``"path/to/file.py:88 in
    #: function"``, the first caller outside anygate; ``None`` otherwise.
    site: str | None = None
    #: Who took the hold, in debug mode: ``"task 'its name'"``, or
    #: ``"thread 'its name'"`` outside a task; ``None`` otherwise.
    taken_by: str | None = None


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
    #: Where and by whom the hold was taken: set by the subclasses that debug
    #: mode uses (see ``_debug.py``), which make it a slot; ``None`` here.
    taken: Taken | None = None


class Taken:
    """Where a hold was taken and by whom, as debug mode records it."""

    __slots__ = ("kind", "site", "taken_by")

    def __init__(self, kind: str, site: str, taken_by: str) -> None:
        #: The way the hold was taken, which names an unnamed one.
        self.kind = kind
        #: ``"file:line in function"``: the first caller outside anygate.
        self.site = site
        #: ``"task 'name'"`` or ``"thread 'name'"``.
        self.taken_by = taken_by

    def __str__(self) -> str:
        return f"at {self.site} ({self.taken_by})"


def label(record: Record) -> str:
    """How the text of a log record names a holder: its name, quoted, or the
    way an unnamed hold was taken."""
    if record.name is not None:
        return repr(record.name)
    taken = record.taken
    return "an unnamed holder" if taken is None else taken.kind


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


def listed(record: Record) -> bool:
    """Whether a holder is listed: named, or recorded by debug mode."""
    return record.name is not None or record.taken is not None


def holder_of(record: Record, now: float) -> Holder:
    taken = record.taken
    if taken is None:
        assert record.name is not None
        return Holder(record.name, now - record.since)
    name = taken.kind if record.name is None else record.name
    return Holder(name, now - record.since, taken.site, taken.taken_by)


def holders_of(records: Iterable[Record]) -> list[Holder]:
    now = monotonic()
    return [holder_of(r, now) for r in records if listed(r)]
