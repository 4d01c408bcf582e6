"""Bounded gates: first come, first served, on every backend.

Issue 17, failure 5. The old core's ``acquire()`` took its checkpoint before it
joined the line or took its hold, so the line's order was the order in which
the scheduler resumed the tasks: on trio, which shuffles each batch of runnable
tasks, three tasks looping on ``async with gate.acquire()`` came in as
``[1, 2, 3, 1, 2, 3, 3, 2, 1, ...]`` after first arriving as ``[3, 2, 1]``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

import anyio
import anyio.lowlevel
import pytest
from anyio import CancelScope, CapacityLimiter, create_task_group, wait_all_tasks_blocked

from anygate import Gate
from helpers import no_hang

pytestmark = pytest.mark.anyio

#: Rounds of three tasks: on trio, an order that is the scheduler's, not the
#: calls', is kept by chance with odds of about (1/2) ** ROUNDS.
ROUNDS = 50
TASKS = 3

Acquire = Callable[[Gate], AbstractAsyncContextManager[Any]]


@asynccontextmanager
async def awaited(gate: Gate) -> AsyncIterator[None]:
    guard = await gate.acquire()
    try:
        yield
    finally:
        guard.release()


ACQUIRES = [
    # The hot path of an unnamed hold, inlined in Acquisition.__aenter__.
    pytest.param(lambda gate: gate.acquire(), id="async-with-acquire()"),
    pytest.param(lambda gate: gate.acquire("named"), id="async-with-acquire(name)"),
    pytest.param(
        lambda gate: gate.acquire("poll", cancellable=True), id="async-with-acquire(cancellable)"
    ),
    pytest.param(awaited, id="await-acquire()"),
]


async def admissions(
    acquire: Callable[[], AbstractAsyncContextManager[Any]],
) -> tuple[list[int], list[int]]:
    """Three tasks that each loop on ``async with acquire()``: the order of
    their calls, and the order in which they got in.

    Nothing is awaited inside the block: the only checkpoint of a round is the
    acquire's own. Taken before the hold, as the old core did, it makes every
    acquire find room, and the order the scheduler's; taken after the hold, the
    other tasks find the gate full and join the line in the order they call.
    """
    calls: list[int] = []
    admitted: list[int] = []

    async def loop(task: int) -> None:
        for _ in range(ROUNDS):
            calls.append(task)
            async with acquire():
                admitted.append(task)

    with no_hang("tasks looping on a bounded acquire"):
        async with create_task_group() as tg:
            for task in range(TASKS):
                tg.start_soon(loop, task)
    return calls, admitted


class TestFirstComeFirstServed:
    @pytest.mark.parametrize("acquire", ACQUIRES)
    async def test_admitted_in_the_order_of_the_calls(self, acquire: Acquire) -> None:
        gate = Gate("pool", limit=1)
        calls, admitted = await admissions(lambda: acquire(gate))
        assert len(admitted) == ROUNDS * TASKS
        assert admitted == calls, "admitted in the scheduler's order, not the calls'"
        assert gate.count == 0
        assert gate.statistics().tasks_waiting == 0

    async def test_as_anyio_s_capacity_limiter_is(self) -> None:
        # The yardstick: anyio's CapacityLimiter, on the same three loops.
        limiter = CapacityLimiter(1)
        calls, admitted = await admissions(lambda: limiter)
        assert admitted == calls


class TestCancelledAtTheCheckpointAfterItsHold:
    """``acquire()`` takes its hold (there is room) and then checkpoints; a task
    cancelled there holds nothing after, and the task that joined the line
    behind it meanwhile gets its place.

    The checkpoint is caught as it is called (``anyio.lowlevel.checkpoint``),
    and there the first task waits, shielded, until the second is in line;
    then it is cancelled. The old core checkpointed before it took its hold:
    nothing was held there, and the order was the scheduler's.
    """

    @pytest.mark.parametrize("acquire", ACQUIRES)
    async def test_holds_nothing_and_passes_its_place_on(
        self, acquire: Acquire, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        gate = Gate("pool", limit=1)
        first_scope = CancelScope()
        first_task: list[int] = []
        at_checkpoint: list[tuple[int, int]] = []  # (count, tasks waiting)
        entered: list[str] = []
        checkpoint = anyio.lowlevel.checkpoint

        async def second() -> None:
            async with acquire(gate):
                entered.append("second")

        async def checkpoint_with_the_second_in_line() -> None:
            if not at_checkpoint and anyio.get_current_task().id in first_task:
                count = gate.count
                with CancelScope(shield=True):
                    tg.start_soon(second)
                    await wait_all_tasks_blocked()
                at_checkpoint.append((count, gate.statistics().tasks_waiting))
                first_scope.cancel()
            await checkpoint()

        async def first() -> None:
            first_task.append(anyio.get_current_task().id)
            with first_scope:
                async with acquire(gate):
                    entered.append("first")

        monkeypatch.setattr(anyio.lowlevel, "checkpoint", checkpoint_with_the_second_in_line)
        with no_hang("the second acquire(), once the first was cancelled at its checkpoint"):
            async with create_task_group() as tg:
                tg.start_soon(first)
        assert at_checkpoint, "acquire() never checkpointed: the test needs updating"
        assert at_checkpoint == [(1, 1)], "the first acquire() checkpointed before its hold"
        assert first_scope.cancelled_caught
        assert entered == ["second"]
        assert gate.count == 0
        assert gate.holders() == []
        assert gate.statistics().tasks_waiting == 0
        gate.enter().release()  # the room is free for whoever comes next
