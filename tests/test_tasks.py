"""Tasks that hold a gate: ``start_soon``, ``start``, ``guarded``, ``gated``."""

from __future__ import annotations

import asyncio
import gc
import inspect
import sys
import warnings
from collections.abc import Callable, Coroutine
from typing import Any

import anyio
import anyio.lowlevel
import anyio.to_thread
import pytest
from anyio import create_task_group, wait_all_tasks_blocked
from anyio.abc import TaskStatus

from anygate import Gate, GateClosed, gated
from helpers import BACKENDS, Closer, no_hang

if sys.version_info < (3, 11):
    from exceptiongroup import BaseExceptionGroup
from helpers import GRACE, fail

pytestmark = pytest.mark.anyio


ASYNCIO_BACKENDS = [p for p in BACKENDS if p.values[0][0] == "asyncio"]  # type: ignore[index]


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
            gated(3)  # type: ignore[call-overload]


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
            Gate().guarded(3)  # type: ignore[call-overload]


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


class Dropping:
    """A task starter that drops each task before it starts, as a task group
    does with a task cancelled before its first step."""

    def start_soon(self, func: Callable[..., Any], /, *args: Any, name: Any = None) -> None:
        func(*args).close()

    async def start(self, func: Callable[..., Any], /, *args: Any, name: Any = None) -> Any:
        raise NotImplementedError


class TestStartSoonDroppedBeforeItStarts:
    """A task never started cannot release its hold: its guard does, when its
    coroutine is freed, with a ResourceWarning, and the close returns."""

    @pytest.mark.parametrize("name", [None, "job"])
    @pytest.mark.parametrize("cancellable", [False, True])
    async def test_released_when_its_coroutine_is_freed(
        self, name: str | None, cancellable: bool
    ) -> None:
        gate = Gate("g")
        with pytest.warns(ResourceWarning, match="garbage-collected without being released"):
            gate.start_soon(Dropping(), anyio.sleep_forever, name=name, cancellable=cancellable)
            gc.collect()
        assert gate.count == 0
        assert gate.holders() == []
        with no_hang("close() after a task dropped before it started"):
            await gate.close()

    async def test_a_started_task_leaves_no_guard_behind(self) -> None:
        """An unnamed task's guard hands its hold to the task as it starts."""
        gate = Gate("g")
        running = anyio.Event()
        stop = anyio.Event()

        async def work() -> None:
            running.set()
            await stop.wait()

        async with create_task_group() as tg:
            gate.start_soon(tg, work)
            await running.wait()
            guards = [o for o in gc.get_objects() if type(o).__name__ == "UnnamedGuard"]
            assert [g for g in guards if g.gate is gate] == []
            assert gate.count == 1
            stop.set()
        assert gate.count == 0


class TestGuardedErrors:
    async def test_exception_passes_through_unchanged(self) -> None:
        gate = Gate()

        @gate.guarded
        async def work() -> None:
            await anyio.lowlevel.checkpoint()
            fail()

        with pytest.raises(ValueError, match="second") as info:
            await work()
        assert isinstance(info.value.__context__, KeyError)
        assert info.traceback[-1].name == "fail"
        assert gate.count == 0


class TestGuardedOnAsyncio:
    """The old code entered the gate when the guarded function was called, so a
    task cancelled before its first step held the gate until the collector
    freed its coroutine, with a ResourceWarning."""

    @staticmethod
    def guarded_work(gate: Gate, started: list[bool]) -> Callable[[], Any]:
        @gate.guarded
        async def work() -> None:
            started.append(True)
            await anyio.sleep_forever()

        return work

    @pytest.mark.parametrize("anyio_backend", ASYNCIO_BACKENDS)
    async def test_task_cancelled_before_its_first_step_holds_nothing(self) -> None:
        gate = Gate("g")
        started: list[bool] = []
        work = self.guarded_work(gate, started)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            task = asyncio.create_task(work())
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            del task
            gc.collect()
        assert started == []
        assert gate.count == 0
        await wait_all_tasks_blocked()
        assert [w for w in caught if issubclass(w.category, ResourceWarning)] == []
        with no_hang("close() after a guarded call cancelled before it started"):
            await gate.close()

    @pytest.mark.parametrize("anyio_backend", ASYNCIO_BACKENDS)
    async def test_wait_for_with_no_time(self) -> None:
        gate = Gate("g")
        work = self.guarded_work(gate, [])
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            with pytest.raises(asyncio.TimeoutError):
                await asyncio.wait_for(work(), 0)
            gc.collect()
        assert gate.count == 0
        assert [w for w in caught if issubclass(w.category, ResourceWarning)] == []
        with no_hang("close() after wait_for(guarded(), 0)"):
            await gate.close()

    def test_guarded_and_gated_are_coroutine_functions(self) -> None:
        gate = Gate()

        @gate.guarded
        async def work() -> None:
            pass

        class Tenant:
            def __init__(self) -> None:
                self.gate = Gate()

            @gated
            async def handle(self) -> None:
                pass

        assert inspect.iscoroutinefunction(work)
        assert inspect.iscoroutinefunction(Tenant.handle)
        assert inspect.iscoroutinefunction(Tenant().handle)


class Flusher:
    def __init__(self) -> None:
        self.gate = Gate("tenant")
        self.inside = anyio.Event()
        self.names: list[str] = []

    @gated
    async def plain(self) -> int:
        self.names = [h.name for h in self.gate.holders()]
        return 1

    @gated(name="flush", cancellable=True)
    async def flush(self, rows: int) -> int:
        self.names = [h.name for h in self.gate.holders()]
        self.inside.set()
        await anyio.sleep_forever()
        return rows  # pragma: no cover


class TestNamedAndCancellableCalls:
    async def test_gated_names_the_hold_after_the_method(self) -> None:
        flusher = Flusher()
        assert await flusher.plain() == 1
        assert flusher.names == ["Flusher.plain"]
        assert inspect.iscoroutinefunction(Flusher.flush)

    async def test_gated_cancellable_is_cancelled_at_the_grace(self) -> None:
        flusher = Flusher()
        errors: list[GateClosed] = []

        async def call() -> None:
            try:
                await flusher.flush(3)
            except GateClosed as exc:
                errors.append(exc)

        async with create_task_group() as tg:
            tg.start_soon(call)
            await flusher.inside.wait()
            assert flusher.names == ["flush"]
            with no_hang("the cancellable call ended by the grace"):
                await flusher.gate.close(grace=0)
        assert len(errors) == 1
        assert "grace ran out and cancelled the call 'flush'" in str(errors[0])
        assert errors[0].gate is flusher.gate

    async def test_guarded_bare_and_with_arguments(self) -> None:
        gate = Gate("pool")
        seen: list[list[str]] = []

        @gate.guarded
        async def bare(x: int) -> int:
            seen.append([h.name for h in gate.holders()])
            return x

        @gate.guarded(name="named")
        async def named(x: int) -> int:
            seen.append([h.name for h in gate.holders()])
            return x

        assert await bare(1) == 1
        assert await named(2) == 2
        assert seen == [
            ["TestNamedAndCancellableCalls.test_guarded_bare_and_with_arguments.<locals>.bare"],
            ["named"],
        ]

    async def test_guarded_cancellable(self) -> None:
        gate = Gate("pool")
        inside = anyio.Event()

        @gate.guarded(cancellable=True)
        async def poll() -> None:
            inside.set()
            await anyio.sleep_forever()

        async with create_task_group() as tg:

            async def call() -> None:
                with pytest.raises(GateClosed, match="cancelled the call"):
                    await poll()

            tg.start_soon(call)
            await inside.wait()
            with no_hang("the cancellable guarded call ended by the grace"):
                await gate.close(grace=0)

    def test_bad_name(self) -> None:
        with pytest.raises(TypeError, match="name must be a str or None"):
            gated(name=1)  # type: ignore[call-overload]
        with pytest.raises(TypeError, match="name must be a str or None"):
            Gate().guarded(name=b"x")  # type: ignore[call-overload]
