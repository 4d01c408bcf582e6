"""Entering a gate: guards, clones, ``with gate:``, bad values, and the
counter's rule over every way to hold."""

from __future__ import annotations

import sys
import threading
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

import anyio
import anyio.from_thread
import anyio.lowlevel
import pytest
from anyio import CancelScope, create_task_group, wait_all_tasks_blocked
from anyio.abc import TaskStatus

from anygate import Gate, GateClosed, GateGuard, gated
from helpers import HANG, Closer, no_hang, raises_in_group

if sys.version_info < (3, 11):
    from exceptiongroup import ExceptionGroup
import ast
import copy
import gc
import linecache
import math
import pickle
from pathlib import Path

import anyio.to_thread

from helpers import fail

pytestmark = pytest.mark.anyio


Way = Callable[[Gate], AbstractAsyncContextManager[None]]


@asynccontextmanager
async def via_enter(gate: Gate) -> AsyncIterator[None]:
    with gate.enter():
        yield


@asynccontextmanager
async def via_enter_named(gate: Gate) -> AsyncIterator[None]:
    with gate.enter("named"):
        yield


@asynccontextmanager
async def via_enter_cancellable(gate: Gate) -> AsyncIterator[None]:
    with gate.enter("cancellable", cancellable=True):
        yield


@asynccontextmanager
async def via_release(gate: Gate) -> AsyncIterator[None]:
    guard = gate.enter()
    try:
        yield
    finally:
        guard.release()


@asynccontextmanager
async def via_release_named(gate: Gate) -> AsyncIterator[None]:
    guard = gate.enter("named")
    try:
        yield
    finally:
        guard.release()


@asynccontextmanager
async def via_with_gate(gate: Gate) -> AsyncIterator[None]:
    with gate:
        yield


@asynccontextmanager
async def via_async_with_gate(gate: Gate) -> AsyncIterator[None]:
    async with gate:
        yield


@asynccontextmanager
async def via_await_acquire(gate: Gate) -> AsyncIterator[None]:
    guard = await gate.acquire()
    try:
        yield
    finally:
        guard.release()


@asynccontextmanager
async def via_await_acquire_named(gate: Gate) -> AsyncIterator[None]:
    guard = await gate.acquire("named")
    try:
        yield
    finally:
        guard.release()


@asynccontextmanager
async def via_async_with_acquire(gate: Gate) -> AsyncIterator[None]:
    async with gate.acquire():
        yield


@asynccontextmanager
async def via_async_with_acquire_cancellable(gate: Gate) -> AsyncIterator[None]:
    async with gate.acquire("cancellable", cancellable=True):
        yield


@asynccontextmanager
async def via_start_soon(gate: Gate) -> AsyncIterator[None]:
    started, done = anyio.Event(), anyio.Event()

    async def task() -> None:
        started.set()
        await done.wait()

    async with create_task_group() as tg:
        gate.start_soon(tg, task)
        await started.wait()
        try:
            yield
        finally:
            done.set()


@asynccontextmanager
async def via_start(gate: Gate) -> AsyncIterator[None]:
    done = anyio.Event()

    async def task(*, task_status: TaskStatus[None]) -> None:
        task_status.started()
        await done.wait()

    async with create_task_group() as tg:
        await gate.start(tg, task, name="started")
        try:
            yield
        finally:
            done.set()


@asynccontextmanager
async def via_guarded(gate: Gate) -> AsyncIterator[None]:
    inside, done = anyio.Event(), anyio.Event()

    @gate.guarded
    async def call() -> None:
        inside.set()
        await done.wait()

    async with create_task_group() as tg:
        await call_then_wait(tg, call, inside)
        try:
            yield
        finally:
            done.set()


@asynccontextmanager
async def via_to_thread(gate: Gate) -> AsyncIterator[None]:
    inside = anyio.Event()
    release = threading.Event()
    token = anyio.lowlevel.current_token()

    def work() -> None:
        anyio.from_thread.run_sync(inside.set, token=token)
        assert release.wait(HANG)

    async with create_task_group() as tg:
        await call_then_wait(tg, lambda: gate.to_thread(work), inside)
        try:
            yield
        finally:
            release.set()


@asynccontextmanager
async def via_gated_named(gate: Gate) -> AsyncIterator[None]:
    owner = NamedOwner(gate)
    async with create_task_group() as tg:
        await call_then_wait(tg, owner.call, owner.inside)
        try:
            yield
        finally:
            owner.done.set()


class Owner:
    def __init__(self, gate: Gate) -> None:
        self.gate = gate
        self.inside = anyio.Event()
        self.done = anyio.Event()

    @gated
    async def call(self) -> None:
        self.inside.set()
        await self.done.wait()


class NamedOwner(Owner):
    @gated(name="named call", cancellable=True)
    async def call(self) -> None:
        self.inside.set()
        await self.done.wait()


@asynccontextmanager
async def via_gated(gate: Gate) -> AsyncIterator[None]:
    owner = Owner(gate)
    async with create_task_group() as tg:
        await call_then_wait(tg, owner.call, owner.inside)
        try:
            yield
        finally:
            owner.done.set()


async def call_then_wait(
    tg: anyio.abc.TaskGroup, call: Callable[[], object], inside: anyio.Event
) -> None:
    """Run ``call`` in a task and return once it holds, or raise what it raised."""
    errors: list[BaseException] = []

    async def run() -> None:
        try:
            await call()  # type: ignore[misc]
        except GateClosed as exc:
            errors.append(exc)
            inside.set()

    tg.start_soon(run)
    await inside.wait()
    if errors:
        raise errors[0]


ENTRIES: list[Way] = [
    via_enter,
    via_enter_named,
    via_enter_cancellable,
    via_release,
    via_release_named,
    via_with_gate,
    via_async_with_gate,
    via_await_acquire,
    via_await_acquire_named,
    via_async_with_acquire,
    via_async_with_acquire_cancellable,
    via_start_soon,
    via_start,
    via_guarded,
    via_gated,
    via_gated_named,
    via_to_thread,
]


def clone_of(name: str | None, cancellable: bool = False) -> Way:
    @asynccontextmanager
    async def via_clone(gate: Gate) -> AsyncIterator[None]:
        # The base hold is the clone's parent's, and is let go of first.
        base = gate.enter("base") if not gate.closed else None
        source = base if base is not None else BASES[gate]
        clone = source.clone(name, cancellable=cancellable)
        if base is not None:
            base.release()
        with clone:
            yield

    via_clone.__name__ = f"via_clone_{name}_{cancellable}"
    return via_clone


BASES: dict[Gate, GateGuard] = {}


CLONES = [clone_of(None), clone_of("named"), clone_of("cancellable", cancellable=True)]


EVERY_WAY = [pytest.param(way, id=way.__name__) for way in [*ENTRIES, *CLONES]]


def hold_with_gate(gate: Gate) -> AbstractAsyncContextManager[Any]:
    @asynccontextmanager
    async def hold() -> AsyncIterator[None]:
        with gate:
            yield

    return hold()


def hold_with_enter(gate: Gate) -> AbstractAsyncContextManager[Any]:
    return gate.enter()


def hold_named(gate: Gate) -> AbstractAsyncContextManager[Any]:
    return gate.enter("named")


def hold_cancellable(gate: Gate) -> AbstractAsyncContextManager[Any]:
    return gate.enter("cancellable", cancellable=True)


def hold_acquired(gate: Gate) -> AbstractAsyncContextManager[Any]:
    return gate.acquire("acquired")


HOLDS = [
    pytest.param(hold_with_gate, id="with gate"),
    pytest.param(hold_with_enter, id="enter()"),
    pytest.param(hold_named, id="enter(name)"),
    pytest.param(hold_cancellable, id="enter(cancellable)"),
    pytest.param(hold_acquired, id="acquire()"),
]


Hold = Callable[[Gate], AbstractAsyncContextManager[Any]]


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


class TestBadValues:
    @pytest.mark.parametrize("limit", [-1, -100])
    def test_negative_limit(self, limit: int) -> None:
        message = rf"limit must be 0 or more \(0 pauses the gate\), not {limit}"
        with pytest.raises(ValueError, match=message):
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


@pytest.mark.parametrize("hold", HOLDS)
class TestErrorsInHeldBlocks:
    async def test_exception_passes_through_unchanged(self, hold: Hold) -> None:
        gate = Gate(limit=2)
        raised: list[BaseException] = []
        with pytest.raises(ValueError, match="second") as info:
            async with hold(gate):
                try:
                    fail()
                except ValueError as exc:
                    raised.append(exc)
                    raise
        assert info.value is raised[0]
        assert isinstance(info.value.__context__, KeyError)
        assert info.traceback[-1].name == "fail"
        assert gate.count == 0

    async def test_exception_group_is_not_wrapped_again(self, hold: Hold) -> None:
        gate = Gate(limit=2)
        raised: list[BaseException] = []

        async def child() -> None:
            fail()

        with pytest.raises(ExceptionGroup) as info:
            async with hold(gate):
                try:
                    async with create_task_group() as tg:
                        tg.start_soon(child)
                except ExceptionGroup as group:
                    raised.append(group)
                    raise
        assert info.value is raised[0]
        [error] = info.value.exceptions
        assert isinstance(error, ValueError)
        assert gate.count == 0

    async def test_cancellation_releases(self, hold: Hold) -> None:
        gate = Gate(limit=2)
        with CancelScope() as scope:
            async with hold(gate):
                assert gate.count == 1
                scope.cancel()
                await anyio.sleep_forever()
        assert scope.cancelled_caught
        assert gate.count == 0


class TestEveryWayToHold:
    @pytest.mark.parametrize("way", EVERY_WAY)
    async def test_counts_while_it_holds(self, way: Way) -> None:
        gate = Gate("tenant")
        async with way(gate):
            assert gate.count == 1
        assert gate.count == 0
        assert gate.holders() == []

    @pytest.mark.parametrize("way", [pytest.param(w, id=w.__name__) for w in ENTRIES])
    async def test_a_closed_gate_refuses_it(self, way: Way) -> None:
        gate = Gate("tenant")
        gate.close_nowait()
        admitted = False
        with raises_in_group(GateClosed):
            async with way(gate):
                admitted = True
        assert not admitted, "a closed gate admitted an entry"
        assert gate.count == 0
        assert gate.statistics().refused == 1
        with no_hang("close() after a refused entry"):
            await gate.close()

    @pytest.mark.parametrize("way", [pytest.param(w, id=w.__name__) for w in CLONES])
    async def test_a_clone_is_admitted_by_a_closed_gate(self, way: Way) -> None:
        gate = Gate("tenant")
        guard = gate.enter("held")
        BASES[gate] = guard
        gate.close_nowait()
        async with way(gate):
            assert gate.count == 2
        guard.release()
        assert gate.count == 0
        with no_hang("close() after the clone and its source let go"):
            await gate.close()
        del BASES[gate]

    @pytest.mark.parametrize("way", EVERY_WAY)
    async def test_a_close_waits_for_it(self, way: Way) -> None:
        gate = Gate("tenant")
        entered, leave = anyio.Event(), anyio.Event()

        async def hold() -> None:
            async with way(gate):
                entered.set()
                await leave.wait()

        closer = Closer(gate)
        with no_hang("close() after the last hold ended"):
            async with create_task_group() as tg:
                tg.start_soon(hold)
                await entered.wait()
                tg.start_soon(closer.run)
                await wait_all_tasks_blocked()
                assert not closer.done
                assert gate.count == 1
                leave.set()
        assert closer.done

    @pytest.mark.parametrize("way", EVERY_WAY)
    async def test_a_bounded_gate_counts_it_too(self, way: Way) -> None:
        gate = Gate("tenant", limit=2)
        async with way(gate):
            assert gate.count == 1
            assert gate.statistics().tasks_waiting == 0
        assert gate.count == 0


class TestEveryWayToHoldInDebugMode(TestEveryWayToHold):
    """The same rule over every way to hold, each through debug mode's own path;
    and each records where it was taken."""

    @pytest.fixture(autouse=True)
    def debug_mode(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("ANYGATE_DEBUG", "1")

    @pytest.mark.parametrize("way", EVERY_WAY)
    async def test_records_its_site(self, way: Way) -> None:
        gate = Gate("tenant")
        assert gate.debug
        async with way(gate):
            [holder] = gate.holders()
            [listed] = gate.statistics().holders
            assert listed._replace(held_for=0) == holder._replace(held_for=0)
        assert holder.site is not None
        file, _, rest = holder.site.rpartition(":")
        line, _, function = rest.partition(" in ")
        # The first frame outside anygate: the way's own code, in this file,
        # at the line that takes the hold (or, for a guarded call, calls it).
        assert file == __file__
        assert function in (way.__name__, "via_clone", "run")
        taking = linecache.getline(file, int(line))
        assert any(call in taking for call in ("gate", "clone(", "call()")), taking
        assert holder.taken_by is not None
        assert holder.taken_by.startswith("task '")
        assert gate.holders() == []
