from __future__ import annotations

import ast
import copy
import gc
import pickle
import sys
import threading
from collections.abc import Callable
from pathlib import Path

import anyio
import anyio.to_thread
import pytest
from anyio import (
    CancelScope,
    ClosedResourceError,
    create_task_group,
    wait_all_tasks_blocked,
)

from anygate import Gate, GateClosed, GateGuard
from helpers import Closer

pytestmark = pytest.mark.anyio


class TestCreate:
    def test_needs_no_event_loop(self) -> None:
        gate = Gate("tenant")
        assert gate.name == "tenant"
        assert gate.count == 0
        assert not gate.closed
        gate.enter().release()

    def test_unnamed(self) -> None:
        assert Gate().name is None

    def test_name_must_be_a_string(self) -> None:
        with pytest.raises(TypeError, match="name must be a str or None, not int"):
            Gate(42)  # type: ignore[arg-type]

    def test_repr(self) -> None:
        gate = Gate("t")
        guard = gate.enter("h")
        assert repr(gate) == "<Gate 't' open, count=1>"
        assert repr(guard) == "<GateGuard 'h' held on <Gate 't' open, count=1>>"
        guard.release()
        assert repr(Gate()) == "<Gate open, count=0>"

    def test_reused_across_runs_and_backends(self) -> None:
        gate = Gate("shared")

        async def hold_and_close() -> None:
            guard = gate.enter()
            async with create_task_group() as tg:
                tg.start_soon(gate.close)
                await wait_all_tasks_blocked()
                assert gate.closed
                guard.release()
            assert gate.count == 0
            gate.reopen()

        for backend, options in [
            ("asyncio", {}),
            ("trio", {}),
            ("asyncio", {"use_uvloop": True}),
            ("trio", {}),
            ("asyncio", {}),
        ]:
            anyio.run(hold_and_close, backend=backend, backend_options=options)


class TestEnter:
    async def test_counts_until_released(self) -> None:
        gate = Gate()
        first = gate.enter()
        second = gate.enter("second")
        assert gate.count == 2
        assert (first.gate, first.name, second.name) == (gate, None, "second")
        released = [first.released]
        first.release()
        released.append(first.released)
        assert released == [False, True]
        assert gate.count == 1
        second.release()
        assert gate.count == 0

    async def test_release_is_idempotent(self) -> None:
        gate = Gate()
        other = gate.enter()
        guard = gate.enter()
        guard.release()
        guard.release()
        with guard:
            pass
        assert gate.count == 1
        other.release()

    async def test_guard_as_context_manager(self) -> None:
        gate = Gate()
        with gate.enter() as guard:
            assert isinstance(guard, GateGuard)
            assert gate.count == 1
        assert guard.released
        async with gate.enter() as guard:
            assert gate.count == 1
        assert guard.released
        assert gate.count == 0

    async def test_guard_releases_on_error(self) -> None:
        gate = Gate()
        error = ValueError("boom")
        with pytest.raises(ValueError, match="boom") as caught, gate.enter():
            raise error
        assert caught.value is error
        with pytest.raises(ValueError, match="boom"):
            async with gate.enter():
                raise error
        assert gate.count == 0

    async def test_with_gate(self) -> None:
        gate = Gate()
        with gate:
            with gate:
                assert gate.count == 2
            assert gate.count == 1
        async with gate:
            assert gate.count == 1
        with pytest.raises(KeyError), gate:
            raise KeyError
        with pytest.raises(KeyError):
            async with gate:
                raise KeyError
        assert gate.count == 0

    async def test_try_enter(self) -> None:
        gate = Gate()
        guard = gate.try_enter("x")
        assert guard is not None
        assert guard.name == "x"
        guard.release()
        await gate.close()
        assert gate.try_enter() is None
        assert gate.count == 0

    @pytest.mark.parametrize("how", ["enter", "try_enter", "clone"])
    async def test_name_must_be_a_string(self, how: str) -> None:
        gate = Gate()
        source = gate.enter()
        with pytest.raises(TypeError, match="name must be a str or None, not bytes"):
            if how == "enter":
                gate.enter(b"x")  # type: ignore[arg-type]
            elif how == "try_enter":
                gate.try_enter(b"x")  # type: ignore[arg-type]
            else:
                source.clone(b"x")  # type: ignore[arg-type]
        assert gate.count == 1
        source.release()

    async def test_guards_are_made_by_the_gate(self) -> None:
        with pytest.raises(TypeError, match=r"made by Gate\.enter\(\)"):
            GateGuard()

        class Mine(GateGuard):  # type: ignore[misc]
            pass

        with pytest.raises(TypeError, match=r"made by Gate\.enter\(\)"):
            Mine()
        gc.collect()  # the half-built guard's __del__ stays quiet

    @pytest.mark.parametrize("copier", [copy.copy, copy.deepcopy, pickle.dumps])
    async def test_guards_cannot_be_copied(self, copier: Callable[[object], object]) -> None:
        # A copy would share the guard's one hold: released twice, the count
        # would drop below the holds still kept.
        gate = Gate()
        other = gate.enter()
        for name, cancellable in [(None, False), ("n", False), ("c", True)]:
            guard = gate.enter(name, cancellable=cancellable)
            with pytest.raises(TypeError, match=r"not copied or pickled: clone\(\)"):
                copier(guard)
            guard.release()
            assert gate.count == 1
        other.release()

    async def test_every_guard_is_a_gate_guard(self) -> None:
        gate = Gate("g")
        for guard in (gate.enter(), gate.enter("n"), gate.enter("c", cancellable=True)):
            assert isinstance(guard, GateGuard)
            assert repr(guard).startswith("<GateGuard")
            guard.release()
        async with gate.acquire() as guard:
            assert isinstance(guard, GateGuard)

    async def test_unbalanced_exit_is_refused(self) -> None:
        gate = Gate()
        with pytest.raises(RuntimeError, match="exited more often than entered"):
            gate.__exit__(None, None, None)
        assert gate.count == 0
        with gate:
            assert gate.count == 1


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


class TestClone:
    async def test_clone_on_closed_gate(self) -> None:
        gate = Gate()
        parent = gate.enter("parent")
        closer = Closer(gate)
        async with create_task_group() as tg:
            tg.start_soon(closer.run)
            await wait_all_tasks_blocked()
            child = parent.clone("child")
            assert (child.gate, child.name, gate.count) == (gate, "child", 2)
            parent.release()
            await wait_all_tasks_blocked()
            assert not closer.done
            grandchild = child.clone()
            child.release()
            await wait_all_tasks_blocked()
            assert not closer.done
            grandchild.release()
        assert closer.done

    async def test_clone_of_released_guard(self) -> None:
        gate = Gate()
        guard = gate.enter("h")
        guard.release()
        with pytest.raises(RuntimeError, match=r"cannot clone .*'h' released"):
            guard.clone()
        assert gate.count == 0


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


class TestLeakedGuard:
    async def test_collected_guard_is_released_with_a_warning(self) -> None:
        gate = Gate("tenant")
        closer = Closer(gate)
        async with create_task_group() as tg:
            tg.start_soon(closer.run)
            # close() is blocked until the leaked guard is collected.
            guard: GateGuard | None = gate.enter("cyclic")
            cycle: list[object] = [guard]
            cycle.append(cycle)
            del guard
            await wait_all_tasks_blocked()
            assert not closer.done
            with pytest.warns(ResourceWarning, match="'cyclic' held on <Gate 'tenant'"):
                del cycle
                gc.collect()
        assert closer.done

    def test_warning_names_holder(self) -> None:
        gate = Gate("tenant")
        with pytest.warns(ResourceWarning, match="'leaky' held on <Gate 'tenant'"):
            gate.enter("leaky")
        assert gate.count == 0


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


class TestIsolation:
    def test_implementation_imports_only_anyio(self) -> None:
        source = Path(__file__).parent.parent / "src" / "anygate"
        forbidden = {"asyncio", "trio", "sniffio", "uvloop"}
        for path in source.glob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Import):
                    names = [alias.name for alias in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0:
                    names = [node.module or ""]
                else:
                    continue
                for name in names:
                    assert name.split(".")[0] not in forbidden, f"{path.name} imports {name}"
