"""Many holders at once: bounds on counts and bytes, never on time."""

from __future__ import annotations

import gc
import tracemalloc

import anyio
import pytest
from anyio import create_task_group, wait_all_tasks_blocked

from anygate import Gate, GateGuard
from helpers import Closer

TASKS = 100_000
GUARDS = 1_000_000
MAX_BYTES_PER_GUARD = 64


class TestLoad:
    @pytest.mark.anyio
    async def test_close_waits_for_a_hundred_thousand_tasks(self) -> None:
        gate = Gate(warn_after=None)
        go = anyio.Event()
        released = 0

        async def request() -> None:
            nonlocal released
            with gate:
                await go.wait()
                await anyio.lowlevel.checkpoint()
            released += 1

        closer = Closer(gate)
        async with create_task_group() as tg:
            for _ in range(TASKS):
                tg.start_soon(request)
            await wait_all_tasks_blocked()
            assert gate.count == TASKS
            tg.start_soon(closer.run)
            await wait_all_tasks_blocked()
            assert not closer.done
            go.set()
        assert closer.done
        assert released == TASKS
        assert gate.count == 0

    def test_a_million_guards_held_at_once(self) -> None:
        gate = Gate()
        guards: list[GateGuard | None] = [None] * GUARDS
        gc.collect()
        tracemalloc.start()
        try:
            before = tracemalloc.get_traced_memory()[0]
            for i in range(GUARDS):
                guards[i] = gate.enter()
            per_guard = (tracemalloc.get_traced_memory()[0] - before) / GUARDS
        finally:
            tracemalloc.stop()
        assert gate.count == GUARDS
        assert per_guard <= MAX_BYTES_PER_GUARD, f"{per_guard:.1f} bytes per guard"
        for guard in guards:
            assert guard is not None
            guard.release()
        assert gate.count == 0
