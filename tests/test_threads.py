"""Threads and other event loops: releases, closes and clones from anywhere."""

from __future__ import annotations

import contextvars
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import anyio
import anyio.abc
import anyio.lowlevel
import anyio.to_thread
import pytest
from anyio import (
    CancelScope,
    create_task_group,
    wait_all_tasks_blocked,
)

from anygate import Gate, GateClosed, GateGuard
from helpers import (
    GRACE,
    HANG,
    Block,
    Closer,
    Pause,
    fail_first,
    hold_back_forever,
    in_fresh_context,
    in_thread,
    no_hang,
    private,
    reason_of,
    scope_of,
    waiters,
)

pytestmark = pytest.mark.anyio


@contextmanager
def thread_starts(monkeypatch: pytest.MonkeyPatch, forbid: bool = False) -> Iterator[list[str]]:
    """Record the threads started in the block by any thread but this one (the
    event loop's); with ``forbid``, fail to start them.

    The event loop's own thread starts threads of its own: anyio's worker
    threads, and trio's I/O thread when the pytest plugin runs trio as a guest.
    """
    started: list[str] = []
    start = threading.Thread.start
    loop_thread = threading.get_ident()

    def record(thread: threading.Thread) -> None:
        if threading.get_ident() != loop_thread:
            started.append(f"{thread.name} from {threading.current_thread().name}")
            if forbid:
                raise RuntimeError("no thread may start here")
        start(thread)

    with monkeypatch.context() as patch:
        patch.setattr(threading.Thread, "start", record)
        yield started


@contextmanager
def switch_interval(seconds: float) -> Iterator[None]:
    previous = sys.getswitchinterval()
    sys.setswitchinterval(seconds)
    try:
        yield
    finally:
        sys.setswitchinterval(previous)


def inheriting(func: Callable[[], object]) -> Callable[[], object]:
    """``func``, to run in a thread as a thread that inherited this context."""
    context = contextvars.copy_context()
    return lambda: context.run(func)


class TestThreads:
    async def test_worker_thread_enters_and_releases(self) -> None:
        gate = Gate()
        guard = await anyio.to_thread.run_sync(gate.enter)
        child = await anyio.to_thread.run_sync(guard.clone)
        assert gate.count == 2
        await anyio.to_thread.run_sync(child.release)
        await anyio.to_thread.run_sync(guard.release)
        assert gate.count == 0

    async def test_last_release_in_worker_thread_wakes_close(self) -> None:
        gate = Gate()
        guard = gate.enter()
        closer = Closer(gate)
        async with create_task_group() as tg:
            tg.start_soon(closer.run)
            await wait_all_tasks_blocked()
            await anyio.to_thread.run_sync(guard.release)
        assert closer.done

    async def test_last_release_in_foreign_thread_wakes_close(self) -> None:
        gate = Gate()
        guard = gate.enter()
        release = threading.Event()

        def release_later() -> None:
            release.wait()
            guard.release()

        thread = threading.Thread(target=release_later)
        thread.start()
        try:
            closer = Closer(gate)
            async with create_task_group() as tg:
                tg.start_soon(closer.run)
                await wait_all_tasks_blocked()
                assert not closer.done
                release.set()
            assert closer.done
        finally:
            release.set()
            thread.join()

    async def test_last_release_while_event_loop_joins_the_thread(self) -> None:
        gate = Gate()
        guard = gate.enter()
        closer = Closer(gate)
        async with create_task_group() as tg:
            tg.start_soon(closer.run)
            await wait_all_tasks_blocked()
            thread = threading.Thread(target=guard.release)
            thread.start()
            # Blocks the event loop: the release must not wait for it.
            thread.join(timeout=30)
            assert not thread.is_alive()
        assert closer.done

    async def test_threads_racing_a_close(self) -> None:
        gate = Gate()
        cycles = 100_000
        closed_at_zero = threading.Event()
        halfway = [threading.Event() for _ in range(4)]
        # Holds every thread at halfway, so that the close lands while all churn.
        go = threading.Event()
        admitted_late: list[GateGuard] = []
        refused = [0] * 4
        errors: list[BaseException] = []

        def churn(index: int) -> None:
            cloning = index % 2 == 1
            try:
                for cycle in range(cycles):
                    if cycle == cycles // 2:
                        halfway[index].set()
                        go.wait()
                    guard = gate.try_enter()
                    if guard is None:
                        refused[index] += 1
                        continue
                    # Held now: if close() has already returned, this was admitted late.
                    if closed_at_zero.is_set():
                        admitted_late.append(guard)
                    if cloning:
                        guard.clone().release()
                    guard.release()
            except BaseException as exc:  # pragma: no cover - reported below
                errors.append(exc)

        def wait_halfway() -> None:
            for event in halfway:
                event.wait()

        threads = [threading.Thread(target=churn, args=(i,)) for i in range(4)]
        # Switch threads as often as the interpreter allows, to hit the windows
        # between one step of a hold and the next.
        interval = sys.getswitchinterval()
        sys.setswitchinterval(1e-6)
        for thread in threads:
            thread.start()
        try:
            await anyio.to_thread.run_sync(wait_halfway)
            go.set()
            await gate.close()
            closed_at_zero.set()
        finally:
            go.set()
            for thread in threads:
                thread.join()
            sys.setswitchinterval(interval)
        assert errors == []
        assert admitted_late == []
        assert gate.count == 0
        # The close landed mid-churn: every thread was refused in the end.
        assert all(0 < count <= cycles // 2 for count in refused), refused


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


class TestWakeupFromAForeignThread:
    """The old code started a thread for each wakeup from another thread, and lost
    the wakeup if that thread could not start."""

    async def test_last_release_in_a_thread_anyio_never_saw(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        gate = Gate("g")
        guard = gate.enter("foreign")
        go = threading.Event()
        errors: list[BaseException] = []
        closed = anyio.Event()

        def release_later() -> None:
            go.wait(HANG)
            try:
                guard.release()
            except BaseException as exc:  # reported below
                errors.append(exc)

        async def close() -> None:
            await gate.close()
            closed.set()

        thread = threading.Thread(target=release_later, daemon=True)
        thread.start()
        with thread_starts(monkeypatch, forbid=True) as started:
            async with create_task_group() as tg:
                tg.start_soon(close)
                await wait_all_tasks_blocked()
                go.set()
                try:
                    with no_hang("close() after the last release in a foreign thread"):
                        await closed.wait()
                finally:
                    tg.cancel_scope.cancel()
        thread.join(HANG)
        assert not errors
        assert started == []
        assert gate.count == 0

    async def test_releases_from_worker_threads_start_no_more_threads(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        jobs = 2000
        gate = Gate("g", limit=4)
        finished = 0

        async def job() -> None:
            nonlocal finished
            guard = await gate.acquire()
            # The release admits the next waiter: a wakeup from a worker thread.
            await anyio.to_thread.run_sync(guard.release)
            finished += 1

        with thread_starts(monkeypatch) as started, no_hang(f"{jobs} jobs"):
            async with create_task_group() as tg:
                for _ in range(jobs):
                    tg.start_soon(job)
        assert finished == jobs
        assert started == []
        assert gate.count == 0
        await gate.close()


class TestReopenAndThreads:
    def test_reopen_while_a_thread_s_entry_is_being_refused(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        gate = Gate("g")
        gate.close_nowait()
        counted, go = threading.Event(), threading.Event()
        refusal = private(Gate)._refusal
        results: list[GateGuard | None] = []

        def paused_refusal(self: Gate) -> Exception | None:
            error: Exception | None = refusal(self)
            if threading.current_thread() is worker:
                counted.set()
                go.wait(HANG)
            return error

        monkeypatch.setattr(Gate, "_refusal", paused_refusal)
        worker = threading.Thread(target=lambda: results.append(gate.try_enter()), daemon=True)
        worker.start()
        try:
            assert counted.wait(HANG)
            assert gate.count == 1  # the entry being refused counts itself for now
            gate.reopen()
        finally:
            go.set()
            worker.join(HANG)
        assert results == [None]
        assert gate.count == 0
        assert not gate.closed
        with gate:
            assert gate.count == 1

    async def test_reopen_between_a_thread_s_last_release_and_its_follow_up(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        gate = Gate("g")
        guard = gate.enter("foreign")
        popped, go = threading.Event(), threading.Event()
        settle = private(Gate)._settle

        def paused_settle(self: Gate, soon: bool = False) -> None:
            if threading.current_thread() is releaser:
                popped.set()
                go.wait(HANG)
            settle(self, soon)

        monkeypatch.setattr(Gate, "_settle", paused_settle)
        releaser = threading.Thread(target=guard.release, daemon=True)
        closer = Closer(gate)
        async with create_task_group() as tg:
            tg.start_soon(closer.run)
            await wait_all_tasks_blocked()
            releaser.start()
            try:
                assert popped.wait(HANG)
                assert gate.count == 0
                gate.reopen()  # nothing holds the gate: this call sees the drain
            finally:
                go.set()
                releaser.join(HANG)
            await wait_all_tasks_blocked()
            closer.scope.cancel()
        assert closer.done, "the reopen stranded the close"
        assert not gate.closed

    async def test_reopen_before_the_queued_wakeup_of_the_closer_runs(self) -> None:
        gate = Gate("g")
        guard = gate.enter("foreign")
        closed = anyio.Event()

        async def close() -> None:
            await gate.close()
            closed.set()

        async with create_task_group() as tg:
            tg.start_soon(close)
            await wait_all_tasks_blocked()
            # With no await from here on, the closer's wakeup stays queued in the
            # loop until after the reopen and a new entry.
            in_thread(guard.release)
            gate.reopen()
            entry = gate.enter("new")
            try:
                with no_hang("close() after a reopen and a new entry"):
                    await closed.wait()
            finally:
                tg.cancel_scope.cancel()
        assert gate.count == 1
        entry.release()

    async def test_a_drained_close_returns_at_once_after_reopen(self) -> None:
        gate = Gate("g")
        guard = gate.enter()
        drained = gate.close()
        guard.release()
        gate.reopen()
        entry = gate.enter("new")
        with no_hang("awaiting a drained close after a reopen and a new entry"):
            await drained
        assert not gate.closed
        entry.release()


class TestCancellableCloneWithoutALoop:
    def test_in_a_thread_with_no_event_loop(self) -> None:
        gate = Gate("g")
        guard = gate.enter("holder")
        with pytest.raises(anyio.NoEventLoopError, match=r"clone\(cancellable=True\)"):
            guard.clone("clone", cancellable=True)
        with pytest.raises(anyio.NoEventLoopError, match=r"enter\(cancellable=True\)"):
            gate.enter("entry", cancellable=True)
        assert gate.count == 1
        assert [h.name for h in gate.holders()] == ["holder"]
        guard.release()
        assert gate.count == 0

    async def test_in_a_foreign_thread_while_a_loop_runs_elsewhere(self) -> None:
        gate = Gate("g")
        guard = gate.enter("holder")

        def clone() -> None:
            with pytest.raises(anyio.NoEventLoopError):
                guard.clone("clone", cancellable=True)

        in_thread(clone)
        assert gate.count == 1
        assert [h.name for h in gate.holders()] == ["holder"]
        guard.release()
        await gate.close()


class TestThreadStress:
    """Threads enter, are refused, clone and release, while the loop closes,
    reopens and closes again; the interpreter switches threads every microsecond.

    Two threads besides the loop's: on two cores, a third makes the run several
    times slower without finding more.
    """

    @pytest.mark.parametrize("limit", [None, 2], ids=["unbounded", "bounded"])
    async def test_close_reopen_rounds(self, limit: int | None) -> None:
        rounds = 100
        gate = Gate("stress", limit=limit, warn_after=None)
        stop, entered = threading.Event(), threading.Event()
        errors: list[BaseException] = []
        held_at_close = 0

        def work() -> None:
            try:
                while not stop.is_set():
                    guard = gate.try_enter()
                    if guard is None:
                        continue
                    entered.set()
                    clone = guard.clone("clone")
                    guard.release()
                    clone.clone().release()
                    clone.release()
            except BaseException as exc:  # reported below
                errors.append(exc)

        threads = [threading.Thread(target=work, daemon=True) for _ in range(2)]
        with switch_interval(1e-6):
            for thread in threads:
                thread.start()
            try:
                for round_ in range(rounds):
                    # Blocking the event loop's thread hands the threads the GIL at once.
                    entered.clear()
                    assert entered.wait(HANG), f"no thread entered in round {round_}"
                    drained = gate.close()
                    held_at_close += gate.count > 0  # a thread's release ends this close
                    with no_hang(f"close() in round {round_}"):
                        await drained
                    gate.reopen()
            finally:
                stop.set()
                for thread in threads:
                    thread.join(HANG)
        assert not any(thread.is_alive() for thread in threads)
        assert errors == []
        assert held_at_close > 0
        assert gate.count == 0
        assert gate.statistics().tasks_waiting == 0
        await gate.close()


class TestInheritedContext:
    async def test_enter_cancellable_needs_a_loop(self) -> None:
        gate = Gate("tenant")
        with pytest.raises(anyio.NoEventLoopError, match="needs an event loop in the calling"):
            in_thread(inheriting(lambda: gate.enter("worker", cancellable=True)))
        assert gate.count == 0

    async def test_clone_cancellable_needs_a_loop(self) -> None:
        gate = Gate("tenant")
        with gate.enter("request") as guard:
            with pytest.raises(anyio.NoEventLoopError, match="needs an event loop in the calling"):
                in_thread(inheriting(lambda: guard.clone("worker", cancellable=True)))
            assert gate.count == 1
        assert gate.count == 0

    async def test_release_from_such_a_thread_wakes_the_close(self) -> None:
        gate = Gate("tenant")
        guard = gate.enter("request")
        closer = Closer(gate)
        with no_hang("close() woken by a release in a thread that inherited the context"):
            async with anyio.create_task_group() as tg:
                tg.start_soon(closer.run)
                await anyio.wait_all_tasks_blocked()
                in_thread(inheriting(guard.release))
        assert closer.done

    async def test_close_and_clone_from_such_a_thread(self) -> None:
        gate = Gate("tenant")
        guard = gate.enter("request")
        child = Gate("child", parent=gate)

        def in_the_thread() -> None:
            gate.close_nowait(grace=5)
            guard.clone("worker").release()

        in_thread(inheriting(in_the_thread))
        assert gate.closed
        assert child.closed
        guard.release()
        with no_hang("close() after a close_nowait() from a thread that inherited the context"):
            await gate.close()


class TestToThread:
    async def test_holds_the_gate_while_the_function_runs(self) -> None:
        gate = Gate("pool")
        counts: list[int] = []

        def work(a: int, b: int) -> int:
            counts.append(gate.count)
            return a + b

        assert await gate.to_thread(work, 1, 2) == 3
        assert counts == [1]
        assert gate.count == 0

    async def test_released_when_the_function_raises(self) -> None:
        gate = Gate("pool", limit=1)
        with pytest.raises(KeyError):
            await gate.to_thread(fail_first)
        assert gate.count == 0

    async def test_named_holder_is_listed(self) -> None:
        gate = Gate("pool")
        names: list[list[str]] = []
        await gate.to_thread(lambda: names.append([h.name for h in gate.holders()]), name="sync")
        assert names == [["sync"]]

    async def test_refuses_on_a_closed_gate_without_starting_the_thread(self) -> None:
        gate = Gate("pool")
        await gate.close()
        ran: list[bool] = []
        with pytest.raises(GateClosed, match="gate 'pool' is closed"):
            await gate.to_thread(lambda: ran.append(True))
        assert ran == []
        assert gate.count == 0

    async def test_waits_for_room_like_acquire(self) -> None:
        gate = Gate("pool", limit=1)
        holder = gate.enter()
        done = anyio.Event()

        async def run() -> None:
            await gate.to_thread(lambda: None)
            done.set()

        async with create_task_group() as tg:
            tg.start_soon(run)
            await wait_all_tasks_blocked()
            assert private(gate)._admission.line  # waiting in line, no thread yet
            holder.release()
            with no_hang("to_thread admitted when room was made"):
                await done.wait()

    async def test_close_waits_for_an_abandoned_thread(self) -> None:
        gate = Gate("pool")
        pause = Pause()
        closer = Closer(gate)
        with CancelScope() as scope:
            async with create_task_group() as tg:

                async def call() -> None:
                    await gate.to_thread(pause.here, abandon_on_cancel=True)

                tg.start_soon(call)
                await anyio.to_thread.run_sync(pause.wait_reached)
                scope.cancel()  # the caller returns at once, abandoning the thread
        assert scope.cancelled_caught
        assert gate.count == 1  # the thread still holds
        with no_hang("close() woken by the abandoned thread's release"):
            async with create_task_group() as tg:
                tg.start_soon(closer.run)
                await wait_all_tasks_blocked()
                assert not closer.done
                pause.go()
        assert closer.done
        assert gate.count == 0
