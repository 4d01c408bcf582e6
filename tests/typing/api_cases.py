"""Type-checked against stubs/ by ``make check``; never run.

Each ``# type: ignore[...]`` is a negative case: with ``warn_unused_ignores``
the check fails if the stubs ever start accepting that line.
"""

from __future__ import annotations

from anyio import ClosedResourceError
from typing_extensions import assert_type

from anygate import Gate, GateClosed, GateGuard


async def gate_api() -> None:
    gate = Gate("tenant 42")
    assert_type(Gate(), Gate)
    assert_type(gate.name, str | None)
    assert_type(gate.count, int)
    assert_type(gate.closed, bool)
    assert_type(gate.enter(), GateGuard)
    assert_type(gate.enter("GET /x"), GateGuard)
    assert_type(gate.try_enter(), GateGuard | None)
    assert_type(gate.check(), None)
    with gate as held:
        assert_type(held, None)
    async with gate as held_async:
        assert_type(held_async, None)
    assert_type(await gate.close(), None)
    assert_type(gate.reopen(), None)

    Gate(42)  # type: ignore[arg-type]
    gate.enter(b"x")  # type: ignore[arg-type]
    gate.count = 3  # type: ignore[misc]
    gate.closed = False  # type: ignore[misc]
    await gate.close(5.0)  # type: ignore[call-arg]
    gate.close_nowait()  # type: ignore[attr-defined]


async def guard_api(gate: Gate) -> None:
    guard = gate.enter()
    assert_type(guard.gate, Gate)
    assert_type(guard.name, str | None)
    assert_type(guard.released, bool)
    assert_type(guard.clone(), GateGuard)
    assert_type(guard.clone("child"), GateGuard)
    assert_type(guard.release(), None)
    with gate.enter() as entered:
        assert_type(entered, GateGuard)
    async with gate.enter() as entered_async:
        assert_type(entered_async, GateGuard)

    guard.clone(1)  # type: ignore[arg-type]
    guard.released = True  # type: ignore[misc]


def errors() -> None:
    error: ClosedResourceError = GateClosed("the gate is closed")
    assert_type(error, ClosedResourceError)


class NotAGate(Gate):  # type: ignore[misc]
    pass
