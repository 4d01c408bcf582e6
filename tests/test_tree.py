"""Trees of gates: of any depth, and a child's hold on its parent across a reopen.

Issue 17, failures 1 and 2. The old core shut a tree down by recursion and
drained it up by recursion; and a release that drained a child let go of
whatever hold the child had on its parent when it got there, which a reopen in
another thread could have replaced.
"""

from __future__ import annotations

import importlib
import threading
from typing import Any

import anyio
import pytest
from anyio import create_task_group, wait_all_tasks_blocked

from anygate import Gate
from helpers import Background, Closer, Pause, in_thread, no_hang

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
