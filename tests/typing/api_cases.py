"""Type-checked against stubs/ by ``make check``; never run.

Each ``# type: ignore[...]`` is a negative case: with ``warn_unused_ignores``
the check fails if the stubs ever start accepting that line.
"""

from __future__ import annotations

from collections.abc import Coroutine
from typing import Any

import trio
from anyio import ClosedResourceError
from anyio.abc import TaskGroup, TaskStatus
from typing_extensions import assert_type

from anygate import Gate, GateClosed, GateGuard, GateStatistics, Holder, gated


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
    drained = gate.close()
    _ = assert_type(drained, Coroutine[Any, Any, None])
    await drained
    assert_type(gate.reopen(), None)

    Gate(42)  # type: ignore[arg-type]
    gate.enter(b"x")  # type: ignore[arg-type]
    gate.count = 3  # type: ignore[misc]
    gate.closed = False  # type: ignore[misc]
    await gate.close(5.0)  # type: ignore[call-arg]


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


async def toolkit_api(gate: Gate, tg: TaskGroup) -> None:
    Gate("t", limit=10, warn_after=None)
    assert_type(gate.limit, int | None)
    assert_type(gate.enter("GET /x", cancellable=True), GateGuard)
    assert_type(gate.enter().cancelled_caught, bool)
    graceful = gate.close(grace=5.0)
    _ = assert_type(graceful, Coroutine[Any, Any, None])
    await graceful
    assert_type(gate.holders(), list[Holder])
    assert_type(gate.holders()[0].name, str)
    assert_type(gate.holders()[0].held_for, float)
    assert_type(await gate.acquire("req"), GateGuard)
    async with gate.acquire() as acquired:
        assert_type(acquired, GateGuard)

    @gate.guarded
    async def handle(request: str, *, retries: int = 0) -> bytes:
        return b""

    assert_type(await handle("GET /x", retries=2), bytes)
    await handle(1)  # type: ignore[arg-type]
    await handle("x", retries="2")  # type: ignore[arg-type]
    await handle()  # type: ignore[call-arg]

    async def flush(table: str, rows: int) -> None: ...

    gate.start_soon(tg, flush, "t", 3, name="flush")
    gate.start_soon(tg, flush, "t", "3")  # type: ignore[arg-type]
    gate.start_soon(tg, flush, "t")  # type: ignore[arg-type]
    gate.start_soon(tg, flush, "t", 3, name=1)  # type: ignore[arg-type]

    Gate(limit="3")  # type: ignore[arg-type]
    await gate.close(grace="5")  # type: ignore[arg-type]
    gate.enter(cancellable=1)  # type: ignore[arg-type]


async def service_api(gate: Gate, tg: TaskGroup, nursery: trio.Nursery) -> None:
    assert_type(gate.close_nowait(grace=5.0), None)
    assert_type(await gate.wait_closing(), None)
    assert_type(gate.parent, Gate | None)
    child = Gate("timeline", parent=gate, limit=10, warn_after=None, fast_acquire=True)
    assert_type(child, Gate)
    Gate(parent="tenant")  # type: ignore[arg-type]
    Gate(fast_acquire=1)  # type: ignore[arg-type]
    gate.close_nowait(5.0)  # type: ignore[call-arg]

    async def flush(table: str, rows: int) -> None: ...

    gate.start_soon(nursery, flush, "t", 3, name="flush", cancellable=True)
    gate.start_soon(nursery, flush, "t", "3")  # type: ignore[arg-type]
    gate.start_soon(object(), flush, "t", 3)  # type: ignore[arg-type]

    async def serve(port: int, *, task_status: TaskStatus[int]) -> None: ...

    assert_type(await gate.start(tg, serve, 8000, name="server"), Any)
    await gate.start(nursery, serve, 8000, cancellable=True)
    await gate.start(tg, serve, 8000, name=3)  # type: ignore[arg-type]

    async with gate.acquire("poll", cancellable=True) as guard:
        assert_type(guard, GateGuard)

    stats = gate.statistics()
    assert_type(stats, GateStatistics)
    assert_type(stats.count, int)
    assert_type(stats.closed, bool)
    assert_type(stats.limit, int | None)
    assert_type(stats.tasks_waiting, int)
    assert_type(stats.holders, tuple[Holder, ...])
    assert_type(stats.refused, int)
    assert_type(stats.last_close_duration, float | None)
    stats.count = 1  # type: ignore[misc]


class Tenant:
    def __init__(self) -> None:
        self.gate = Gate("tenant")

    @gated
    async def handle(self, request: str, *, retries: int = 0) -> bytes:
        return b""


class NoGate:
    @gated  # type: ignore[type-var]
    async def handle(self) -> None: ...


async def gated_api(tenant: Tenant) -> None:
    assert_type(await tenant.handle("GET /x", retries=2), bytes)
    await tenant.handle(1)  # type: ignore[arg-type]
    await tenant.handle("x", retries="2")  # type: ignore[arg-type]
    await tenant.handle()  # type: ignore[call-arg]


class Flusher:
    def __init__(self) -> None:
        self.gate = Gate("tenant", limit=2)

    @gated(name="flush", cancellable=True)
    async def flush(self, table: str, *, rows: int = 0) -> int:
        return rows

    @gated()
    async def ping(self) -> None: ...


async def issue_20_api(gate: Gate, tg: TaskGroup, flusher: Flusher) -> None:
    # The limit is settable, to an int only.
    gate.limit = 3
    gate.limit = 0
    gate.limit = None  # type: ignore[assignment]
    gate.limit = "3"  # type: ignore[assignment]
    assert_type(gate.limit, int | None)

    # gated and guarded, bare or with arguments, keep the exact signature.
    assert_type(await flusher.flush("t", rows=2), int)
    assert_type(await flusher.ping(), None)
    await flusher.flush(1)  # type: ignore[arg-type]
    await flusher.flush("t", rows="2")  # type: ignore[arg-type]
    gated(name=1)  # type: ignore[call-overload]

    @gate.guarded(name="handle", cancellable=True)
    async def handle(request: str, *, retries: int = 0) -> bytes:
        return b""

    assert_type(await handle("GET /x", retries=2), bytes)
    await handle(1)  # type: ignore[arg-type]
    await handle()  # type: ignore[call-arg]
    gate.guarded(cancellable="yes")  # type: ignore[call-overload]

    # to_thread: the result and the positional arguments are typed.
    def work(path: str, size: int) -> bytes:
        return b""

    assert_type(await gate.to_thread(work, "p", 3), bytes)
    assert_type(await gate.to_thread(work, "p", 3, name="w", abandon_on_cancel=True), bytes)
    await gate.to_thread(work, "p", "3")  # type: ignore[arg-type]
    await gate.to_thread(work, "p")  # type: ignore[arg-type]
    await gate.to_thread(work, "p", 3, name=1)  # type: ignore[arg-type]

    # GateClosed: the gate that refused and the one whose close it was.
    error = GateClosed("by hand")
    assert_type(error.gate, Gate | None)
    assert_type(error.closed_by, Gate | None)

    # Gate.start: what mypy cannot express (see the changelog). The value is
    # Any, and neither a function without task_status nor wrong positional
    # arguments is caught: these lines pass mypy --strict with no ignore.
    async def serve(port: int, *, task_status: TaskStatus[int]) -> None: ...
    async def no_status(port: int) -> None: ...

    assert_type(await gate.start(tg, serve, 8000), Any)
    await gate.start(tg, serve, "wrong type")
    await gate.start(tg, no_status, 8000)
    await gate.start(tg, serve, 8000, name=3)  # type: ignore[arg-type]
