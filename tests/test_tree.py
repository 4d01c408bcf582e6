"""Trees of gates: parents, children, their closes and drains."""

from __future__ import annotations

import importlib
import logging
import threading
from typing import Any

import anyio
import anyio.abc
import anyio.lowlevel
import anyio.to_thread
import pytest
from anyio import create_task_group, wait_all_tasks_blocked

from anygate import Gate, GateClosed
from helpers import (
    GRACE,
    Background,
    Block,
    Closer,
    Pause,
    Warned,
    hold_back_forever,
    in_thread,
    no_hang,
    private,
    rearms,
    reason_of,
    sleep_until_cancelled,
    until,
    waiters,
    watchers,
)

pytestmark = pytest.mark.anyio


#: How a gate wakes a task in its event loop, in the old core as in the new.
WAKEUP: Any = importlib.import_module("anygate._wakeup").Wakeup


#: Far deeper than the recursion limit (1000), so that any recursion down or up
#: the tree fails.
DEPTH = 10_000


def chain(depth: int = DEPTH) -> list[Gate]:
    """Gates each the child of the one before: the root first, the leaf last."""
    gates = [Gate("0", warn_after=None)]
    for level in range(1, depth):
        gates.append(Gate(str(level), parent=gates[-1], warn_after=None))
    return gates


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


class TestDeepTree:
    """A chain of 10,000 gates closes from the root and drains from the leaf.

    The old core raised RecursionError a few hundred levels down, in
    ``close_nowait()`` of the root (the shut recursed down) or in the leaf's
    last ``release()`` (the drain recursed up); the gates above never learned
    of the drain, and the root's ``close()`` never returned.
    """

    async def test_closed_from_the_root_drained_from_the_leaf(self) -> None:
        gates = chain()
        root, leaf = gates[0], gates[-1]
        guard = leaf.enter("last")
        root.close_nowait()
        assert all(gate.closed for gate in gates)
        # Each gate but the leaf is held by its child alone, until the leaf drains.
        assert all(gate.count == 1 for gate in gates)
        closer = Closer(root)
        with no_hang("close() of the root after the leaf's last release"):
            async with create_task_group() as tg:
                tg.start_soon(closer.run)
                await wait_all_tasks_blocked()
                assert not closer.done, "the root drained while the leaf was held"
                # In a plain thread: the drain walks up there, and its wakeup
                # crosses to this loop.
                in_thread(guard.release)
        assert closer.done
        assert all(gate.count == 0 for gate in gates)
        assert all(gate.statistics().last_close_duration is not None for gate in gates)

    async def test_an_empty_chain_drains_as_the_root_closes(self) -> None:
        gates = chain()
        with no_hang("close() of the root of an empty chain"):
            await gates[0].close(grace=60)
        assert all(gate.closed for gate in gates)
        assert all(gate.count == 0 for gate in gates)
        assert all(gate.statistics().children == 0 for gate in gates)

    def test_closed_from_the_leaf_up_then_drained_from_the_leaf(self) -> None:
        # Each close finds its child closed already, so that only the drain up
        # the chain is put to the test; and a close does not walk again the
        # descendants that are closed already, or this would be quadratic.
        gates = chain()
        guard = gates[-1].enter("last")
        for gate in reversed(gates):
            gate.close_nowait()
        assert all(gate.count == 1 for gate in gates)
        guard.release()
        assert all(gate.count == 0 for gate in gates)
        assert all(gate.statistics().last_close_duration is not None for gate in gates)

    def test_reopened_from_the_root_down_and_closed_again(self) -> None:
        gates = chain()
        gates[0].close_nowait()
        assert all(gate.statistics().last_close_duration is not None for gate in gates)
        for gate in gates:  # a child reopens only under an open parent
            gate.reopen()
        assert all(gate.count == 1 for gate in gates[:-1])
        guard = gates[-1].enter()
        gates[0].close_nowait()
        assert all(gate.closed for gate in gates)
        guard.release()
        assert all(gate.count == 0 for gate in gates)
        assert all(gate.statistics().children == 0 for gate in gates)


class TestChildReopenedAsItDrains:
    """The last hold of a child is released in a plain thread while tasks in
    this thread's loop await the child's close. The first task woken reopens the
    child, which takes a new hold on the parent, before the releasing thread
    has finished its release: that thread is parked right after the wakeup it
    sent (``Wakeup.wake``, in both cores), and let go after the reopen.

    The old core let go of the child's hold on the parent after its wakeups,
    reading it from the child then: it dropped the new hold. The reopened child
    no longer held its parent (``parent.count == 0``), ``parent.close_nowait()``
    left it open, and the old hold, dropped by the reopen, was released by the
    garbage collector with a ResourceWarning.
    """

    @pytest.mark.parametrize("closers", [1, 2])
    async def test_the_drain_releases_the_old_hold_on_the_parent(
        self, closers: int, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        parent = Gate("parent")
        child = Gate("child", parent=parent)
        guard = child.enter("last")
        releaser = Background(guard.release)
        pause = Pause()
        wake = WAKEUP.wake

        def wake_then_park(self: Any, *args: Any, **kwargs: Any) -> None:
            wake(self, *args, **kwargs)
            if threading.current_thread() is releaser.thread and not pause.reached:
                pause.here()  # the woken task runs now, in the loop's thread

        monkeypatch.setattr(WAKEUP, "wake", wake_then_park)
        reopened = anyio.Event()

        async def close_then_reopen() -> None:
            await child.close()
            if not reopened.is_set():
                # The releasing thread queued this task's wakeup: make sure it
                # is parked right after that (this blocks the loop only while
                # the thread gets there), then reopen: a new hold on the parent.
                pause.wait_reached()
                child.reopen()
                reopened.set()

        with no_hang("the closers of the child, woken by the thread's release"):
            async with create_task_group() as tg:
                for _ in range(closers):
                    tg.start_soon(close_then_reopen)
                await wait_all_tasks_blocked()
                releaser.start()
                try:
                    await reopened.wait()
                finally:
                    pause.go()
                    releaser.join()
        assert not child.closed
        assert child.count == 0
        assert parent.count == 1, "the reopened child must hold its parent, once"
        assert [h.name for h in parent.holders()] == ["gate 'child'"]
        assert parent.statistics().children == 1
        parent.close_nowait()
        assert child.statistics().closed, "the parent's close left the reopened child open"
        with no_hang("close() of the parent"):
            await parent.close()
        assert parent.count == 0


class TestRefusalNamesTheClosingAncestor:
    async def test_child_refuses_naming_its_parent(self) -> None:
        tenant = Gate("tenant t1")
        pool = Gate("pool t1", parent=tenant)
        tenant.close_nowait()
        with pytest.raises(GateClosed) as caught:
            pool.enter()
        assert str(caught.value) == "gate 'pool t1' is closed: its parent 'tenant t1' is closing"
        assert caught.value.gate is pool
        assert caught.value.closed_by is tenant
        await tenant.close()
        with pytest.raises(GateClosed, match="its parent 'tenant t1' is closing"):
            await pool.acquire()

    async def test_grandchild_names_its_ancestor(self) -> None:
        root = Gate("root")
        child = Gate("child", parent=root)
        grandchild = Gate("leaf", parent=child)
        root.close_nowait()
        message = "gate 'leaf' is closed: its ancestor 'root' is closing"
        with pytest.raises(GateClosed, match=message):
            grandchild.check()
        await root.close()

    async def test_a_gate_closed_by_itself(self) -> None:
        parent = Gate("parent")
        child = Gate("child", parent=parent)
        child.close_nowait()
        parent.close_nowait()  # closes nothing more in the child
        with pytest.raises(GateClosed) as caught:
            child.enter()
        assert str(caught.value) == "gate 'child' is closed"
        assert caught.value.closed_by is child
        await parent.close()

    def test_built_by_hand(self) -> None:
        error = GateClosed("by hand")
        assert error.gate is None
        assert error.closed_by is None
        assert str(error) == "by hand"
