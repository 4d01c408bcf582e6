"""Bounded gates: the limit, ``acquire()`` and its line, first come first served."""

from __future__ import annotations

import sys
import threading
from collections.abc import AsyncIterator, Callable
from contextlib import (
    AbstractAsyncContextManager,
    asynccontextmanager,
)
from typing import Any

import anyio
import anyio.lowlevel
import anyio.to_thread
import pytest
from anyio import (
    CancelScope,
    CapacityLimiter,
    create_task_group,
    get_cancelled_exc_class,
    wait_all_tasks_blocked,
)

from anygate import Gate, GateClosed, GateGuard
from helpers import (
    HANG,
    Closer,
    LockSpy,
    in_thread,
    no_hang,
    private,
)

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


class SlippingEntry:
    """Another thread's ``try_enter()``, run until the gate has admitted or refused
    it. A refused entry then takes the gate's lock to count the refusal, which
    the caller may hold: the thread finishes in :meth:`finish`."""

    def __init__(self, gate: Gate, monkeypatch: pytest.MonkeyPatch) -> None:
        self.gate = gate
        self.admitted: bool | None = None
        self.guard: GateGuard | None = None
        self._decided = threading.Event()
        self._thread = threading.Thread(target=self._enter, daemon=True)
        refusal = private(Gate)._refusal

        def observed(gate: Gate) -> Exception | None:
            error: Exception | None = refusal(gate)
            if threading.current_thread() is self._thread:
                self.admitted = error is None
                self._decided.set()
            return error

        monkeypatch.setattr(Gate, "_refusal", observed)

    def _enter(self) -> None:
        self.guard = self.gate.try_enter("slipped")

    def start(self) -> None:
        if self._thread.ident is None:
            self._thread.start()
            assert self._decided.wait(HANG), "the entry was never admitted or refused"

    def finish(self) -> None:
        if self._thread.ident is not None:
            self._thread.join(HANG)
            assert not self._thread.is_alive()
        if self.guard is not None:
            self.guard.release()


async def _set(event: anyio.Event) -> None:
    event.set()


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


class TestCancelledAcquireWaiter:
    """A task waiting in acquire() is cancelled in the same tick as a close or a
    release wakes it. The old code raised ``ValueError: ... not in deque`` when a
    close had already emptied the line."""

    @pytest.mark.parametrize("order", ["cancel-then-close", "close-then-cancel"])
    @pytest.mark.parametrize("scope", ["own-scope", "enclosing-task-group"])
    async def test_refused_in_the_tick_it_is_cancelled(self, order: str, scope: str) -> None:
        gate = Gate("g", limit=1)
        holder = gate.enter("holder")
        outcome: list[str] = []
        own = CancelScope()

        async def wait_in_line() -> None:
            try:
                with own:
                    await gate.acquire("waiter")
                    outcome.append("admitted")
            except GateClosed:
                outcome.append("refused")
            except get_cancelled_exc_class():
                outcome.append("cancelled")
                raise
            if own.cancelled_caught:
                outcome.append("cancelled")

        async with create_task_group() as outer:
            outer.start_soon(wait_in_line)
            await wait_all_tasks_blocked()
            assert gate.statistics().tasks_waiting == 1
            cancel = own.cancel if scope == "own-scope" else outer.cancel_scope.cancel
            # No await between the two: the same tick.
            if order == "cancel-then-close":
                cancel()
                gate.close_nowait()
            else:
                gate.close_nowait()
                cancel()
        # A cancellation delivered first wins; a backend that had already
        # resumed the task with the refusal delivers that instead.
        expected = [["cancelled"]] if order == "cancel-then-close" else [["cancelled"], ["refused"]]
        assert outcome in expected
        assert gate.count == 1
        assert gate.statistics().tasks_waiting == 0
        assert [h.name for h in gate.holders()] == ["holder"]
        holder.release()
        with no_hang("close() after the refused waiter was cancelled"):
            await gate.close()

    @pytest.mark.parametrize("order", ["cancel-then-release", "release-then-cancel"])
    async def test_admitted_in_the_tick_it_is_cancelled_hands_the_slot_on(self, order: str) -> None:
        gate = Gate("g", limit=1)
        holder = gate.enter("holder")
        first_scope = CancelScope()
        second_in = anyio.Event()
        second_done = anyio.Event()

        async def first() -> None:
            with first_scope:
                async with gate.acquire("first"):
                    await anyio.sleep_forever()

        async def second() -> None:
            async with gate.acquire("second"):
                second_in.set()
                await second_done.wait()

        async with create_task_group() as tg:
            tg.start_soon(first)
            await wait_all_tasks_blocked()
            tg.start_soon(second)
            await wait_all_tasks_blocked()
            assert gate.statistics().tasks_waiting == 2
            if order == "cancel-then-release":
                first_scope.cancel()
                holder.release()
            else:
                holder.release()
                first_scope.cancel()
            with no_hang("the second waiter, after the first was cancelled as it was admitted"):
                await second_in.wait()
            assert gate.count == 1
            assert gate.statistics().tasks_waiting == 0
            assert [h.name for h in gate.holders()] == ["second"]
            second_done.set()
        assert first_scope.cancelled_caught
        assert gate.count == 0
        gate.enter().release()  # the slot is free for whoever comes next


class TestLimitIsKept:
    """A bounded gate admits entries without its lock (count first, then check);
    where it gives room away under the lock, it must leave no moment in which an
    entry from another thread fits in that same room."""

    async def test_no_entry_slips_in_while_a_waiter_is_admitted(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        gate = Gate("g", limit=1)
        holder = gate.enter("holder")
        slipping = SlippingEntry(gate, monkeypatch)
        admission = type(private(gate)._admission)
        admit = admission.admit

        def admit_then_enter(self: Any, *args: Any) -> Any:
            admitted = admit(self, *args)
            if admitted:
                slipping.start()  # another thread enters as the waiter leaves the line
            return admitted

        monkeypatch.setattr(admission, "admit", admit_then_enter)
        acquired: list[GateGuard] = []

        async def acquire() -> None:
            acquired.append(await gate.acquire("waiter"))

        async with create_task_group() as tg:
            tg.start_soon(acquire)
            await wait_all_tasks_blocked()
            holder.release()
        most = gate.count
        slipping.finish()
        for guard in acquired:
            guard.release()
        assert len(acquired) == 1
        assert slipping.admitted is not None, "no waiter was admitted: the test needs updating"
        assert slipping.admitted is False, f"limit 1, count {most}"

    async def test_no_entry_slips_in_while_acquire_takes_room_under_the_lock(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        gate = Gate("g", limit=1)
        holder = gate.enter("holder")
        slipping = SlippingEntry(gate, monkeypatch)
        spy = LockSpy(gate)
        admission = type(private(gate)._admission)
        has_room = admission.has_room

        def has_room_then_enter(self: Any, count: int) -> bool:
            room: bool = has_room(self, count)
            if sys._getframe(1).f_code.co_name == "_wait_in_line":
                slipping.start()  # another thread enters as acquire() looks for room
            return room

        monkeypatch.setattr(admission, "has_room", has_room_then_enter)
        # The room appears while acquire() holds the lock to join the line.
        spy.at("_wait_in_line", lambda: in_thread(holder.release))
        guard = await gate.acquire("waiter")
        spy.check()
        most = gate.count
        slipping.finish()
        guard.release()
        assert slipping.admitted is not None, (
            "acquire() took no room under the lock: update the test"
        )
        assert slipping.admitted is False, f"limit 1, count {most}"


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


class TestSettableLimit:
    """Translated from anyio's test_increase_tokens/test_decrease_tokens and trio's
    test_CapacityLimiter_change_total_tokens, and a limit of 0."""

    async def test_raising_admits_waiters_at_once_in_order(self) -> None:
        gate = Gate("pool", limit=1)
        holder = await gate.acquire()
        order: list[int] = []

        async def waiter(i: int) -> None:
            async with gate.acquire():
                order.append(i)
                await anyio.sleep_forever()

        async with create_task_group() as tg:
            for i in range(4):
                tg.start_soon(waiter, i)
                await wait_all_tasks_blocked()
            assert order == []
            gate.limit = 3
            await wait_all_tasks_blocked()
            # In order: the first two in line (trio runs them in its own order).
            assert sorted(order) == [0, 1]
            assert gate.count == 3
            gate.limit = 10
            await wait_all_tasks_blocked()
            assert sorted(order) == [0, 1, 2, 3]
            tg.cancel_scope.cancel()
        holder.release()
        assert gate.count == 0

    async def test_lowering_admits_no_one_until_holds_fall_below(self) -> None:
        gate = Gate("pool", limit=3)
        guards = [gate.enter() for _ in range(3)]
        gate.limit = 1
        assert gate.limit == 1
        assert gate.count == 3  # nothing held is revoked
        admitted = anyio.Event()

        async def waiter() -> None:
            async with gate.acquire():
                admitted.set()

        async with create_task_group() as tg:
            tg.start_soon(waiter)
            await wait_all_tasks_blocked()
            with pytest.raises(anyio.WouldBlock):
                gate.enter()
            guards.pop().release()
            guards.pop().release()
            await wait_all_tasks_blocked()
            assert not admitted.is_set()  # one hold left: still at the limit of 1
            guards.pop().release()
            with no_hang("the waiter admitted once the holds fell below"):
                await admitted.wait()

    async def test_limit_zero_pauses(self) -> None:
        gate = Gate("pool", limit=0)
        assert gate.limit == 0
        with pytest.raises(anyio.WouldBlock, match="at its limit of 0"):
            gate.enter()
        admitted = anyio.Event()

        async def waiter() -> None:
            async with gate.acquire():
                admitted.set()

        async with create_task_group() as tg:
            tg.start_soon(waiter)
            await wait_all_tasks_blocked()
            assert not admitted.is_set()
            gate.limit = 1
            with no_hang("the waiter admitted when the pause ended"):
                await admitted.wait()
        gate.limit = 0
        with pytest.raises(anyio.WouldBlock):
            gate.enter()

    async def test_raised_from_another_thread_while_tasks_wait(self) -> None:
        gate = Gate("pool", limit=0)
        admitted: list[int] = []
        all_in = anyio.Event()

        async def waiter(i: int) -> None:
            async with gate.acquire():
                admitted.append(i)
                if len(admitted) == 3:
                    all_in.set()
                await all_in.wait()

        async with create_task_group() as tg:
            for i in range(3):
                tg.start_soon(waiter, i)
            await wait_all_tasks_blocked()

            def raise_limit() -> None:
                gate.limit = 3

            await anyio.to_thread.run_sync(raise_limit)
            with no_hang("waiters woken by a limit raised in a thread"):
                await all_in.wait()
        assert sorted(admitted) == [0, 1, 2]

    async def test_raised_in_a_thread_while_a_waiter_joins_the_line(self) -> None:
        """The limit is raised by another thread while a task joins the line
        under the gate's lock: one of the two sees the other."""
        gate = Gate("pool", limit=1)
        holder = gate.enter()
        spy = LockSpy(gate)
        done = threading.Event()

        def set_in_thread() -> None:
            gate.limit = 2
            done.set()

        def raise_limit() -> None:
            threading.Thread(target=set_in_thread).start()

        spy.at("_wait_in_line", raise_limit)
        with no_hang("a waiter joining as the limit is raised"):
            guard = await gate.acquire()
        spy.check()
        assert done.wait(HANG)
        assert gate.count == 2
        guard.release()
        holder.release()

    @pytest.mark.parametrize(
        ("value", "error", "match"),
        [
            (True, TypeError, "limit must be an int"),
            (2.0, TypeError, "limit must be an int"),
            ("2", TypeError, "limit must be an int"),
            (None, TypeError, "limit must be an int"),
            (-1, ValueError, "limit must be 0 or more"),
        ],
    )
    async def test_bad_values(self, value: object, error: type[Exception], match: str) -> None:
        gate = Gate("pool", limit=2)
        with pytest.raises(error, match=match):
            gate.limit = value  # type: ignore[assignment]
        assert gate.limit == 2

    async def test_unbounded_gate_has_no_limit_to_change(self) -> None:
        gate = Gate("tenant")
        with pytest.raises(TypeError, match=r"gate 'tenant' has no limit.*Gate\(limit=\.\.\.\)"):
            gate.limit = 3
        assert gate.limit is None
