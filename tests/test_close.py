"""Closing: ``close()``, ``close_nowait()``, the grace and its reason,
``wait_closing()``, reopening."""

from __future__ import annotations

import functools
import logging
import math
import time
from collections.abc import Awaitable, Callable

import anyio
import anyio.abc
import anyio.lowlevel
import anyio.to_thread
import pytest
from anyio import (
    CancelScope,
    ClosedResourceError,
    create_task_group,
    wait_all_tasks_blocked,
)
from anyio.abc import TaskGroup
from trio.testing import MockClock

from anygate import Gate, GateClosed, GateGuard
from helpers import (
    CLOCK_SLACK,
    GRACE,
    Block,
    Closer,
    Warned,
    hold_back_forever,
    in_thread,
    no_hang,
    private,
    rearms,
    reason_of,
    scope_of,
    sleep_until_cancelled,
    waiters,
)

pytestmark = pytest.mark.anyio


MOCK_GRACE = 10.0


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
            await gate.close(grace=MOCK_GRACE)

        tg.start_soon(closer)
        await wait_all_tasks_blocked()
    else:
        gate.close_nowait(grace=MOCK_GRACE)


AWAITED = [
    pytest.param(False, id="close-not-awaited"),
    pytest.param(True, id="close-awaited-in-the-loop"),
]


REASON = f"gate 'tenant' closed and its grace of {GRACE:g}s ran out"


class Poller:
    """A request that holds a cancellable guard until released or cancelled."""

    def __init__(self, gate: Gate, name: str = "poll") -> None:
        self.gate = gate
        self.name = name
        self.release = anyio.Event()
        self.guard: GateGuard | None = None
        self.after_block = False
        self.finished = anyio.Event()

    async def run(self) -> None:
        with self.gate.enter(self.name, cancellable=True) as guard:
            self.guard = guard
            await self.release.wait()
        self.after_block = True
        self.finished.set()

    @property
    def cancelled(self) -> bool:
        assert self.guard is not None
        return self.guard.cancelled_caught


class TestClose:
    async def test_closed_by_the_call(self) -> None:
        gate = Gate()
        guard = gate.enter()
        drained = gate.close()
        assert gate.closed
        with pytest.raises(GateClosed):
            gate.enter()
        guard.release()
        await drained

    async def test_closed_when_cancelled_before_first_yield(self) -> None:
        gate = Gate()
        with CancelScope() as scope:
            scope.cancel()
            await gate.close()
        assert scope.cancelled_caught
        assert gate.closed

    async def test_refuses_entry_at_once(self) -> None:
        gate = Gate("tenant 42")
        guard = gate.enter()
        closer = Closer(gate)
        async with create_task_group() as tg:
            tg.start_soon(closer.run)
            await wait_all_tasks_blocked()
            assert gate.closed
            with pytest.raises(GateClosed, match="gate 'tenant 42' is closed"):
                gate.enter()
            with pytest.raises(GateClosed), gate:
                pass
            with pytest.raises(GateClosed):
                async with gate:
                    pass
            with pytest.raises(GateClosed):
                gate.check()
            assert gate.try_enter() is None
            assert gate.count == 1
            guard.release()
        assert closer.done

    async def test_check_on_open_gate(self) -> None:
        gate = Gate()
        gate.check()

    async def test_waits_for_the_last_holder(self) -> None:
        gate = Gate()
        first, second = gate.enter(), gate.enter()
        closer = Closer(gate)
        async with create_task_group() as tg:
            tg.start_soon(closer.run)
            await wait_all_tasks_blocked()
            first.release()
            await wait_all_tasks_blocked()
            assert not closer.done
            second.clone().release()
            await wait_all_tasks_blocked()
            assert not closer.done
            second.release()
            await wait_all_tasks_blocked()
            assert closer.done

    async def test_woken_by_with_block_exit(self) -> None:
        gate = Gate()
        closer = Closer(gate)
        async with create_task_group() as tg:
            with gate:
                tg.start_soon(closer.run)
                await wait_all_tasks_blocked()
                assert not closer.done
            await wait_all_tasks_blocked()
            assert closer.done

        gate.reopen()
        closer = Closer(gate)
        async with create_task_group() as tg:
            async with gate:
                tg.start_soon(closer.run)
                await wait_all_tasks_blocked()
                assert not closer.done
            await wait_all_tasks_blocked()
            assert closer.done

    async def test_returns_at_once_when_empty(self) -> None:
        gate = Gate()
        await gate.close()
        assert gate.closed
        await gate.close()

    async def test_every_closer_returns(self) -> None:
        gate = Gate()
        guard = gate.enter()
        closers = [Closer(gate) for _ in range(3)]
        async with create_task_group() as tg:
            for closer in closers:
                tg.start_soon(closer.run)
            await wait_all_tasks_blocked()
            assert not any(closer.done for closer in closers)
            guard.release()
        assert all(closer.done for closer in closers)
        await gate.close()

    async def test_cancelled_closer(self) -> None:
        gate = Gate()
        guard = gate.enter()
        closer = Closer(gate)
        async with create_task_group() as tg:
            tg.start_soon(closer.run)
            await wait_all_tasks_blocked()
            closer.scope.cancel()
        assert closer.cancelled
        assert not closer.done
        assert gate.closed
        assert not guard.released
        assert gate.count == 1

        closer = Closer(gate)
        async with create_task_group() as tg:
            tg.start_soon(closer.run)
            await wait_all_tasks_blocked()
            assert not closer.done
            guard.release()
        assert closer.done

    async def test_close_error_is_a_closed_resource_error(self) -> None:
        gate = Gate()
        await gate.close()
        with pytest.raises(ClosedResourceError, match=r"^the gate is closed$"):
            gate.enter()


class TestReopen:
    async def test_reopen_after_drain(self) -> None:
        gate = Gate()
        await gate.close()
        gate.reopen()
        assert not gate.closed
        gate.enter().release()

    async def test_reopen_refused_while_held(self) -> None:
        gate = Gate()
        guard = gate.enter()
        async with create_task_group() as tg:
            tg.start_soon(gate.close)
            await wait_all_tasks_blocked()
            with pytest.raises(RuntimeError, match="still held"):
                gate.reopen()
            assert gate.closed
            guard.release()
        gate.reopen()

    async def test_reopen_refused_when_open(self) -> None:
        with pytest.raises(RuntimeError, match="not closed"):
            Gate().reopen()


class TestCloseNowait:
    async def test_shuts_at_once_and_close_waits(self) -> None:
        gate = Gate()
        guard = gate.enter()
        assert gate.close_nowait() is None  # type: ignore[func-returns-value]
        assert gate.closed
        with pytest.raises(GateClosed):
            gate.enter()
        done = anyio.Event()

        async def close() -> None:
            await gate.close()
            done.set()

        async with create_task_group() as tg:
            tg.start_soon(close)
            await wait_all_tasks_blocked()
            assert not done.is_set()
            guard.release()
        assert done.is_set()

    async def test_idempotent_and_never_awaited_leaves_no_warning(self) -> None:
        gate = Gate()
        gate.close_nowait()
        gate.close_nowait(grace=1)
        gate.close_nowait()
        assert gate.closed
        # filterwarnings=error: a "never awaited" RuntimeWarning would fail here.
        await gate.close()

    async def test_grace_runs_out_with_no_task_waiting(self) -> None:
        gate = Gate()
        block = Block(gate)
        async with create_task_group() as tg:
            tg.start_soon(block.run)
            await block.entered.wait()
            closed_at = time.monotonic()
            gate.close_nowait(grace=GRACE)
            await block.ended.wait()
        assert block.cancelled
        assert block.ended_at - closed_at >= GRACE - CLOCK_SLACK
        assert gate.count == 0
        await gate.close()

    async def test_grace_counts_from_the_call_of_close(self) -> None:
        gate = Gate()
        block = Block(gate)
        async with create_task_group() as tg:
            tg.start_soon(block.run)
            await block.entered.wait()
            closed_at = time.monotonic()
            drained = gate.close(grace=GRACE)
            # Nobody awaits the drain until the grace has cancelled the block.
            await block.ended.wait()
            assert block.ended_at - closed_at >= GRACE - CLOCK_SLACK
            await drained
        assert block.cancelled

    async def test_cancelled_waiter_does_not_revoke_the_grace(self) -> None:
        gate = Gate()
        block = Block(gate)
        async with create_task_group() as tg:
            tg.start_soon(block.run)
            await block.entered.wait()
            with anyio.CancelScope() as scope:
                scope.cancel()
                await gate.close(grace=GRACE)
            await block.ended.wait()
        assert block.cancelled

    async def test_grace_zero_cancels_at_once_with_a_reason(self) -> None:
        gate = Gate("tenant")
        block = Block(gate)
        async with create_task_group() as tg:
            tg.start_soon(block.run)
            await block.entered.wait()
            await gate.close(grace=0)
        assert "gate 'tenant' closed and its grace of 0s ran out" in block.reason

    async def test_grace_running_out_later_cancels_with_a_reason(self) -> None:
        # The task awaiting the close cancels the block at the deadline; the
        # scope's own deadline, which would say "deadline exceeded", is held back.
        gate = Gate("tenant")
        block = Block(gate)
        async with create_task_group() as tg:
            tg.start_soon(block.run)
            await block.entered.wait()
            closed_at = time.monotonic()
            await gate.close(grace=GRACE)
            # On the loop's clock: uvloop's is read once an iteration, in whole
            # milliseconds, so its timers may fire that much early by this one.
            assert time.monotonic() - closed_at >= GRACE - CLOCK_SLACK
        assert block.cancelled
        assert f"gate 'tenant' closed and its grace of {GRACE:g}s ran out" in block.reason

    async def test_a_waiter_cancelled_during_the_grace_gives_back_the_deadline(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        # Held back for an hour: only the deadline given back can end the block.
        monkeypatch.setattr("anygate._closing._HOLD_BACK", 3600.0)
        gate = Gate()
        block = Block(gate)
        with anyio.fail_after(60):
            async with create_task_group() as tg:
                tg.start_soon(block.run)
                await block.entered.wait()
                closed_at = time.monotonic()
                with anyio.move_on_after(GRACE / 5):
                    await gate.close(grace=GRACE)
                # Nobody awaits the close now: the scope's own deadline fires.
                await block.ended.wait()
                assert block.ended_at - closed_at >= GRACE - CLOCK_SLACK
        assert block.cancelled

    async def test_earliest_deadline_wins(self) -> None:
        gate = Gate()
        block = Block(gate)
        async with create_task_group() as tg:
            tg.start_soon(block.run)
            await block.entered.wait()
            gate.close_nowait(grace=3600)
            gate.close_nowait()  # None adds no deadline and removes none
            gate.close_nowait(grace=GRACE)
            gate.close_nowait(grace=7200)
            await block.ended.wait()
        assert block.cancelled

    async def test_a_block_entered_after_the_deadline_is_cancelled_at_once(self) -> None:
        gate = Gate()
        guard = gate.enter("request")
        gate.close_nowait(grace=0)
        with guard.clone("late part", cancellable=True) as late:
            await anyio.sleep_forever()
        assert late.cancelled_caught
        guard.release()
        await gate.close()

    async def test_reopen_starts_afresh(self) -> None:
        gate = Gate()
        gate.close_nowait(grace=0)
        await gate.close()
        gate.reopen()
        block = Block(gate)
        async with create_task_group() as tg:
            tg.start_soon(block.run)
            await block.entered.wait()
            gate.close_nowait()
            await wait_all_tasks_blocked()
            assert not block.ended.is_set()
            block.stop.set()
        assert not block.cancelled

    async def test_bad_grace(self) -> None:
        gate = Gate()
        with pytest.raises(ValueError, match="grace must be a number of seconds >= 0"):
            gate.close_nowait(grace=-1)
        with pytest.raises(TypeError, match="grace must be a number of seconds or None, not str"):
            gate.close_nowait(grace="1")  # type: ignore[arg-type]
        assert not gate.closed


class TestMockClock:
    """On trio's MockClock, the close's timers follow the loop's clock, as the
    blocks' cancel scopes do: a wait that judged them by the real clock would
    spin, jumping the mock clock far past them."""

    @staticmethod
    def run(test: Callable[[], Awaitable[None]]) -> None:
        from trio.testing import MockClock

        anyio.run(test, backend="trio", backend_options={"clock": MockClock(autojump_threshold=0)})

    def test_the_warning(self, warned: Warned) -> None:
        warned_after: list[float] = []

        async def test() -> None:
            gate = Gate("g", warn_after=10)
            guard = gate.enter("slow")
            started = anyio.current_time()

            async def close() -> None:
                await gate.close()

            async with create_task_group() as tg:
                tg.start_soon(close)
                await warned.wait()
                warned_after.append(anyio.current_time() - started)
                guard.release()

        self.run(test)
        assert warned_after == [pytest.approx(10, abs=0.1)]

    def test_the_grace(self) -> None:
        ended_after: list[float] = []
        reasons: list[str] = []

        async def test() -> None:
            gate = Gate("g", warn_after=None)
            block = Block(gate)
            async with create_task_group() as tg:
                tg.start_soon(block.run)
                await block.entered.wait()
                started = anyio.current_time()
                await gate.close(grace=30)
                ended_after.append(anyio.current_time() - started)
            reasons.append(block.reason)

        self.run(test)
        assert ended_after == [pytest.approx(30, abs=0.1)]
        assert "gate 'g' closed and its grace of 30s ran out" in reasons[0]


class TestWaitClosing:
    async def test_returns_when_closed_before_the_drain(self) -> None:
        gate = Gate()
        guard = gate.enter()
        woken: list[bool] = []

        async def background() -> None:
            await gate.wait_closing()
            woken.append(gate.count == 1)

        async with create_task_group() as tg:
            tg.start_soon(background)
            tg.start_soon(background)
            await wait_all_tasks_blocked()
            assert woken == []
            gate.close_nowait()
        assert woken == [True, True]
        guard.release()
        await gate.close()

    async def test_at_once_when_already_closed_and_a_checkpoint(self) -> None:
        gate = Gate()
        gate.close_nowait()
        with anyio.CancelScope() as scope:
            scope.cancel()
            await gate.wait_closing()
        assert scope.cancelled_caught

    async def test_cancellable_and_leaves_nothing_behind(self) -> None:
        gate = Gate()
        with anyio.move_on_after(0):
            await gate.wait_closing()
        assert not gate.closed
        gate.close_nowait()
        await gate.wait_closing()

    def test_across_runs_on_different_backends(self) -> None:
        gate = Gate()

        async def wait_then(backend_closes: bool) -> None:
            async with create_task_group() as tg:
                tg.start_soon(gate.wait_closing)
                await wait_all_tasks_blocked()
                if backend_closes:
                    gate.close_nowait()
                else:
                    tg.cancel_scope.cancel()

        anyio.run(wait_then, False, backend="asyncio")
        anyio.run(wait_then, False, backend="trio")
        anyio.run(wait_then, True, backend="trio")
        assert gate.closed
        anyio.run(gate.wait_closing, backend="asyncio")

    async def test_a_background_loop_finishes_its_item_and_exits(self) -> None:
        gate = Gate()
        items: list[int] = []
        busy = anyio.Event()
        finish = anyio.Event()

        async def flush_loop() -> None:
            async with create_task_group() as tg:

                async def stop_when_closing() -> None:
                    await gate.wait_closing()
                    tg.cancel_scope.cancel()

                tg.start_soon(stop_when_closing)
                for item in range(100):
                    with anyio.CancelScope(shield=True):
                        busy.set()
                        await finish.wait()
                        items.append(item)
                    await anyio.lowlevel.checkpoint()

        async with create_task_group() as tg:
            gate.start_soon(tg, flush_loop, name="flush")
            await busy.wait()
            drained = gate.close()
            finish.set()
            await drained
        assert items == [0]


class TestDifferentTaskExit:
    async def test_a_cancellable_block_left_in_another_task_raises(self) -> None:
        gate = Gate()
        guard = gate.enter("stream", cancellable=True)
        entered, left = anyio.Event(), anyio.Event()

        async def enter() -> None:
            guard.__enter__()
            scope = private(guard)._record.scope
            entered.set()
            await left.wait()
            # Mend what the other task could not, so this task ends cleanly.
            scope.__exit__(None, None, None)

        async with create_task_group() as tg:
            tg.start_soon(enter)
            await entered.wait()
            with pytest.raises(RuntimeError, match="left in another task than the one"):
                guard.__exit__(None, None, None)
            assert guard.released
            assert gate.count == 0
            left.set()


class TestCloseReason:
    """The cancellation of a block whose grace ran out names the gate and grace
    whenever a task in its event loop awaits the close (Closing.escalate_here)."""

    @pytest.mark.parametrize("first", [None, 3600.0], ids=["no-grace", "long-grace"])
    @pytest.mark.parametrize("where", ["same-thread", "other-thread"])
    async def test_deadline_tightened_while_a_task_awaits_the_close(
        self, first: float | None, where: str
    ) -> None:
        # A task awaits close(); then a close_nowait() brings the deadline
        # forward. That task still awaits the close as the new grace runs out,
        # so the block's cancellation must name the gate and its grace.
        gate = Gate("tenant")
        block = Block(gate)
        closer = Closer(gate, first)
        with no_hang("the block, once the tightened grace ran out"):
            async with create_task_group() as tg:
                tg.start_soon(block.run)
                await block.entered.wait()
                tg.start_soon(closer.run)
                await wait_all_tasks_blocked()
                if where == "same-thread":
                    gate.close_nowait(grace=GRACE)
                else:
                    in_thread(lambda: gate.close_nowait(grace=GRACE))
                await block.ended.wait()
        assert closer.done
        assert block.cancelled
        assert REASON in block.reason

    async def test_start_soon_cancellable_then_close(self) -> None:
        # The task has not started when close() holds back the blocks in its
        # loop; its block is entered afterwards, while close() is awaited.
        gate = Gate("tenant")
        reasons: list[str] = []

        async def work() -> None:
            await sleep_until_cancelled(reasons)

        with no_hang("close() of a gate with a cancellable task"):
            async with create_task_group() as tg:
                gate.start_soon(tg, work, name="poll", cancellable=True)
                await gate.close(grace=GRACE)
        assert len(reasons) == 1
        assert REASON in reasons[0]

    async def test_cancellable_clone_entered_after_the_hold_back(self) -> None:
        gate = Gate("tenant")
        holder = gate.enter("request")
        closer = Closer(gate, GRACE)
        reasons: list[str] = []

        async def late_part() -> None:
            with holder.clone("late", cancellable=True):
                await sleep_until_cancelled(reasons)
            holder.release()

        with no_hang("close() with a late cancellable clone"):
            async with create_task_group() as tg:
                tg.start_soon(closer.run)
                await wait_all_tasks_blocked()
                tg.start_soon(late_part)
        assert closer.done
        assert len(reasons) == 1
        assert REASON in reasons[0]

    async def test_block_of_a_child_while_the_parent_s_close_is_awaited(self) -> None:
        parent = Gate("tenant")
        child = Gate("child", parent=parent)
        block = Block(child)
        with no_hang("the parent's close"):
            async with create_task_group() as tg:
                tg.start_soon(block.run)
                await block.entered.wait()
                await parent.close(grace=GRACE)
        assert block.cancelled
        assert f"closed and its grace of {GRACE:g}s ran out" in block.reason

    async def test_one_of_two_closers_cancelled_gives_back_the_other_s_hold(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        # Two tasks await the close in the block's loop; one is cancelled. The
        # other still waits, so the scope's deadline must stay held back: given
        # back to the close's deadline, it races that task and anyio's "deadline
        # exceeded" wins.
        monkeypatch.setattr("anygate._closing._HOLD_BACK", 3600.0)
        gate = Gate("tenant")
        block = Block(gate)
        first = Closer(gate, GRACE)
        second = Closer(gate, GRACE)
        with no_hang("the block, once the grace ran out"):
            async with create_task_group() as tg:
                tg.start_soon(block.run)
                await block.entered.wait()
                tg.start_soon(first.run)
                tg.start_soon(second.run)
                await wait_all_tasks_blocked()
                second.scope.cancel()
                await wait_all_tasks_blocked()
                scope = private(block.guard)._record.scope
                held_back_by = scope.deadline - anyio.current_time()
                await block.ended.wait()
        assert first.done
        assert held_back_by > 1000, "the remaining closer's hold was given back"
        assert REASON in block.reason

    async def test_escalation_queued_by_another_thread_undoes_the_hold(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        # A close from another thread queues the deadline for the block's loop;
        # a task in that loop then awaits close() and holds the deadline back
        # before the queued call runs. That call must not undo the hold.
        monkeypatch.setattr("anygate._closing._HOLD_BACK", 3600.0)
        gate = Gate("tenant")
        block = Block(gate)
        held_back_by: list[float] = []

        async def look() -> None:
            await wait_all_tasks_blocked()
            scope = private(block.guard)._record.scope
            held_back_by.append(scope.deadline - anyio.current_time())

        with no_hang("the block, once the grace ran out"):
            async with create_task_group() as tg:
                tg.start_soon(block.run)
                await block.entered.wait()
                in_thread(lambda: gate.close_nowait(grace=GRACE))
                tg.start_soon(look)
                await gate.close()  # holds back before the queued call can run
        assert held_back_by[0] > 1000, "the queued escalation gave the hold back"
        assert REASON in block.reason

    async def test_both_of_two_closers_waiting(self) -> None:
        gate = Gate("tenant")
        block = Block(gate)
        closers = [Closer(gate, GRACE), Closer(gate, GRACE)]
        with no_hang("the block, once the grace ran out"):
            async with create_task_group() as tg:
                tg.start_soon(block.run)
                await block.entered.wait()
                for closer in closers:
                    tg.start_soon(closer.run)
        assert all(closer.done for closer in closers)
        assert REASON in block.reason


class TestGrace:
    async def test_grace_zero_cancels_cancellable_blocks_at_once(self) -> None:
        gate = Gate()
        pollers = [Poller(gate, f"poll {i}") for i in range(3)]
        async with create_task_group() as tg:
            for poller in pollers:
                tg.start_soon(poller.run)
            await wait_all_tasks_blocked()
            await gate.close(grace=0)
        assert gate.count == 0
        assert all(p.cancelled and p.after_block for p in pollers)

    async def test_cancels_after_the_grace_period(self) -> None:
        gate = Gate()
        poller = Poller(gate)
        async with create_task_group() as tg:
            tg.start_soon(poller.run)
            await wait_all_tasks_blocked()
            await gate.close(grace=0.01)
        assert poller.cancelled

    async def test_holders_done_within_grace_are_not_cancelled(self) -> None:
        gate = Gate()
        poller = Poller(gate)
        closer = Closer(gate, grace=3600)
        async with create_task_group() as tg:
            tg.start_soon(poller.run)
            await wait_all_tasks_blocked()
            tg.start_soon(closer.run)
            await wait_all_tasks_blocked()
            assert not closer.done
            poller.release.set()
        assert closer.done
        assert not poller.cancelled
        assert poller.after_block

    async def test_no_grace_never_cancels(self) -> None:
        gate = Gate(warn_after=None)
        poller = Poller(gate)
        closer = Closer(gate)
        async with create_task_group() as tg:
            tg.start_soon(poller.run)
            await wait_all_tasks_blocked()
            tg.start_soon(closer.run)
            await wait_all_tasks_blocked()
            assert not closer.done
            poller.release.set()
        assert not poller.cancelled

    async def test_other_holders_are_waited_for(self) -> None:
        gate = Gate()
        plain = gate.enter("plain")
        unused = gate.enter("never entered", cancellable=True)
        poller = Poller(gate)
        closer = Closer(gate, grace=0)
        async with create_task_group() as tg:
            tg.start_soon(poller.run)
            await wait_all_tasks_blocked()
            tg.start_soon(closer.run)
            await poller.finished.wait()
            assert poller.cancelled
            await wait_all_tasks_blocked()
            assert not closer.done
            assert {h.name for h in gate.holders()} == {"plain", "never entered"}
            plain.release()
            await wait_all_tasks_blocked()
            assert not closer.done
            unused.release()
        assert closer.done
        assert not unused.cancelled_caught

    async def test_errors_in_cancellable_block_propagate(self) -> None:
        gate = Gate()
        with pytest.raises(KeyError):
            async with gate.enter(cancellable=True):
                raise KeyError
        assert gate.count == 0

    async def test_block_entered_after_the_grace_is_cancelled_at_once(self) -> None:
        gate = Gate()
        parent = gate.enter()
        closer = Closer(gate, grace=0)
        reached = False
        async with create_task_group() as tg:
            tg.start_soon(closer.run)
            await wait_all_tasks_blocked()
            with parent.clone("late", cancellable=True) as child:
                await anyio.sleep_forever()
                reached = True
            assert child.cancelled_caught
            parent.release()
        assert closer.done
        assert not reached

    async def test_cancelling_the_closer_stops_the_escalation(self) -> None:
        gate = Gate()
        poller = Poller(gate)
        closer = Closer(gate, grace=3600)
        async with create_task_group() as tg:
            tg.start_soon(poller.run)
            await wait_all_tasks_blocked()
            tg.start_soon(closer.run)
            await wait_all_tasks_blocked()
            closer.scope.cancel()
            await wait_all_tasks_blocked()
            assert closer.cancelled
            assert gate.closed
            assert not poller.after_block
            poller.release.set()
        assert not poller.cancelled
        assert gate.count == 0

    async def test_cancellable_needs_an_event_loop_thread(self) -> None:
        gate = Gate()
        enter = functools.partial(gate.enter, "t", cancellable=True)
        with pytest.raises(anyio.NoEventLoopError, match="needs an event loop in the calling"):
            await anyio.to_thread.run_sync(enter)
        assert gate.count == 0

        guard = gate.enter("t", cancellable=True)
        with pytest.raises(
            anyio.NoEventLoopError, match="must be used in a thread running an event loop"
        ):
            await anyio.to_thread.run_sync(guard.__enter__)
        assert guard.released
        assert gate.count == 0

    async def test_guard_used_twice_as_context_manager(self) -> None:
        gate = Gate()
        with (
            gate.enter(cancellable=True) as guard,
            pytest.raises(RuntimeError, match="already in use"),
        ):
            guard.__enter__()
        assert gate.count == 0


class TestStaleWaiterAfterReopen:
    """A close() whose close drained, woken but not yet run, while the gate is
    reopened and a new cancellable block entered: the finished close must not
    hand its (old) deadline to the reopened gate's blocks."""

    @pytest.mark.parametrize("tree", ["gate", "child"])
    @pytest.mark.parametrize("grace", [0.0, GRACE], ids=["grace-0", "grace-pending"])
    async def test_reopened_block_keeps_no_deadline(self, tree: str, grace: float) -> None:
        parent = Gate("root") if tree == "child" else None
        gate = Gate("tenant", parent=parent)
        entered = anyio.Event()
        reopened = anyio.Event()
        release = anyio.Event()
        new_scope: list[anyio.CancelScope] = []
        new_reason: list[str] = []

        async def holder() -> None:
            with gate.enter("old", cancellable=True):
                entered.set()
                await release.wait()
            # The last release drained the close and woke close() (scheduled,
            # not run yet); in the same step, before close() runs:
            gate.reopen()
            with gate.enter("new", cancellable=True) as guard:
                new_scope.append(scope_of(guard))
                reopened.set()
                await sleep_until_cancelled(new_reason)

        closed = anyio.Event()

        async def close() -> None:
            await gate.close(grace=grace)
            closed.set()

        with no_hang("the close"):
            async with create_task_group() as tg:
                tg.start_soon(holder)
                await entered.wait()
                tg.start_soon(close)
                await wait_all_tasks_blocked()
                release.set()  # with grace 0 the block is cancelled already
                await reopened.wait()
                await wait_all_tasks_blocked()
                assert closed.is_set()
                assert not gate.closed
                scope = new_scope[0]
                deadline, cancelled = scope.deadline, scope.cancel_called
                tg.cancel_scope.cancel()
            await gate.close()
            if parent is not None:
                await parent.close()
        assert not cancelled, f"the reopened gate's block was cancelled: {new_reason}"
        assert deadline == math.inf, "the old close's deadline was given to the reopened gate"


class TestBlockEnteredAsTheWaiterExpires:
    """A block entered in the step right after the waiter cancelled the blocks
    at the deadline must be cancelled too, not held back."""

    async def test_block_entered_in_the_cancellation_handler(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setattr("anygate._closing._HOLD_BACK", 3600.0)
        gate = Gate("tenant")
        holder = gate.enter("request")
        reasons: list[str] = []
        late: list[tuple[float, float, bool]] = []

        async def block() -> None:
            with gate.enter("poll", cancellable=True):
                try:
                    await anyio.sleep_forever()
                except anyio.get_cancelled_exc_class():
                    # Cancelled by the waiter at the deadline: a late part
                    # starts at once, after the deadline.
                    with holder.clone("late", cancellable=True) as clone:
                        scope = scope_of(clone)
                        late.append(
                            (
                                scope.deadline - anyio.current_time(),
                                private(gate)._closing.deadline - time.monotonic(),
                                scope.cancel_called,
                            )
                        )
                        try:
                            await anyio.sleep_forever()
                        except anyio.get_cancelled_exc_class() as exc:
                            reasons.append(str(exc))
                    holder.release()
                    raise

        with no_hang("the late block, past the deadline"):
            async with create_task_group() as tg:
                tg.start_soon(block)
                await wait_all_tasks_blocked()
                await gate.close(grace=GRACE)
        assert reasons, late
        assert reason_of("tenant") in reasons[0], (reasons, late)


class TestCancelledAtTheRearmCheckpoint:
    """The waiter is cancelled at the checkpoint it takes after re-arming."""

    @pytest.mark.parametrize("tree", ["gate", "child"])
    async def test_hold_back_given_back(self, monkeypatch: pytest.MonkeyPatch, tree: str) -> None:
        hold_back_forever(monkeypatch)
        root = Gate("tenant")
        gate = Gate("child", parent=root) if tree == "child" else root
        block = Block(gate)
        closer = Closer(root, 3600.0)
        # Cancelled as it re-arms: lands on the checkpoint that follows.
        rearmed = rearms(monkeypatch, closer.scope.cancel)
        with no_hang("the block, once its grace ran out with nobody waiting"):
            async with create_task_group() as tg:
                tg.start_soon(block.run)
                await block.entered.wait()
                tg.start_soon(closer.run)
                await wait_all_tasks_blocked()
                root.close_nowait(grace=GRACE)  # tightens: wakes the waiter
                await wait_all_tasks_blocked()
                assert len(rearmed) == 1
                assert closer.cancelled
                assert waiters(root) == []
                assert waiters(gate) == []
                assert block.scope is not None
                late = block.scope.deadline - anyio.current_time()
                assert late <= GRACE + 0.01, f"still held back by {late}s"
                await block.ended.wait()


class TestIdleWaiter:
    """A waiting close is idle: a descendant's drain does not wake it."""

    async def test_descendant_drains_while_ancestor_waits(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        rearmed = rearms(monkeypatch, lambda: None)
        root = Gate("tenant")
        busy = Gate("busy", parent=root)
        quick = Gate("quick", parent=root)
        block = Block(busy)
        held = quick.enter("plain")
        closer = Closer(root, 3600.0)
        async with create_task_group() as tg:
            tg.start_soon(block.run)
            await block.entered.wait()
            tg.start_soon(closer.run)
            await wait_all_tasks_blocked()
            (waiter,) = private(root)._closing.waiters
            assert waiters(quick) == [waiter]
            held.release()  # quick drains
            await wait_all_tasks_blocked()
            assert rearmed == []
            assert waiters(root) == [waiter, waiter]  # awaiting, and watching
            assert waiters(busy) == [waiter]
            assert waiters(quick) == []
            root.close_nowait(grace=0)
            await block.ended.wait()
        assert closer.done
        assert reason_of("busy", 0) in block.reason
        assert waiters(root) == []
        assert waiters(busy) == []


class TestCloseFromAHolder:
    async def test_inside_a_cancellable_block_raises(self) -> None:
        gate = Gate("g")
        with gate.enter("request", cancellable=True):
            with pytest.raises(
                RuntimeError, match=r"'request' that holds it: it would wait for itself forever"
            ):
                await gate.close()
            assert gate.closed
            assert private(gate)._closing.waiters == []
        await gate.close()
        assert gate.count == 0

    async def test_cancellable_block_of_another_task_is_waited_for(self) -> None:
        gate = Gate()
        release = anyio.Event()
        closer = Closer(gate)

        async def request() -> None:
            with gate.enter(cancellable=True):
                await release.wait()

        async with create_task_group() as tg:
            tg.start_soon(request)
            await wait_all_tasks_blocked()
            tg.start_soon(closer.run)
            await wait_all_tasks_blocked()
            assert not closer.done
            release.set()
        assert closer.done

    async def test_other_holds_are_named_in_the_warning(
        self, caplog: pytest.LogCaptureFixture
    ) -> None:
        gate = Gate("g", warn_after=0)
        scope = CancelScope()

        async def close_while_holding() -> None:
            with gate.enter(), scope:
                await gate.close()

        with caplog.at_level(logging.WARNING, logger="anygate"):
            async with create_task_group() as tg:
                tg.start_soon(close_while_holding, name="the-closing-task")
                await wait_all_tasks_blocked()
                scope.cancel()
        assert "awaited in task 'the-closing-task'" in caplog.text
        assert "holds the gate itself" in caplog.text
        assert gate.count == 0


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
            await advance(clock, 2 * MOCK_GRACE)
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
            await advance(clock, MOCK_GRACE / 2)
            tg.start_soon(block.run)
            await wait_all_tasks_blocked()
            assert block.entered_at == pytest.approx(closed_at + MOCK_GRACE / 2, abs=SLACK)
            assert block.ended() is None, "cancelled before its gate's grace ran out"
            await advance(clock, MOCK_GRACE / 2)
            ended_at = block.ended()
            assert ended_at is not None, (
                f"still running at the end of the grace, {anyio.current_time() - closed_at}s "
                "after the close on the loop's clock"
            )
            assert ended_at == pytest.approx(closed_at + MOCK_GRACE, abs=SLACK)
        assert block.guard.cancelled_caught
        assert gate.count == 0
