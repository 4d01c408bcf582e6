"""Gates for whole services: close_nowait, the grace clock, wait_closing, start,
cancellable tasks and acquires, gates in a tree, statistics and ``gated``."""

from __future__ import annotations

import inspect
import logging
import time
from collections.abc import Awaitable, Callable, Iterator

import anyio
import anyio.lowlevel
import pytest
from anyio import create_task_group, wait_all_tasks_blocked
from anyio.abc import TaskStatus

from anygate import Gate, GateClosed, GateStatistics, Holder, gated
from helpers import Block, Closer, in_thread, no_hang, private, sleep_until_cancelled

pytestmark = pytest.mark.anyio

GRACE = 0.05
REASON = f"gate 'tenant' closed and its grace of {GRACE:g}s ran out"


class Warned(logging.Handler):
    """An event set when the ``anygate`` logger warns, in the loop that warns."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.event = anyio.Event()

    def emit(self, record: logging.LogRecord) -> None:
        self.event.set()

    async def wait(self) -> None:
        await self.event.wait()


@pytest.fixture
def warned() -> Iterator[Warned]:
    handler = Warned()
    logger = logging.getLogger("anygate")
    logger.addHandler(handler)
    yield handler
    logger.removeHandler(handler)


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
        assert block.ended_at - closed_at >= GRACE
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
            assert block.ended_at - closed_at >= GRACE
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
            assert time.monotonic() - closed_at >= GRACE
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
                assert block.ended_at - closed_at >= GRACE
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


class TestSlowCloseWarning:
    async def test_counts_from_the_end_of_the_grace(
        self, caplog: pytest.LogCaptureFixture, warned: Warned
    ) -> None:
        caplog.set_level(logging.INFO, "anygate")
        gate = Gate("g", warn_after=0)
        guard = gate.enter("slow")
        block = Block(gate)
        async with create_task_group() as tg:
            tg.start_soon(block.run)
            await block.entered.wait()

            async def close() -> None:
                await gate.close(grace=GRACE)

            tg.start_soon(close)
            await wait_all_tasks_blocked()
            # Inside the grace period: going as planned, nothing to warn about.
            assert "taking longer" not in caplog.text
            await block.ended.wait()
            with anyio.fail_after(5):
                await warned.wait()
            guard.release()
        assert "'slow' kept gate 'g' from closing" in caplog.text
        assert "closing gate 'g' completed after" in caplog.text

    async def test_names_the_closer_only_when_it_may_hold(
        self, caplog: pytest.LogCaptureFixture
    ) -> None:
        caplog.set_level(logging.INFO, "anygate")
        gate = Gate("g", warn_after=0)
        block = Block(gate)
        async with create_task_group() as tg:
            tg.start_soon(block.run)
            await block.entered.wait()
            tg.start_soon(gate.close)
            await wait_all_tasks_blocked()
            block.stop.set()
        # The one hold is a cancellable block in another task: not the closer's.
        assert "taking longer" in caplog.text
        assert "waits forever if it holds the gate itself" not in caplog.text

        caplog.clear()
        other = Gate("h", warn_after=0)
        guard = other.enter()
        async with create_task_group() as tg:
            tg.start_soon(other.close)
            await wait_all_tasks_blocked()
            guard.release()
        assert "waits forever if it holds the gate itself" in caplog.text


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


class TestStart:
    async def test_returns_the_started_value_and_holds_until_the_end(self) -> None:
        gate = Gate()
        stop = anyio.Event()

        async def serve(port: int, *, task_status: TaskStatus[int]) -> None:
            task_status.started(port + 1)
            await stop.wait()

        async with create_task_group() as tg:
            assert await gate.start(tg, serve, 8000, name="server") == 8001
            assert gate.holders()[0].name == "server"
            gate.close_nowait()
            await wait_all_tasks_blocked()
            assert gate.count == 1
            stop.set()
        assert gate.count == 0

    async def test_refused_on_a_closed_gate(self) -> None:
        gate = Gate()
        gate.close_nowait()
        ran: list[bool] = []

        async def serve(*, task_status: TaskStatus[None]) -> None:
            ran.append(True)

        async with create_task_group() as tg:
            with pytest.raises(GateClosed):
                await gate.start(tg, serve)
        assert ran == []
        assert gate.count == 0

    async def test_failing_before_started_releases(self) -> None:
        gate = Gate()

        async def serve(*, task_status: TaskStatus[None]) -> None:
            raise OSError("address in use")

        async with create_task_group() as tg:
            with pytest.raises(OSError, match="address in use"):
                await gate.start(tg, serve)
        assert gate.count == 0

    async def test_cancellable_cancelled_after_grace(self) -> None:
        gate = Gate()
        after: list[bool] = []

        async def serve(*, task_status: TaskStatus[None]) -> None:
            task_status.started()
            await anyio.sleep_forever()
            after.append(True)

        async with create_task_group() as tg:
            await gate.start(tg, serve, cancellable=True)
            await gate.close(grace=0)
        assert after == []
        assert gate.count == 0

    async def test_cancelled_by_the_grace_before_started_raises_gate_closed(self) -> None:
        gate = Gate("g")
        guard = gate.enter()

        async def serve(*, task_status: TaskStatus[None]) -> None:
            gate.close_nowait(grace=0)
            await anyio.sleep_forever()

        async with create_task_group() as tg:
            with pytest.raises(GateClosed, match=r"before it called task_status\.started"):
                await gate.start(tg, serve, cancellable=True)
        guard.release()
        assert gate.count == 0

    async def test_waits_for_room(self) -> None:
        gate = Gate(limit=1)
        guard = gate.enter()

        async def serve(*, task_status: TaskStatus[str]) -> None:
            task_status.started("up")

        async with create_task_group() as tg:
            results: list[str] = []

            async def start() -> None:
                results.append(await gate.start(tg, serve))

            tg.start_soon(start)
            await wait_all_tasks_blocked()
            assert results == []
            assert gate.statistics().tasks_waiting == 1
            guard.release()
        assert results == ["up"]

    async def test_needs_a_callable(self) -> None:
        async with create_task_group() as tg:
            with pytest.raises(TypeError, match=r"start\(\) needs a callable, not int"):
                await Gate().start(tg, 3)  # type: ignore[arg-type]


class TestCancellableTasks:
    async def test_start_soon_cancelled_after_grace(self) -> None:
        gate = Gate()
        after: list[bool] = []

        async def poll() -> None:
            await anyio.sleep_forever()
            after.append(True)

        async with create_task_group() as tg:
            gate.start_soon(tg, poll, name="poll", cancellable=True)
            await wait_all_tasks_blocked()
            await gate.close(grace=GRACE)
        assert after == []
        assert gate.count == 0

    async def test_start_soon_not_cancellable_is_waited_for(self) -> None:
        gate = Gate()
        stop = anyio.Event()
        async with create_task_group() as tg:
            gate.start_soon(tg, stop.wait)
            drained = gate.close(grace=0)
            await wait_all_tasks_blocked()
            assert gate.count == 1
            stop.set()
            await drained

    async def test_acquire_cancellable(self) -> None:
        gate = Gate(limit=2)
        after: list[bool] = []
        async with create_task_group() as tg:

            async def poll() -> None:
                async with gate.acquire("poll", cancellable=True) as guard:
                    await anyio.sleep_forever()
                    after.append(True)
                assert guard.cancelled_caught

            tg.start_soon(poll)
            await wait_all_tasks_blocked()
            await gate.close(grace=0)
        assert after == []

    async def test_awaited_cancellable_acquire_in_its_own_block(self) -> None:
        gate = Gate()
        guard = await gate.acquire(cancellable=True)
        gate.close_nowait(grace=0)
        with guard:
            await anyio.sleep_forever()
        assert guard.cancelled_caught


class TestTree:
    async def test_a_child_holds_its_parent(self) -> None:
        tenant = Gate("tenant")
        timeline = Gate("timeline a", parent=tenant)
        assert timeline.parent is tenant
        assert tenant.count == 1
        assert tenant.holders()[0].name == "gate 'timeline a'"
        with timeline:
            assert tenant.count == 1  # holds on the child do not count on the parent
        await timeline.close()
        assert tenant.count == 0
        await tenant.close()

    async def test_released_when_drained_without_anyone_awaiting(self) -> None:
        tenant = Gate()
        timeline = Gate(parent=tenant)
        guard = timeline.enter()
        timeline.close_nowait()
        assert tenant.count == 1
        guard.release()
        assert tenant.count == 0

    async def test_child_of_a_closed_parent_is_refused(self) -> None:
        tenant = Gate("tenant")
        tenant.close_nowait()
        with pytest.raises(GateClosed, match="gate 'tenant' is closed"):
            Gate("late", parent=tenant)
        assert tenant.count == 0

    async def test_three_levels_closed_from_the_root(
        self, caplog: pytest.LogCaptureFixture, warned: Warned
    ) -> None:
        caplog.set_level(logging.INFO, "anygate")
        root = Gate("root", warn_after=0)
        mid = Gate("mid", parent=root)
        leaves = [Gate(f"leaf {i}", parent=mid) for i in range(2)]
        plain = leaves[0].enter("page read")
        block = Block(leaves[1], "long poll")
        finished = anyio.Event()

        async def close_root() -> None:
            await root.close(grace=GRACE)
            finished.set()

        async with create_task_group() as tg:
            tg.start_soon(block.run)
            await block.entered.wait()
            tg.start_soon(close_root)
            await wait_all_tasks_blocked()
            # The close reached every level in the same call.
            assert mid.closed
            assert all(leaf.closed for leaf in leaves)
            with pytest.raises(GateClosed):
                Gate("new leaf", parent=mid)
            with pytest.raises(GateClosed):
                leaves[0].enter()
            # The grace reaches the cancellable leaf holder.
            await block.ended.wait()
            assert block.cancelled
            with anyio.fail_after(5):
                await warned.wait()
            assert not finished.is_set()
            plain.release()
        assert finished.is_set()
        assert (root.count, mid.count, leaves[0].count, leaves[1].count) == (0, 0, 0, 0)
        # The parent's warning shows which child, and which of its holders.
        assert "named holders, oldest first: \"gate 'mid'\" (" in caplog.text
        assert "held by \"gate 'leaf 0'\"" in caplog.text
        # The only hold on the root is its child's, which no task holds.
        assert "waits forever" not in caplog.text

    async def test_reopen_of_a_child_enters_its_parent_again(self) -> None:
        tenant = Gate()
        timeline = Gate(parent=tenant)
        await timeline.close()
        assert tenant.count == 0
        timeline.reopen()
        assert tenant.count == 1
        await timeline.close()
        tenant.close_nowait()
        with pytest.raises(GateClosed):
            timeline.reopen()
        assert timeline.closed
        await tenant.close()

    async def test_bad_parent(self) -> None:
        with pytest.raises(TypeError, match="parent must be a Gate or None, not str"):
            Gate(parent="tenant")  # type: ignore[arg-type]


class TestStatistics:
    async def test_with_waiters(self) -> None:
        gate = Gate("pool", limit=1)
        guard = gate.enter("first")
        assert gate.try_enter() is None
        async with create_task_group() as tg:
            tg.start_soon(_acquire_once, gate)
            tg.start_soon(_acquire_once, gate)
            await wait_all_tasks_blocked()
            stats = gate.statistics()
            assert isinstance(stats, GateStatistics)
            assert stats.count == 1
            assert not stats.closed
            assert stats.limit == 1
            assert stats.tasks_waiting == 2
            assert stats.holders == (Holder("first", stats.holders[0].held_for),)
            assert stats.refused == 1
            assert stats.children == 0
            assert stats.last_close_duration is None
            guard.release()
        stats = gate.statistics()
        assert (stats.count, stats.tasks_waiting) == (0, 0)
        await gate.close()
        stats = gate.statistics()
        assert stats.closed
        assert stats.last_close_duration is not None
        with pytest.raises(AttributeError):
            stats.count = 3  # type: ignore[misc]

    async def test_waiters_refused_by_a_close_count_as_refused(self) -> None:
        gate = Gate(limit=1)
        guard = gate.enter()
        async with create_task_group() as tg:
            for _ in range(2):
                tg.start_soon(_acquire_refused, gate)
            await wait_all_tasks_blocked()
            assert gate.statistics().refused == 0  # waiting is not being refused
            gate.close_nowait()
        assert gate.statistics().refused == 2
        guard.release()


async def _set(event: anyio.Event) -> None:
    event.set()


async def _acquire_refused(gate: Gate) -> None:
    with pytest.raises(GateClosed):
        await gate.acquire()


async def _acquire_once(gate: Gate) -> None:
    async with gate.acquire():
        pass


class Tenant:
    def __init__(self) -> None:
        self.gate = Gate("tenant")
        self.calls = 0

    @gated
    async def handle(self, request: str, *, suffix: str = "!") -> str:
        """Handle one request."""
        self.calls += 1
        assert self.gate.count == 1
        await anyio.lowlevel.checkpoint()
        return request + suffix


class TestGated:
    async def test_holds_self_gate_for_the_call(self) -> None:
        tenant = Tenant()
        assert await tenant.handle("hi", suffix="?") == "hi?"
        assert tenant.gate.count == 0
        assert Tenant.handle.__doc__ == "Handle one request."
        assert inspect.iscoroutinefunction(Tenant.handle)

    async def test_closed_gate_raises_when_called(self) -> None:
        tenant = Tenant()
        await tenant.gate.close()
        with pytest.raises(GateClosed, match="gate 'tenant' is closed"):
            await tenant.handle("hi")
        assert tenant.calls == 0

    async def test_needs_a_callable(self) -> None:
        with pytest.raises(TypeError, match=r"gated\(\) needs a callable, not int"):
            gated(3)  # type: ignore[arg-type]


class TestAcquireCheckpoints:
    async def test_a_cancel_point_with_room(self) -> None:
        gate = Gate(limit=2)
        with anyio.CancelScope() as scope:
            scope.cancel()
            await gate.acquire()
        assert scope.cancelled_caught
        assert gate.count == 0

    async def test_a_schedule_point_with_room(self) -> None:
        gate = Gate(limit=2)
        other_ran = anyio.Event()
        async with create_task_group() as tg:
            tg.start_soon(_set, other_ran)
            # A loop of uncontended acquires lets other tasks run.
            for _ in range(100):
                async with gate.acquire():
                    pass
                if other_ran.is_set():
                    break
            assert other_ran.is_set()

    async def test_fast_acquire_does_not_checkpoint_with_room(self) -> None:
        gate = Gate(limit=2, fast_acquire=True)
        with anyio.CancelScope() as scope:
            scope.cancel()
            guard = await gate.acquire()
        assert not scope.cancelled_caught
        guard.release()

    async def test_fast_acquire_waits_in_fifo_order_without_room(self) -> None:
        gate = Gate(limit=1, fast_acquire=True)
        guard = gate.enter()
        order: list[int] = []

        async def acquire(i: int) -> None:
            async with gate.acquire():
                order.append(i)
                await anyio.lowlevel.checkpoint()

        async with create_task_group() as tg:
            for i in range(3):
                tg.start_soon(acquire, i)
                await wait_all_tasks_blocked()
            assert gate.statistics().tasks_waiting == 3
            guard.release()
        assert order == [0, 1, 2]


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
