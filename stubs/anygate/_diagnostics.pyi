from typing import NamedTuple

class Holder(NamedTuple):
    name: str
    held_for: float
