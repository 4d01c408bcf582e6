"""What the servers' shutdown helpers share: their checks, and closing several gates."""

from __future__ import annotations

import signal
from collections.abc import Iterable

from ._gate import Gate


def check_gates(function: str, gates: tuple[object, ...]) -> tuple[Gate, ...]:
    if not gates:
        raise TypeError(f"{function}() needs at least one gate to close")
    for gate in gates:
        if not isinstance(gate, Gate):
            raise TypeError(f"{function}() closes Gate objects, not {type(gate).__name__}")
    return gates  # type: ignore[return-value]


def check_signals(signals: object) -> tuple[signal.Signals, ...]:
    if isinstance(signals, (int, str, bytes)) or not isinstance(signals, Iterable):
        raise TypeError(
            f"signals must be an iterable of signal numbers, not {type(signals).__name__}"
        )
    checked = tuple(signals)
    if not checked:
        raise ValueError("signals must name at least one signal")
    for signum in checked:
        if not isinstance(signum, int) or isinstance(signum, bool):
            raise TypeError(f"signals must be signal numbers, not {type(signum).__name__}")
    try:
        return tuple(signal.Signals(signum) for signum in checked)
    except ValueError:
        raise ValueError(f"signals must be signal numbers, not {checked}") from None


async def close_all(gates: tuple[Gate, ...], grace: float | None) -> None:
    """Shut every gate at once, then wait until all of them have drained."""
    drains = [gate.close(grace=grace) for gate in gates]
    try:
        for drain in drains:
            await drain
    finally:
        for drain in drains:
            drain.close()  # the ones not awaited, if the wait was cancelled
