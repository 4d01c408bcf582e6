from collections.abc import Generator
from types import TracebackType

from typing_extensions import final

from ._gate import Gate, GateGuard

@final
class Acquisition:
    """What :meth:`Gate.acquire` returns: await it, or use it with ``async with``."""
    def __init__(self, gate: Gate, name: str | None) -> None: ...
    def __await__(self) -> Generator[object, None, GateGuard]: ...
    async def __aenter__(self) -> GateGuard: ...
    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc_val: BaseException | None,
        exc_tb: TracebackType | None,
    ) -> None: ...
