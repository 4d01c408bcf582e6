"""The counter's rule over every way to hold a gate.

The rule is written once (``GateCore._count`` and ``GateGuard._release``), and
copied inline on the hot paths, each copy marked ``HOT COPY``: these tests run
each way to hold through the same three checks, so that every copy is held to
the rule: a hold counts while it lasts, a closed gate refuses it (a clone is
admitted, being part of work already admitted), and a close waits for it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager

import anyio
import pytest
from anyio import create_task_group, wait_all_tasks_blocked
from anyio.abc import TaskStatus

from anygate import Gate, GateClosed, GateGuard, gated
from helpers import Closer, no_hang, raises_in_group

pytestmark = pytest.mark.anyio

Way = Callable[[Gate], AbstractAsyncContextManager[None]]


@asynccontextmanager
async def via_enter(gate: Gate) -> AsyncIterator[None]:
    with gate.enter():
        yield


@asynccontextmanager
async def via_enter_named(gate: Gate) -> AsyncIterator[None]:
    with gate.enter("named"):
        yield


@asynccontextmanager
async def via_enter_cancellable(gate: Gate) -> AsyncIterator[None]:
    with gate.enter("cancellable", cancellable=True):
        yield


@asynccontextmanager
async def via_release(gate: Gate) -> AsyncIterator[None]:
    guard = gate.enter()
    try:
        yield
    finally:
        guard.release()


@asynccontextmanager
async def via_release_named(gate: Gate) -> AsyncIterator[None]:
    guard = gate.enter("named")
    try:
        yield
    finally:
        guard.release()


@asynccontextmanager
async def via_with_gate(gate: Gate) -> AsyncIterator[None]:
    with gate:
        yield


@asynccontextmanager
async def via_async_with_gate(gate: Gate) -> AsyncIterator[None]:
    async with gate:
        yield


@asynccontextmanager
async def via_await_acquire(gate: Gate) -> AsyncIterator[None]:
    guard = await gate.acquire()
    try:
        yield
    finally:
        guard.release()


@asynccontextmanager
async def via_await_acquire_named(gate: Gate) -> AsyncIterator[None]:
    guard = await gate.acquire("named")
    try:
        yield
    finally:
        guard.release()


@asynccontextmanager
async def via_async_with_acquire(gate: Gate) -> AsyncIterator[None]:
    async with gate.acquire():
        yield


@asynccontextmanager
async def via_async_with_acquire_cancellable(gate: Gate) -> AsyncIterator[None]:
    async with gate.acquire("cancellable", cancellable=True):
        yield


@asynccontextmanager
async def via_start_soon(gate: Gate) -> AsyncIterator[None]:
    started, done = anyio.Event(), anyio.Event()

    async def task() -> None:
        started.set()
        await done.wait()

    async with create_task_group() as tg:
        gate.start_soon(tg, task)
        await started.wait()
        try:
            yield
        finally:
            done.set()


@asynccontextmanager
async def via_start(gate: Gate) -> AsyncIterator[None]:
    done = anyio.Event()

    async def task(*, task_status: TaskStatus[None]) -> None:
        task_status.started()
        await done.wait()

    async with create_task_group() as tg:
        await gate.start(tg, task, name="started")
        try:
            yield
        finally:
            done.set()


@asynccontextmanager
async def via_guarded(gate: Gate) -> AsyncIterator[None]:
    inside, done = anyio.Event(), anyio.Event()

    @gate.guarded
    async def call() -> None:
        inside.set()
        await done.wait()

    async with create_task_group() as tg:
        await call_then_wait(tg, call, inside)
        try:
            yield
        finally:
            done.set()


class Owner:
    def __init__(self, gate: Gate) -> None:
        self.gate = gate
        self.inside = anyio.Event()
        self.done = anyio.Event()

    @gated
    async def call(self) -> None:
        self.inside.set()
        await self.done.wait()


@asynccontextmanager
async def via_gated(gate: Gate) -> AsyncIterator[None]:
    owner = Owner(gate)
    async with create_task_group() as tg:
        await call_then_wait(tg, owner.call, owner.inside)
        try:
            yield
        finally:
            owner.done.set()


async def call_then_wait(
    tg: anyio.abc.TaskGroup, call: Callable[[], object], inside: anyio.Event
) -> None:
    """Run ``call`` in a task and return once it holds, or raise what it raised."""
    errors: list[BaseException] = []

    async def run() -> None:
        try:
            await call()  # type: ignore[misc]
        except GateClosed as exc:
            errors.append(exc)
            inside.set()

    tg.start_soon(run)
    await inside.wait()
    if errors:
        raise errors[0]


ENTRIES: list[Way] = [
    via_enter,
    via_enter_named,
    via_enter_cancellable,
    via_release,
    via_release_named,
    via_with_gate,
    via_async_with_gate,
    via_await_acquire,
    via_await_acquire_named,
    via_async_with_acquire,
    via_async_with_acquire_cancellable,
    via_start_soon,
    via_start,
    via_guarded,
    via_gated,
]


def clone_of(name: str | None, cancellable: bool = False) -> Way:
    @asynccontextmanager
    async def via_clone(gate: Gate) -> AsyncIterator[None]:
        # The base hold is the clone's parent's, and is let go of first.
        base = gate.enter("base") if not gate.closed else None
        source = base if base is not None else BASES[gate]
        clone = source.clone(name, cancellable=cancellable)
        if base is not None:
            base.release()
        with clone:
            yield

    via_clone.__name__ = f"via_clone_{name}_{cancellable}"
    return via_clone


BASES: dict[Gate, GateGuard] = {}
CLONES = [clone_of(None), clone_of("named"), clone_of("cancellable", cancellable=True)]
EVERY_WAY = [pytest.param(way, id=way.__name__) for way in [*ENTRIES, *CLONES]]


class TestEveryWayToHold:
    @pytest.mark.parametrize("way", EVERY_WAY)
    async def test_counts_while_it_holds(self, way: Way) -> None:
        gate = Gate("tenant")
        async with way(gate):
            assert gate.count == 1
        assert gate.count == 0
        assert gate.holders() == []

    @pytest.mark.parametrize("way", [pytest.param(w, id=w.__name__) for w in ENTRIES])
    async def test_a_closed_gate_refuses_it(self, way: Way) -> None:
        gate = Gate("tenant")
        gate.close_nowait()
        admitted = False
        with raises_in_group(GateClosed):
            async with way(gate):
                admitted = True
        assert not admitted, "a closed gate admitted an entry"
        assert gate.count == 0
        assert gate.statistics().refused == 1
        with no_hang("close() after a refused entry"):
            await gate.close()

    @pytest.mark.parametrize("way", [pytest.param(w, id=w.__name__) for w in CLONES])
    async def test_a_clone_is_admitted_by_a_closed_gate(self, way: Way) -> None:
        gate = Gate("tenant")
        guard = gate.enter("held")
        BASES[gate] = guard
        gate.close_nowait()
        async with way(gate):
            assert gate.count == 2
        guard.release()
        assert gate.count == 0
        with no_hang("close() after the clone and its source let go"):
            await gate.close()
        del BASES[gate]

    @pytest.mark.parametrize("way", EVERY_WAY)
    async def test_a_close_waits_for_it(self, way: Way) -> None:
        gate = Gate("tenant")
        entered, leave = anyio.Event(), anyio.Event()

        async def hold() -> None:
            async with way(gate):
                entered.set()
                await leave.wait()

        closer = Closer(gate)
        with no_hang("close() after the last hold ended"):
            async with create_task_group() as tg:
                tg.start_soon(hold)
                await entered.wait()
                tg.start_soon(closer.run)
                await wait_all_tasks_blocked()
                assert not closer.done
                assert gate.count == 1
                leave.set()
        assert closer.done

    @pytest.mark.parametrize("way", EVERY_WAY)
    async def test_a_bounded_gate_counts_it_too(self, way: Way) -> None:
        gate = Gate("tenant", limit=2)
        async with way(gate):
            assert gate.count == 1
            assert gate.statistics().tasks_waiting == 0
        assert gate.count == 0
