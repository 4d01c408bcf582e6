from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar

from typing_extensions import TypeVarTuple, Unpack

if TYPE_CHECKING:
    from ._gate import GateGuard

_T = TypeVar("_T")
_PosArgsT = TypeVarTuple("_PosArgsT")


async def hold_while(guard: GateGuard, awaitable: Awaitable[_T]) -> _T:
    """Await ``awaitable``, then release ``guard`` however it ended."""
    try:
        return await awaitable
    finally:
        guard.release()


async def run_holding(
    guard: GateGuard,
    func: Callable[[Unpack[_PosArgsT]], Awaitable[Any]],
    *args: Unpack[_PosArgsT],
) -> None:
    """Run a task started by :meth:`Gate.start_soon`, releasing its guard at the end."""
    try:
        await func(*args)
    finally:
        guard.release()


def check_callable(func: object, method: str) -> None:
    if not callable(func):
        raise TypeError(f"{method}() needs a callable, not {type(func).__name__}")
