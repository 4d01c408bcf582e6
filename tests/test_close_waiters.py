"""Tasks awaiting a close watch its cancellable blocks in their event loop
(Closing.escalate_here, _watch, _unwatch, Gate._wait_drained): the reason a block
is cancelled with, the scope deadlines held back and given back, the waiters'
registrations and wakeups, across trees, reopens, threads and loops. The first
cases are in test_services.TestCloseReason."""

from __future__ import annotations

import importlib
import logging
import math
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import anyio
import anyio.abc
import anyio.lowlevel
import anyio.to_thread
import pytest
from anyio import create_task_group, wait_all_tasks_blocked

from anygate import Gate, GateGuard
from helpers import (
    HANG,
    Block,
    Closer,
    in_fresh_context,
    in_thread,
    no_hang,
    private,
    sleep_until_cancelled,
)

pytestmark = pytest.mark.anyio

#: The implementation module, for the internals the stubs rightly hide.
GATE_MODULE: Any = importlib.import_module("anygate._gate")

GRACE = 0.05


def reason_of(gate: str, grace: float = GRACE) -> str:
    return f"gate {gate!r} closed and its grace of {grace:g}s ran out"


def scope_of(guard: GateGuard | None) -> anyio.CancelScope:
    scope: anyio.CancelScope | None = private(guard)._record.scope
    assert scope is not None
    return scope


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


def waiters(gate: Gate) -> list[object]:
    """The tasks awaiting the drain of the gate's close, or watching its blocks."""
    closing = private(gate)._closing
    return [] if closing is None else [*closing.waiters, *closing.watchers]


def watchers(gate: Gate) -> list[object]:
    """The tasks watching the blocks of the gate's close: one entry each."""
    closing = private(gate)._closing
    return [] if closing is None else list(closing.watchers)


def rearms(monkeypatch: pytest.MonkeyPatch, then: Callable[[], object]) -> list[object]:
    """Record each wakeup re-armed by a waiter woken early; ``then()`` as each
    is about to be re-armed, so that what it wakes is the old event."""
    rearmed: list[object] = []
    real = GATE_MODULE.Wakeup.rearm

    def rearm(wakeup: object) -> None:
        rearmed.append(wakeup)
        then()
        real(wakeup)

    monkeypatch.setattr("anygate._wakeup.Wakeup.rearm", rearm)
    return rearmed


async def until(condition: Callable[[], bool]) -> None:
    """Let the other tasks run until ``condition()`` holds."""
    for _ in range(1000):
        if condition():
            return
        await anyio.lowlevel.checkpoint()
    pytest.fail("never came true")


def hold_back_forever(monkeypatch: pytest.MonkeyPatch) -> None:
    """A hold-back left behind then shows as a hang."""
    monkeypatch.setattr("anygate._closing._HOLD_BACK", 3600.0)


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


class TestTrees:
    async def test_child_closed_earlier_with_a_shorter_grace(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        hold_back_forever(monkeypatch)
        root = Gate("tenant")
        child = Gate("child", parent=root)
        block = Block(child)
        with no_hang("the child's block, at the child's deadline"):
            async with create_task_group() as tg:
                tg.start_soon(block.run)
                await block.entered.wait()
                child.close_nowait(grace=GRACE)
                deadline = private(child)._closing.deadline
                await root.close(grace=3600.0)
        assert reason_of("child") in block.reason
        assert block.ended_at - deadline < 0.5

    async def test_child_closed_earlier_with_a_longer_grace(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        hold_back_forever(monkeypatch)
        root = Gate("tenant")
        child = Gate("child", parent=root)
        block = Block(child)
        child_closer = Closer(child, 3600.0)
        with no_hang("the child's block, at the parent's deadline"):
            async with create_task_group() as tg:
                tg.start_soon(block.run)
                await block.entered.wait()
                tg.start_soon(child_closer.run)
                await wait_all_tasks_blocked()
                await root.close(grace=GRACE)
        assert child_closer.done
        assert reason_of("child") in block.reason

    async def test_three_levels(self, monkeypatch: pytest.MonkeyPatch) -> None:
        hold_back_forever(monkeypatch)
        root = Gate("tenant")
        mid = Gate("mid", parent=root)
        leaf = Gate("leaf", parent=mid)
        blocks = [Block(leaf), Block(mid), Block(root)]
        with no_hang("the blocks of three levels"):
            async with create_task_group() as tg:
                for block in blocks:
                    tg.start_soon(block.run)
                    await block.entered.wait()
                await root.close(grace=GRACE)
        for block, name in zip(blocks, ["leaf", "mid", "tenant"], strict=True):
            assert reason_of(name) in block.reason
        assert waiters(root) == waiters(mid) == waiters(leaf) == []

    @pytest.mark.parametrize("cancel", ["parent-waiter", "child-waiter", "none"])
    async def test_waiters_on_child_and_parent(
        self, monkeypatch: pytest.MonkeyPatch, cancel: str
    ) -> None:
        hold_back_forever(monkeypatch)
        root = Gate("tenant")
        child = Gate("child", parent=root)
        block = Block(child)
        child_closer = Closer(child)
        root_closer = Closer(root, GRACE)
        with no_hang("the child's block"):
            async with create_task_group() as tg:
                tg.start_soon(block.run)
                await block.entered.wait()
                tg.start_soon(child_closer.run)
                await wait_all_tasks_blocked()
                tg.start_soon(root_closer.run)
                # Not wait_all_tasks_blocked(): on asyncio it may sleep 0.1s,
                # past the grace.
                await until(lambda: len(watchers(child)) == 2)
                if cancel == "parent-waiter":
                    root_closer.scope.cancel()
                    await until(lambda: root_closer.cancelled)
                elif cancel == "child-waiter":
                    child_closer.scope.cancel()
                    await until(lambda: child_closer.cancelled)
                assert len(watchers(child)) == (2 if cancel == "none" else 1)
                await block.ended.wait()
        assert reason_of("child") in block.reason
        assert waiters(root) == []
        assert waiters(child) == []

    async def test_tightened_from_another_thread_as_the_waiter_rearms(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        # Woken by one tighten, the waiter re-arms while another thread tightens
        # again: that wakeup may set the old event, so the waiter must find the
        # new deadline by looking, not by being woken.
        hold_back_forever(monkeypatch)
        root = Gate("tenant")
        busy = Gate("busy", parent=root)
        block = Block(busy)

        def tighten_in_a_thread() -> None:
            if len(rearmed) == 1:
                in_thread(lambda: root.close_nowait(grace=GRACE))

        rearmed = rearms(monkeypatch, tighten_in_a_thread)
        with no_hang("the block, once the tightened grace ran out"):
            async with create_task_group() as tg:
                tg.start_soon(block.run)
                await block.entered.wait()
                closer = Closer(root, 3600.0)
                tg.start_soon(closer.run)
                await wait_all_tasks_blocked()
                root.close_nowait(grace=1800.0)
                await block.ended.wait()
        assert rearmed
        assert closer.done
        assert reason_of("busy") in block.reason


class TestTaskHelpersUnderAParentsClose:
    async def test_start_soon(self, monkeypatch: pytest.MonkeyPatch) -> None:
        hold_back_forever(monkeypatch)
        root = Gate("tenant")
        child = Gate("child", parent=root)
        reasons: list[str] = []

        async def work() -> None:
            await sleep_until_cancelled(reasons)

        with no_hang("the parent's close"):
            async with create_task_group() as tg:
                child.start_soon(tg, work, name="poll", cancellable=True)
                await root.close(grace=GRACE)
        assert len(reasons) == 1
        assert reason_of("child") in reasons[0]

    async def test_start(self, monkeypatch: pytest.MonkeyPatch) -> None:
        hold_back_forever(monkeypatch)
        root = Gate("tenant")
        child = Gate("child", parent=root)
        reasons: list[str] = []

        async def work(task_status: anyio.abc.TaskStatus[None]) -> None:
            task_status.started()
            await sleep_until_cancelled(reasons)

        with no_hang("the parent's close"):
            async with create_task_group() as tg:
                await child.start(tg, work, name="poll", cancellable=True)
                await root.close(grace=GRACE)
        assert len(reasons) == 1
        assert reason_of("child") in reasons[0]

    async def test_acquire(self, monkeypatch: pytest.MonkeyPatch) -> None:
        hold_back_forever(monkeypatch)
        root = Gate("tenant")
        child = Gate("child", parent=root, limit=1)
        reasons: list[str] = []
        entered = anyio.Event()

        async def poll() -> None:
            async with child.acquire("poll", cancellable=True):
                entered.set()
                await sleep_until_cancelled(reasons)

        with no_hang("the parent's close"):
            async with create_task_group() as tg:
                tg.start_soon(poll)
                await entered.wait()
                await root.close(grace=GRACE)
        assert len(reasons) == 1
        assert reason_of("child") in reasons[0]


class TestTwoLoops:
    async def test_block_in_each_loop_closer_in_one(
        self, monkeypatch: pytest.MonkeyPatch, anyio_backend: tuple[str, dict[str, object]]
    ) -> None:
        # The other loop has nobody awaiting the close: its block must not be
        # held back, and is cancelled by its scope's own deadline.
        hold_back_forever(monkeypatch)
        gate = Gate("tenant")
        here = Block(gate, "here")
        entered = threading.Event()
        there: dict[str, object] = {}

        async def other_loop() -> None:
            with gate.enter("there", cancellable=True) as guard:
                there["scope"] = scope_of(guard)
                entered.set()
                await anyio.sleep_forever()
            there["cancelled"] = guard.cancelled_caught

        backend, options = anyio_backend
        thread = threading.Thread(
            target=in_fresh_context(
                lambda: anyio.run(other_loop, backend=backend, backend_options=options)
            ),
            daemon=True,
        )
        thread.start()
        with no_hang("both blocks, once the grace ran out"):
            assert await anyio.to_thread.run_sync(entered.wait, HANG), (
                "the other loop never entered"
            )
            async with create_task_group() as tg:
                tg.start_soon(here.run)
                await here.entered.wait()
                await gate.close(grace=GRACE)
            await anyio.to_thread.run_sync(thread.join, HANG)
        assert not thread.is_alive(), "the other loop has not ended"
        assert reason_of("tenant") in here.reason
        assert there["cancelled"] is True
        assert waiters(gate) == []


class Warnings(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.times: list[float] = []
        self.event = anyio.Event()

    def emit(self, record: logging.LogRecord) -> None:
        if "is taking longer than expected" in record.getMessage():
            self.times.append(time.monotonic())
            self.event.set()


@pytest.fixture
def warnings_seen() -> Iterator[Warnings]:
    handler = Warnings()
    logger = logging.getLogger("anygate")
    logger.addHandler(handler)
    yield handler
    logger.removeHandler(handler)


class TestSlowCloseWarning:
    async def test_once_counted_from_a_tightened_grace_with_waiters_in_a_tree(
        self, warnings_seen: Warnings
    ) -> None:
        root = Gate("tenant", warn_after=0.05)
        child = Gate("child", parent=root, warn_after=0.05)
        block = Block(child)
        plain = child.enter("plain")  # outlives the grace
        closers = [Closer(root), Closer(root), Closer(child)]
        with no_hang("the warning"):
            async with create_task_group() as tg:
                tg.start_soon(block.run)
                await block.entered.wait()
                for closer in closers:
                    tg.start_soon(closer.run)
                await until(lambda: len(watchers(child)) == 3)
                root.close_nowait(grace=GRACE)  # warning now counts from here
                deadline = private(root)._closing.deadline
                await block.ended.wait()
                await warnings_seen.event.wait()
                root.close_nowait(grace=0)  # a later tightening warns no more
                await wait_all_tasks_blocked()
                plain.release()
        # One for the root's close, one for the child's.
        assert len(warnings_seen.times) == 2
        assert min(warnings_seen.times) >= deadline + 0.05 - 0.002
        assert all(closer.done for closer in closers)
