from typing import NamedTuple

class Holder(NamedTuple):
    """A named holder of a gate, as :meth:`Gate.holders` reports it."""

    name: str
    held_for: float
