"""What a gate tells: statistics, holders, the slow-close warning and its log."""

from __future__ import annotations

import importlib
import inspect
import io
import itertools
import json
import logging
import pkgutil
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any

import anyio
import anyio.abc
import anyio.lowlevel
import anyio.to_thread
import pytest
from anyio import create_task_group, wait_all_tasks_blocked
from pythonjsonlogger.json import JsonFormatter

import anygate
import anygate._guards
from anygate import Gate, GateClosed, GateGuard, GateStatistics, Holder
from helpers import (
    ANYGATE_DIR,
    GRACE,
    Block,
    Closer,
    Warned,
    in_thread,
    no_hang,
    private,
    until,
    watchers,
)

pytestmark = pytest.mark.anyio


class StepsBetweenLines:
    """A tracer that runs steps at chosen lines of anygate's code in this
    thread: ``steps[line]`` before the ``line``-th line run (0 first), each
    step in a thread of its own, while this thread waits. Counts the lines."""

    def __init__(self, steps: dict[int, list[Callable[[], object]]]) -> None:
        self._steps = steps
        self.lines = 0

    def __call__(self, frame: FrameType, event: str, arg: object) -> Any:
        if not frame.f_code.co_filename.startswith(ANYGATE_DIR):
            return None
        return self._local

    def _local(self, frame: FrameType, event: str, arg: object) -> Any:
        if event == "line":
            for step in self._steps.get(self.lines, ()):
                in_thread(step)
            self.lines += 1
        return self._local

    def run(self, func: Callable[[], GateStatistics]) -> GateStatistics:
        previous = sys.gettrace()
        sys.settrace(self)
        try:
            return func()
        finally:
            sys.settrace(previous)


class Holds:
    """Named holds on a gate that another thread takes and lets go of."""

    def __init__(self, gate: Gate) -> None:
        self.gate = gate
        self.guards: dict[str, GateGuard] = {}

    def enter(self, name: str) -> Callable[[], None]:
        def step() -> None:
            self.guards[name] = self.gate.enter(name)

        return step

    def release(self, name: str) -> Callable[[], None]:
        def step() -> None:
            self.guards.pop(name).release()

        return step


#: What another thread does during one statistics() call: its steps, in order.
SCRIPTS = {
    "enter": ["enter x"],
    "release": ["release a"],
    "enter-then-release": ["enter x", "release x"],
    "release-then-enter": ["release a", "enter x"],
    "two-enters": ["enter x", "enter y"],
}


def documented(cls: type, field: str) -> str:
    """The ``#:`` comment above ``field`` in the class body of ``cls``, as the
    reference shows it; the class is looked up in anygate's own modules, since
    its ``__module__`` says ``anygate``."""
    for module in pkgutil.iter_modules(anygate.__path__):
        source = inspect.getsource(importlib.import_module(f"anygate.{module.name}"))
        lines = source.splitlines()
        try:
            start = lines.index(f"class {cls.__name__}:")
        except ValueError:
            continue
        body = lines[start + 1 :]
        at = next(i for i, line in enumerate(body) if line.strip().startswith(f"{field}:"))
        comment: list[str] = []
        for line in reversed(body[:at]):
            if not line.strip().startswith("#:"):
                break
            comment.insert(0, line.strip()[2:].strip())
        return " ".join(comment)
    raise LookupError(f"class {cls.__name__} is in no module of anygate")


async def _acquire_refused(gate: Gate) -> None:
    with pytest.raises(GateClosed):
        await gate.acquire()


async def _acquire_once(gate: Gate) -> None:
    async with gate.acquire():
        pass


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


class TestSlowCloseWarningWaiter:
    async def test_once_counted_from_a_tightened_grace_with_waiters_in_a_tree(
        self, warned: Warned
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
                await warned.event.wait()
                root.close_nowait(grace=0)  # a later tightening warns no more
                await wait_all_tasks_blocked()
                plain.release()
        # One for the root's close, one for the child's.
        assert len(warned.times) == 2
        assert min(warned.times) >= deadline + 0.05 - 0.002
        assert all(closer.done for closer in closers)


class TestStatisticsDoNotLie:
    async def test_an_acquire_that_waits_is_not_refused(self) -> None:
        gate = Gate("g", limit=1)
        holder = gate.enter()
        async with create_task_group() as tg:

            async def acquire() -> None:
                async with gate.acquire():
                    pass

            tg.start_soon(acquire)
            await wait_all_tasks_blocked()
            holder.release()
        assert gate.statistics().refused == 0
        with gate.enter():
            assert gate.try_enter() is None
        assert gate.statistics().refused == 1


class TestStatisticsIsOneSnapshot:
    """Another thread enters and releases named holds between any two lines of
    ``statistics()`` (and of what it calls in anygate): at every line, and for
    two steps at every pair of lines. The snapshot's ``count`` is never below
    the number of holders it lists, and it lists no holder twice."""

    @pytest.mark.parametrize("script", SCRIPTS.values(), ids=SCRIPTS.keys())
    def test_count_is_never_below_the_holders(self, script: list[str]) -> None:
        # Counted with every holder of the scripts held: the most lines any run has.
        full = Gate("g")
        guards = [full.enter(name) for name in ("a", "x", "y")]
        lines = StepsBetweenLines({})
        lines.run(full.statistics)
        assert lines.lines > 1, "statistics() ran no line of anygate: the test needs updating"
        for guard in guards:
            guard.release()
        wrong = []
        for at in itertools.combinations_with_replacement(range(lines.lines + 1), len(script)):
            gate = Gate("g")
            holds = Holds(gate)
            holds.enter("a")()
            steps: dict[int, list[Callable[[], object]]] = {}
            for line, step in zip(at, script, strict=True):
                verb, name = step.split()
                steps.setdefault(line, []).append(getattr(holds, verb)(name))
            stats = StepsBetweenLines(steps).run(gate.statistics)
            names = [holder.name for holder in stats.holders]
            if stats.count < len(names) or len(set(names)) != len(names):
                wrong.append(f"{script} before lines {at}: count {stats.count}, holders {names}")
            for guard in holds.guards.values():
                guard.release()
        assert wrong == [], "\n".join(wrong)


class TestChildrenCountsWhatItSays:
    def test_the_documentation_says_open_and_draining(self) -> None:
        doc = documented(GateStatistics, "children")
        assert "open" in doc, doc
        assert "draining" in doc, doc

    def test_open_and_draining_children_are_counted_and_drained_ones_are_not(self) -> None:
        parent = Gate("parent")
        open_ = Gate("open", parent=parent)
        draining = Gate("draining", parent=parent)
        held = draining.enter("held")
        draining.close_nowait()
        drained = Gate("drained", parent=parent)
        drained.close_nowait()
        assert drained.statistics().last_close_duration is not None
        assert parent.statistics().children == 2  # open, and draining
        held.release()
        assert parent.statistics().children == 1  # open
        drained.reopen()
        assert parent.statistics().children == 2  # open, and reopened
        assert parent.count == parent.statistics().children
        parent.close_nowait()  # the children drain: nothing is left held
        assert open_.closed
        assert parent.statistics().children == 0
        assert parent.statistics().last_close_duration is not None


@contextmanager
def json_log() -> Iterator[list[dict[str, Any]]]:
    """The ``anygate`` logger's records while the test runs, each written by
    python-json-logger's formatter and parsed back: what a JSON log ships."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("anygate")
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    records: list[dict[str, Any]] = []
    try:
        yield records
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
    records.extend(json.loads(line) for line in stream.getvalue().splitlines())


def facts(record: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in record.items() if key.startswith("anygate_")}


class TestStructuredLogFields:
    """Every record of the ``anygate`` logger carries the same five facts as
    attributes, beside its message; a JSON formatter writes them as fields."""

    async def test_a_slow_close_its_late_release_and_its_end(self) -> None:
        gate = Gate("tenant 42", warn_after=0)
        pool = Gate("pool", parent=gate)
        query = pool.enter("query 3")
        upload = gate.enter("upload 7")
        unnamed = gate.enter()
        with json_log() as records:
            async with create_task_group() as tg:
                tg.start_soon(gate.close)
                await wait_all_tasks_blocked()  # the close has warned
                query.release()
                upload.release()
                unnamed.release()
        events = [facts(r) for r in records]
        assert [e["anygate_event"] for e in events] == [
            "slow_close",
            "late_release",
            "close_completed",
        ], records
        slow, late, completed = events
        assert slow["anygate_gate"] == "tenant 42"
        assert slow["anygate_count"] == 3
        assert slow["anygate_seconds"] >= 0
        assert [h["name"] for h in slow["anygate_holders"]] == ["gate 'pool'", "upload 7"]
        assert [h["name"] for h in slow["anygate_holders"][0]["held_by"]] == ["query 3"]
        assert all(isinstance(h["held_for"], float) for h in slow["anygate_holders"])
        assert late["anygate_gate"] == "tenant 42"
        assert [h["name"] for h in late["anygate_holders"]] == ["upload 7"]
        assert late["anygate_count"] == 1  # the unnamed hold is left
        assert late["anygate_seconds"] >= 0
        assert completed == {
            "anygate_event": "close_completed",
            "anygate_gate": "tenant 42",
            "anygate_seconds": completed["anygate_seconds"],
            "anygate_count": 0,
            "anygate_holders": [],
        }
        assert isinstance(completed["anygate_seconds"], float)

    @pytest.mark.parametrize("name", ["leaky", None])
    def test_a_leaked_guard(self, name: str | None) -> None:
        gate = Gate("tenant 42")
        kept = gate.enter()
        with (
            json_log() as records,
            pytest.warns(ResourceWarning, match="garbage-collected without being released"),
        ):
            gate.enter(name)
        kept.release()
        [record] = records
        leaked = facts(record)
        assert leaked["anygate_event"] == "leaked_guard"
        assert leaked["anygate_gate"] == "tenant 42"
        assert leaked["anygate_count"] == 1
        assert "garbage-collected without being released" in record["message"]
        if name is None:
            assert leaked["anygate_seconds"] is None
            assert leaked["anygate_holders"] == []
        else:
            assert leaked["anygate_seconds"] >= 0
            assert [h["name"] for h in leaked["anygate_holders"]] == ["leaky"]

    def test_the_facts_are_named_once(self) -> None:
        assert private(anygate._diagnostics).FACTS == (
            "anygate_event",
            "anygate_gate",
            "anygate_seconds",
            "anygate_count",
            "anygate_holders",
        )
