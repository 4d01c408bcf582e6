"""Closing: a close's grace on a mock clock.

Issue 17, failure 6 (its last part). The old core measured the time left of a
grace with ``time.monotonic()`` when a cancellable block was entered, and set
the block's deadline that far ahead on the loop's clock. A mock clock that had
moved past the deadline did not move ``time.monotonic()``: the block entered
after the grace ran out ran on for another whole grace (and a second more while
a task awaited the close), and one entered during the grace ran past it.

trio only: ``MockClock`` is trio's, and asyncio has no mock clock of its own.
"""

from __future__ import annotations

import anyio
import pytest
from anyio import create_task_group, wait_all_tasks_blocked
from anyio.abc import TaskGroup
from trio.testing import MockClock

from anygate import Gate, GateGuard

pytestmark = pytest.mark.anyio

GRACE = 10.0
#: Seconds a deadline may be off on the mock clock: the real time the close
#: takes between reading the time and converting its deadline to the loop's
#: clock. The old core was off by whole seconds.
SLACK = 0.1


async def advance(clock: MockClock, seconds: float) -> None:
    """Let ``seconds`` pass on the mock clock, and every task run."""
    if clock.autojump_threshold == 0:
        await anyio.sleep(seconds)
    else:
        clock.jump(seconds)
    await wait_all_tasks_blocked()


class TimedBlock:
    """The block of a cancellable guard, run in a task: when it began and
    ended on the loop's clock."""

    def __init__(self, guard: GateGuard) -> None:
        self.guard = guard
        self.entered_at: float | None = None
        self.ended_at: float | None = None

    async def run(self) -> None:
        with self.guard:
            self.entered_at = anyio.current_time()
            await anyio.sleep_forever()
        self.ended_at = anyio.current_time()

    def ended(self) -> float | None:
        """When the block ended on the loop's clock, or ``None`` while it runs."""
        return self.ended_at


async def close(gate: Gate, awaited: bool, tg: TaskGroup) -> None:
    """Close ``gate`` with a grace: awaited in a task of this loop, whose task
    then cancels the blocks itself at the deadline, or not awaited at all."""
    if awaited:

        async def closer() -> None:
            await gate.close(grace=GRACE)

        tg.start_soon(closer)
        await wait_all_tasks_blocked()
    else:
        gate.close_nowait(grace=GRACE)


AWAITED = [
    pytest.param(False, id="close-not-awaited"),
    pytest.param(True, id="close-awaited-in-the-loop"),
]


class TestGraceOnAMockClock:
    """trio only, on its ``MockClock``: in this class, ``anyio_backend`` is trio
    with a mock clock."""

    @pytest.fixture(params=["autojump", "jump"])
    def clock(self, request: pytest.FixtureRequest) -> MockClock:
        """A mock clock that jumps by itself when every task waits, or only when
        the test jumps it."""
        return MockClock(autojump_threshold=0) if request.param == "autojump" else MockClock()

    @pytest.fixture
    def anyio_backend(self, clock: MockClock) -> tuple[str, dict[str, object]]:
        return ("trio", {"clock": clock})

    @pytest.mark.parametrize("awaited", AWAITED)
    async def test_a_block_entered_after_the_grace_ran_out_is_cancelled_at_once(
        self, clock: MockClock, awaited: bool
    ) -> None:
        gate = Gate("g", warn_after=None)
        late = TimedBlock(gate.enter("late", cancellable=True))  # its block begins later
        async with create_task_group() as tg:
            await close(gate, awaited, tg)
            await advance(clock, 2 * GRACE)
            tg.start_soon(late.run)
            # The block's task runs now; a mock clock that jumps does so only
            # once every task waits, and this one waits for them first.
            await wait_all_tasks_blocked()
            assert late.ended() is not None, (
                "a block entered after its gate's grace ran out was not cancelled at once"
            )
            assert late.ended() == late.entered_at
        assert late.guard.cancelled_caught
        assert gate.count == 0

    @pytest.mark.parametrize("awaited", AWAITED)
    async def test_a_block_entered_during_the_grace_is_cancelled_at_its_end(
        self, clock: MockClock, awaited: bool
    ) -> None:
        gate = Gate("g", warn_after=None)
        block = TimedBlock(gate.enter("early", cancellable=True))  # its block begins later
        async with create_task_group() as tg:
            await close(gate, awaited, tg)
            closed_at = anyio.current_time()
            await advance(clock, GRACE / 2)
            tg.start_soon(block.run)
            await wait_all_tasks_blocked()
            assert block.entered_at == pytest.approx(closed_at + GRACE / 2, abs=SLACK)
            assert block.ended() is None, "cancelled before its gate's grace ran out"
            await advance(clock, GRACE / 2)
            ended_at = block.ended()
            assert ended_at is not None, (
                f"still running at the end of the grace, {anyio.current_time() - closed_at}s "
                "after the close on the loop's clock"
            )
            assert ended_at == pytest.approx(closed_at + GRACE, abs=SLACK)
        assert block.guard.cancelled_caught
        assert gate.count == 0
