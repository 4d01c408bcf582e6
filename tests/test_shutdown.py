from __future__ import annotations

import functools
import logging
import math
import sys
from collections.abc import Coroutine
from typing import Any

import anyio
import anyio.to_thread
import pytest
from anyio import create_task_group, wait_all_tasks_blocked

from anygate import Gate, GateClosed, GateGuard, Holder
from helpers import Closer, in_thread, no_hang

if sys.version_info < (3, 11):
    from exceptiongroup import BaseExceptionGroup

pytestmark = pytest.mark.anyio


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


class TestHolders:
    async def test_named_holders_oldest_first(self) -> None:
        gate = Gate()
        first = gate.enter("first")
        gate.enter().release()
        anonymous = gate.enter()
        second = gate.enter("second")
        third = first.clone("third")
        holders = gate.holders()
        assert [h.name for h in holders] == ["first", "second", "third"]
        assert all(type(h) is Holder and h.held_for >= 0 for h in holders)
        assert holders[0].held_for >= holders[1].held_for >= holders[2].held_for
        second.release()
        assert [h.name for h in gate.holders()] == ["first", "third"]
        for guard in (first, anonymous, third):
            guard.release()
        assert gate.holders() == []


class TestSlowCloseLog:
    async def test_warning_names_the_holders(self, caplog: pytest.LogCaptureFixture) -> None:
        caplog.set_level(logging.INFO, logger="anygate")
        gate = Gate("tenant 42", warn_after=0)
        older, newer, anonymous = gate.enter("GET /a"), gate.enter("GET /b"), gate.enter()
        closer = Closer(gate)
        async with create_task_group() as tg:
            tg.start_soon(closer.run)
            await wait_all_tasks_blocked()
            [warning] = caplog.records
            assert (warning.name, warning.levelno) == ("anygate", logging.WARNING)
            message = warning.getMessage()
            assert "closing gate 'tenant 42' is taking longer than expected" in message
            assert "3 still held; named holders, oldest first: 'GET /a' (" in message
            assert message.index("'GET /a'") < message.index("'GET /b'")
            caplog.clear()
            newer.release()
            [late] = caplog.records
            assert late.levelno == logging.INFO
            assert "'GET /b' kept gate 'tenant 42' from closing for" in late.getMessage()
            caplog.clear()
            anonymous.release()
            assert caplog.records == []
            older.release()
        assert closer.done
        messages = [r.getMessage() for r in caplog.records]
        assert messages[0].startswith("'GET /a' kept gate 'tenant 42' from closing")
        assert messages[1].startswith("closing gate 'tenant 42' completed after")
        assert caplog.records[1].levelno == logging.INFO

    async def test_at_most_twenty_listed(self, caplog: pytest.LogCaptureFixture) -> None:
        gate = Gate(warn_after=0)
        guards = [gate.enter(f"h{i:02}") for i in range(25)]
        async with create_task_group() as tg:
            tg.start_soon(gate.close)
            await wait_all_tasks_blocked()
            [warning] = caplog.records
            message = warning.getMessage()
            assert "'h19'" in message
            assert "'h20'" not in message
            assert "and 5 more" in message
            for guard in guards:
                guard.release()

    async def test_no_warning_when_turned_off(self, caplog: pytest.LogCaptureFixture) -> None:
        caplog.set_level(logging.INFO, logger="anygate")
        gate = Gate(warn_after=None)
        guard = gate.enter("x")
        async with create_task_group() as tg:
            tg.start_soon(gate.close)
            await wait_all_tasks_blocked()
            guard.release()
        assert caplog.records == []

    async def test_no_warning_for_a_quick_close(self, caplog: pytest.LogCaptureFixture) -> None:
        caplog.set_level(logging.INFO, logger="anygate")
        gate = Gate(warn_after=3600)
        guard = gate.enter("x")
        async with create_task_group() as tg:
            tg.start_soon(gate.close)
            await wait_all_tasks_blocked()
            guard.release()
        assert caplog.records == []


class TestGuarded:
    async def test_holds_for_the_whole_call(self) -> None:
        gate = Gate()
        started, finish = anyio.Event(), anyio.Event()

        @gate.guarded
        async def handle(request: str, *, suffix: str = "!") -> str:
            """Handle one request."""
            started.set()
            await finish.wait()
            return request + suffix

        assert handle.__name__ == "handle"
        assert handle.__doc__ == "Handle one request."
        results: list[str] = []

        async def call() -> None:
            results.append(await handle("hi", suffix="?"))

        closer = Closer(gate)
        async with create_task_group() as tg:
            tg.start_soon(call)
            await started.wait()
            assert gate.count == 1
            tg.start_soon(closer.run)
            await wait_all_tasks_blocked()
            assert not closer.done
            finish.set()
        assert results == ["hi?"]
        assert closer.done

    async def test_closed_gate_raises_when_the_call_runs(self) -> None:
        gate = Gate()

        @gate.guarded
        async def handle() -> None:
            raise AssertionError("not reached")

        call = handle()
        await gate.close()
        with pytest.raises(GateClosed):
            await call

    async def test_released_on_error(self) -> None:
        gate = Gate()

        @gate.guarded
        async def handle() -> None:
            raise ValueError("boom")

        with pytest.raises(ValueError, match="boom"):
            await handle()
        assert gate.count == 0

    async def test_released_when_the_call_itself_fails(self) -> None:
        gate = Gate()

        def broken() -> Coroutine[Any, Any, None]:
            raise ZeroDivisionError

        handle = gate.guarded(broken)
        with pytest.raises(ZeroDivisionError):
            await handle()
        assert gate.count == 0

    async def test_needs_a_callable(self) -> None:
        with pytest.raises(TypeError, match=r"guarded\(\) needs a callable, not int"):
            Gate().guarded(3)  # type: ignore[arg-type]


class TestStartSoon:
    async def test_entered_before_the_task_starts(self) -> None:
        gate = Gate()
        ran: list[int] = []

        async def work(value: int) -> None:
            ran.append(value)

        closer = Closer(gate)
        async with create_task_group() as tg:
            gate.start_soon(tg, work, 7, name="work")
            assert gate.count == 1
            assert [h.name for h in gate.holders()] == ["work"]
            tg.start_soon(closer.run)
        assert ran == [7]
        assert closer.done

    async def test_closed_gate_raises_in_the_caller(self) -> None:
        gate = Gate()
        await gate.close()

        async def work() -> None:
            raise AssertionError("not reached")

        async with create_task_group() as tg:
            with pytest.raises(GateClosed):
                gate.start_soon(tg, work)
        assert gate.count == 0

    async def test_released_on_error_and_on_cancel(self) -> None:
        gate = Gate()
        started = anyio.Event()

        async def fail() -> None:
            await started.wait()
            raise ValueError("boom")

        async def forever() -> None:
            started.set()
            await anyio.sleep_forever()

        with pytest.raises(BaseExceptionGroup) as caught:
            async with create_task_group() as tg:
                gate.start_soon(tg, fail)
                gate.start_soon(tg, forever)
        assert caught.group_contains(ValueError, match="boom")
        assert gate.count == 0

    async def test_task_name(self) -> None:
        gate = Gate()
        names: list[str] = []

        async def work() -> None:
            names.append(str(anyio.get_current_task().name))

        async with create_task_group() as tg:
            gate.start_soon(tg, work, name="flush")
            gate.start_soon(tg, work)
        assert sorted(names) == sorted(["flush", work.__qualname__])

    async def test_needs_a_callable(self) -> None:
        gate = Gate()
        async with create_task_group() as tg:
            with pytest.raises(TypeError, match=r"start_soon\(\) needs a callable, not str"):
                gate.start_soon(tg, "work")  # type: ignore[arg-type]
        assert gate.count == 0

    async def test_released_if_the_task_group_refuses(self) -> None:
        gate = Gate()

        async def work() -> None:
            raise AssertionError("not reached")

        async with create_task_group() as tg:
            pass
        with pytest.raises(RuntimeError):
            gate.start_soon(tg, work)
        assert gate.count == 0


class Acquirer:
    def __init__(self, gate: Gate, name: str) -> None:
        self.gate = gate
        self.name = name
        self.guard: GateGuard | None = None
        self.error: BaseException | None = None
        self.scope = anyio.CancelScope()

    async def run(self) -> None:
        with self.scope:
            try:
                self.guard = await self.gate.acquire(self.name)
            except GateClosed as exc:
                self.error = exc


class TestLimit:
    async def test_enter_refused_when_full(self) -> None:
        gate = Gate(limit=2)
        assert gate.limit == 2
        first, second = gate.enter(), gate.enter()
        with pytest.raises(anyio.WouldBlock, match="at its limit of 2"):
            gate.enter()
        with pytest.raises(anyio.WouldBlock), gate:
            pass
        assert gate.try_enter() is None
        assert gate.count == 2
        first.release()
        with gate:
            assert gate.count == 2
        second.release()
        assert gate.count == 0

    async def test_clone_is_not_limited(self) -> None:
        gate = Gate(limit=1)
        guard = gate.enter()
        clone = guard.clone()
        assert gate.count == 2
        clone.release()
        guard.release()

    async def test_waiters_admitted_in_order(self) -> None:
        gate = Gate(limit=1)
        holder = gate.enter()
        waiters = [Acquirer(gate, f"w{i}") for i in range(3)]
        async with create_task_group() as tg:
            for waiter in waiters:
                tg.start_soon(waiter.run)
                await wait_all_tasks_blocked()
            with pytest.raises(anyio.WouldBlock):
                gate.enter()
            current = holder
            for waiter in waiters:
                current.release()
                await wait_all_tasks_blocked()
                admitted = [w.name for w in waiters if w.guard is not None]
                assert admitted == [w.name for w in waiters[: waiters.index(waiter) + 1]]
                assert gate.count == 1
                # Someone entering now may not jump the queue.
                with pytest.raises(anyio.WouldBlock):
                    gate.enter()
                assert waiter.guard is not None
                current = waiter.guard
            current.release()
        assert gate.count == 0

    async def test_close_wakes_every_waiter(self) -> None:
        gate = Gate(limit=1)
        holder = gate.enter()
        waiters = [Acquirer(gate, f"w{i}") for i in range(3)]
        async with create_task_group() as tg:
            for waiter in waiters:
                tg.start_soon(waiter.run)
            await wait_all_tasks_blocked()
            drained = gate.close()
            await wait_all_tasks_blocked()
            assert all(isinstance(w.error, GateClosed) for w in waiters)
            assert all(w.guard is None for w in waiters)
            holder.release()
            await drained
        assert gate.count == 0

    async def test_cancelled_waiter_holds_nothing(self) -> None:
        gate = Gate(limit=1)
        holder = gate.enter()
        first, second = Acquirer(gate, "first"), Acquirer(gate, "second")
        async with create_task_group() as tg:
            tg.start_soon(first.run)
            await wait_all_tasks_blocked()
            tg.start_soon(second.run)
            await wait_all_tasks_blocked()
            first.scope.cancel()
            await wait_all_tasks_blocked()
            assert first.guard is None
            assert gate.count == 1
            holder.release()
            await wait_all_tasks_blocked()
            assert second.guard is not None
            assert gate.count == 1
            second.guard.release()
        assert gate.count == 0

    async def test_waiter_cancelled_after_admission_gives_the_slot_back(self) -> None:
        gate = Gate(limit=1)
        holder = gate.enter()
        waiter = Acquirer(gate, "w")
        async with create_task_group() as tg:
            tg.start_soon(waiter.run)
            await wait_all_tasks_blocked()
            # Admit and cancel in the same step: the waiter never sees its guard.
            holder.release()
            waiter.scope.cancel()
        assert waiter.guard is None or not waiter.scope.cancelled_caught
        if waiter.guard is not None:
            waiter.guard.release()
        assert gate.count == 0

    async def test_acquire_forms(self) -> None:
        gate = Gate(limit=1)
        async with gate.acquire("ctx") as guard:
            assert guard.name == "ctx"
            assert gate.count == 1
        assert guard.released
        guard = await gate.acquire()
        assert gate.count == 1
        guard.release()
        unbounded = Gate()
        async with unbounded.acquire() as guard:
            assert unbounded.count == 1
        await unbounded.close()
        with pytest.raises(GateClosed):
            await unbounded.acquire()
        await gate.close()
        with pytest.raises(GateClosed):
            await gate.acquire()

    async def test_acquire_is_a_checkpoint(self) -> None:
        gate = Gate()
        with anyio.CancelScope() as scope:
            scope.cancel()
            await gate.acquire()
        assert scope.cancelled_caught
        assert gate.count == 0


class TestBadValues:
    @pytest.mark.parametrize("limit", [0, -1])
    def test_limit_below_one(self, limit: int) -> None:
        with pytest.raises(ValueError, match=f"limit must be at least 1, not {limit}"):
            Gate(limit=limit)

    @pytest.mark.parametrize("limit", ["2", 2.0, True])
    def test_limit_not_an_int(self, limit: object) -> None:
        with pytest.raises(TypeError, match="limit must be an int or None"):
            Gate(limit=limit)  # type: ignore[arg-type]

    @pytest.mark.parametrize("seconds", [-1, -0.5, math.nan, -math.inf])
    def test_warn_after_out_of_range(self, seconds: float) -> None:
        with pytest.raises(ValueError, match="warn_after must be a number of seconds >= 0"):
            Gate(warn_after=seconds)

    @pytest.mark.parametrize("seconds", ["1", True, [1]])
    def test_warn_after_not_a_number(self, seconds: object) -> None:
        with pytest.raises(TypeError, match="warn_after must be a number of seconds or None"):
            Gate(warn_after=seconds)  # type: ignore[arg-type]

    @pytest.mark.parametrize("grace", [-1, math.nan, "5", False])
    async def test_bad_grace_leaves_the_gate_open(self, grace: object) -> None:
        gate = Gate()
        with pytest.raises((ValueError, TypeError), match="grace must be a number of seconds"):
            gate.close(grace=grace).close()  # type: ignore[arg-type]
        assert not gate.closed

    def test_infinite_grace_is_no_grace(self) -> None:
        gate = Gate(warn_after=math.inf)
        gate.close(grace=math.inf).close()
        assert gate.closed


class TestAsyncWithAcquireInLine:
    @pytest.mark.parametrize("fast", [False, True], ids=["checkpoint", "fast"])
    async def test_fifo_and_never_over_the_limit(self, fast: bool) -> None:
        # Unnamed holds: the inlined enter and release of async with acquire().
        # Each exit must hand its place to the first in line, and only to it.
        gate = Gate(limit=2, fast_acquire=fast)
        holders = [gate.enter(), gate.enter()]
        leave = [anyio.Event() for _ in range(5)]
        order: list[int] = []
        most = 0

        async def acquire(i: int) -> None:
            nonlocal most
            async with gate.acquire():
                most = max(most, gate.count)
                order.append(i)
                await leave[i].wait()

        with no_hang("tasks in line"):
            async with create_task_group() as tg:
                for i in range(5):
                    tg.start_soon(acquire, i)
                    await wait_all_tasks_blocked()
                assert gate.statistics().tasks_waiting == 5
                for holder in holders:
                    holder.release()
                    await wait_all_tasks_blocked()
                assert order == [0, 1]
                for i in range(5):
                    leave[i].set()
                    await wait_all_tasks_blocked()
                    assert order == list(range(min(i + 3, 5)))
                    assert gate.count == min(2, 4 - i)
        assert most <= 2
        assert gate.count == 0
        assert gate.statistics().tasks_waiting == 0

    async def test_release_from_a_foreign_thread_admits_the_next(self) -> None:
        gate = Gate(limit=1)
        holder = gate.enter()
        entered = anyio.Event()

        async def acquire() -> None:
            async with gate.acquire():
                entered.set()

        async with create_task_group() as tg:
            tg.start_soon(acquire)
            await wait_all_tasks_blocked()
            in_thread(holder.release)
            with no_hang("the waiter, after a release from a foreign thread"):
                await entered.wait()
        assert gate.count == 0

    @pytest.mark.parametrize("limit", [None, 1])
    async def test_close_refuses_the_line_and_the_block_s_exit_drains(
        self, limit: int | None
    ) -> None:
        gate = Gate(limit=limit)
        inside = anyio.Event()
        leave = anyio.Event()
        refused: list[int] = []
        closer = Closer(gate, None)

        async def hold() -> None:
            async with gate.acquire():
                inside.set()
                await leave.wait()

        async def wait_in_line(i: int) -> None:
            with pytest.raises(GateClosed):
                async with gate.acquire():
                    pass
            refused.append(i)

        with no_hang("close() of a gate held by an async with acquire()"):
            async with create_task_group() as tg:
                tg.start_soon(hold)
                await inside.wait()
                if limit is not None:
                    for i in range(2):
                        tg.start_soon(wait_in_line, i)
                    await wait_all_tasks_blocked()
                tg.start_soon(closer.run)
                await wait_all_tasks_blocked()
                assert sorted(refused) == ([0, 1] if limit is not None else [])
                assert not closer.done
                leave.set()
        assert closer.done
        assert gate.count == 0
