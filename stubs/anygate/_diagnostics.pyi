from dataclasses import dataclass
from typing import NamedTuple

from typing_extensions import final

class Holder(NamedTuple):
    """A named holder of a gate, as :meth:`Gate.holders` reports it."""

    name: str
    held_for: float

@final
@dataclass(frozen=True)
class GateStatistics:
    """A snapshot of a gate, as :meth:`Gate.statistics` returns it."""

    count: int
    closed: bool
    limit: int | None
    tasks_waiting: int
    holders: tuple[Holder, ...]
    children: int
    refused: int
    last_close_duration: float | None
