"""What a gate tells about itself: statistics that do not lie.

Issue 17, failure 6 (its first two parts). The old core's ``statistics()`` read
``count``, then the holders, so that a holder entering in another thread between
the two reads made one snapshot list more named holders than its count; and
``GateStatistics.children`` was documented as the open child gates while it
counted closed children still draining too.
"""

from __future__ import annotations

import importlib
import inspect
import itertools
import os
import pkgutil
import sys
from collections.abc import Callable
from types import FrameType
from typing import Any

import pytest

import anygate
from anygate import Gate, GateGuard, GateStatistics
from helpers import in_thread

#: Where anygate's code lives: a frame whose code is there is the gate's own.
ANYGATE_DIR = os.path.dirname(anygate.__file__) + os.sep


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
