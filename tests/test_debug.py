"""Debug mode: every hold records where it was taken, and by whom."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import pytest
from anyio import create_task_group, wait_all_tasks_blocked

from anygate import Gate, GateClosed, Holder
from helpers import Closer, no_hang

pytestmark = pytest.mark.anyio

HERE = __file__


def line_of(text: str) -> int:
    """The line of this file marked ``text``, once (besides the lines asking for it)."""
    lines = [
        i
        for i, line in enumerate(Path(HERE).read_text().splitlines(), 1)
        if line.rstrip().endswith(text)
    ]
    assert len(lines) == 1, (text, lines)
    return lines[0]


def site(text: str, function: str) -> str:
    return f"{HERE}:{line_of(text)} in {function}"


@pytest.fixture
def process_debug_off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ANYGATE_DEBUG", raising=False)


class TestTheSwitch:
    def test_on_and_off_for_one_gate(self, process_debug_off: None) -> None:
        assert Gate(debug=True).debug
        assert not Gate(debug=False).debug
        assert Gate().debug is bool(sys.flags.dev_mode)

    def test_the_environment_turns_it_on(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("ANYGATE_DEBUG", "1")
        assert Gate().debug
        assert not Gate(debug=False).debug
        monkeypatch.setenv("ANYGATE_DEBUG", "0")
        assert Gate().debug is bool(sys.flags.dev_mode)

    def test_it_is_a_gate(self) -> None:
        gate = Gate("t", debug=True)
        assert isinstance(gate, Gate)
        assert type(gate).__name__ == "Gate"
        assert type(gate).__qualname__ == "Gate"
        assert type(gate).__module__ == "anygate"
        assert repr(gate) == "<Gate 't' open, count=0>"

    def test_the_value_must_be_a_bool(self) -> None:
        with pytest.raises(TypeError, match="debug must be True, False or None, not int"):
            Gate(debug=1)  # type: ignore[arg-type]

    @pytest.mark.parametrize(
        ("flags", "env", "gate", "expected"),
        [
            pytest.param([], {}, "Gate()", False, id="default"),
            pytest.param(["-X", "dev"], {}, "Gate()", True, id="-X dev"),
            pytest.param([], {"ANYGATE_DEBUG": "1"}, "Gate()", True, id="ANYGATE_DEBUG=1"),
            pytest.param(["-X", "dev"], {}, "Gate(debug=False)", False, id="-X dev, off"),
            pytest.param([], {"ANYGATE_DEBUG": "1"}, "Gate(debug=False)", False, id="env, off"),
        ],
    )
    def test_in_a_new_process(
        self, flags: list[str], env: dict[str, str], gate: str, expected: bool
    ) -> None:
        environ = {
            k: v for k, v in os.environ.items() if k not in ("ANYGATE_DEBUG", "PYTHONDEVMODE")
        }
        # A hold taken there is listed with its site in debug mode only.
        script = (
            "from anygate import Gate\n"
            f"gate = {gate}\n"
            "kept = gate.enter()\n"
            "print(gate.debug, [h.site for h in gate.holders()])\n"
        )
        result = subprocess.run(
            [sys.executable, *flags, "-c", script],
            env={**environ, **env},
            capture_output=True,
            text=True,
            check=True,
            timeout=60,
        )
        sites = ["<string>:3 in <module>"] if expected else []
        assert result.stdout.strip() == f"{expected} {sites}"


class TestHolder:
    def test_built_as_a_pair(self) -> None:
        holder = Holder("x", 1.5)
        assert (holder.name, holder.held_for, holder.site, holder.taken_by) == (
            "x",
            1.5,
            None,
            None,
        )
        assert holder == Holder("x", 1.5, None, None)

    def test_out_of_debug_mode_only_named_holders_and_no_site(self) -> None:
        gate = Gate(debug=False)
        with gate, gate.enter(), gate.enter("named"):
            [holder] = gate.holders()
        assert holder.name == "named"
        assert holder.site is None
        assert holder.taken_by is None


class TestEveryHoldIsListed:
    async def test_with_its_site_and_task(self) -> None:
        gate = Gate("tenant", debug=True)
        with gate:  # the with-block
            guard = gate.enter()  # the unnamed guard
            named = gate.enter("named")  # the named guard
            holders = gate.holders()
            task = anyio.get_current_task().name
        guard.release()
        named.release()
        assert [h.name for h in holders] == ["with gate:", "enter()", "named"]
        assert [h.site for h in holders] == [
            site("# the with-block", "test_with_its_site_and_task"),
            site("# the unnamed guard", "test_with_its_site_and_task"),
            site("# the named guard", "test_with_its_site_and_task"),
        ]
        assert {h.taken_by for h in holders} == {f"task {task!r}"}
        assert gate.holders() == []
        assert gate.count == 0

    def test_outside_a_task_the_thread(self) -> None:
        gate = Gate(debug=True)
        with gate.enter():
            [holder] = gate.holders()
        assert holder.taken_by == "thread 'MainThread'"

    async def test_statistics_list_them(self) -> None:
        gate = Gate(debug=True)
        async with gate:
            [holder] = gate.statistics().holders
        assert holder.name == "async with gate:"
        assert gate.statistics().holders == ()


def holder_lines(message: str) -> list[str]:
    return (
        message.split("holders, oldest first: ", 1)[1].split("; close() is awaited")[0].split("), ")
    )


class TestSlowClose:
    async def test_one_warning_names_every_holder_with_its_site(
        self, caplog: pytest.LogCaptureFixture
    ) -> None:
        caplog.set_level(logging.INFO, logger="anygate")
        gate = Gate("timeline", debug=True, warn_after=0)
        done = anyio.Event()

        async def work() -> None:
            await done.wait()

        async with create_task_group() as tg:
            child = Gate("child", parent=gate)  # slow: the child gate
            child_guard = child.enter("inner")
            guard = gate.enter()  # slow: the unnamed guard
            acquired = await gate.acquire()  # slow: the unnamed acquire
            gate.start_soon(tg, work)  # slow: the start_soon task
            with gate:  # slow: the with-block
                closer = Closer(gate)
                tg.start_soon(closer.run)
                await wait_all_tasks_blocked()
                [warning] = [r for r in caplog.records if r.levelno == logging.WARNING]
                message = warning.getMessage()
                holders = warning.anygate_holders  # type: ignore[attr-defined]
                caplog.clear()
                guard.release()
                acquired.release()
                done.set()
            await wait_all_tasks_blocked()
            assert not closer.done
            child_guard.release()
        assert closer.done
        where = "test_one_warning_names_every_holder_with_its_site"
        assert "5 still held; holders, oldest first: " in message
        expected = [
            "\"gate 'child'\" at " + site("# slow: the child gate", where),
            f"enter() at {site('# slow: the unnamed guard', where)}",
            f"acquire() at {site('# slow: the unnamed acquire', where)}",
            f"start_soon(TestSlowClose.{where}.<locals>.work) at "
            + site("# slow: the start_soon task", where),
            f"with gate: at {site('# slow: the with-block', where)}",
        ]
        listed = holder_lines(message)
        assert len(listed) == 5, message
        for line, start in zip(listed, expected, strict=True):
            assert line.startswith(start), (line, start)
        assert "held by 'inner' (" in listed[0]
        task = f"task {anyio.get_current_task().name!r}"
        assert all(f"({task}, " in line for line in listed), message
        # The structured fields: the same holders, with their sites.
        assert [h["site"] for h in holders] == [e.split(" at ", 1)[1] for e in expected]
        assert {h["taken_by"] for h in holders} == {task}
        json.dumps(holders)  # plain data
        # Each logs its late release with its site.
        late = [r.getMessage() for r in caplog.records if "kept gate" in r.getMessage()]
        assert any(m.startswith("enter() kept gate 'timeline'") and "taken at " in m for m in late)
        assert any(m.startswith("with gate: kept gate 'timeline'") for m in late)

    async def test_out_of_debug_mode_unchanged(self, caplog: pytest.LogCaptureFixture) -> None:
        gate = Gate("g", debug=False, warn_after=0)
        with gate, gate.enter():
            async with create_task_group() as tg:
                tg.start_soon(gate.close)
                await wait_all_tasks_blocked()
                [warning] = caplog.records
                assert "2 still held; none of them named" in warning.getMessage()
                assert warning.anygate_holders == []  # type: ignore[attr-defined]
                tg.cancel_scope.cancel()


class TestLeakedGuard:
    def test_its_warning_names_where_it_was_taken(self, caplog: pytest.LogCaptureFixture) -> None:
        gate = Gate("g", debug=True)
        with pytest.warns(ResourceWarning) as caught:
            gate.enter()  # the leaked guard
        where = site("# the leaked guard", "test_its_warning_names_where_it_was_taken")
        [warning] = caught
        assert str(warning.message).endswith(
            f"garbage-collected without being released; it was taken with enter() at "
            f"{where} (thread 'MainThread')"
        )
        [record] = caplog.records
        assert record.anygate_event == "leaked_guard"  # type: ignore[attr-defined]
        assert where in record.getMessage()
        assert record.anygate_holders[0]["site"] == where  # type: ignore[attr-defined]
        assert gate.count == 0

    def test_out_of_debug_mode_no_site(self) -> None:
        gate = Gate("g", debug=False)
        with pytest.warns(ResourceWarning) as caught:
            gate.enter()
        [warning] = caught
        assert str(warning.message).endswith("garbage-collected without being released")


class TestTheCountSurvives:
    """A debug-mode hold never corrupts the count, whatever ends it."""

    async def test_an_exception_in_a_with_block(self) -> None:
        gate = Gate(debug=True)
        with pytest.raises(ValueError, match="in the block"), gate:
            raise ValueError("in the block")
        with pytest.raises(ValueError, match="in the block"):
            async with gate:
                raise ValueError("in the block")
        assert gate.count == 0
        assert gate.holders() == []

    async def test_a_cancelled_block(self) -> None:
        gate = Gate(debug=True)
        with anyio.CancelScope() as scope:
            with gate:
                scope.cancel()
                await anyio.sleep_forever()
        async with create_task_group() as tg, gate.acquire():
            tg.cancel_scope.cancel()
            await anyio.sleep_forever()
        assert gate.count == 0
        assert gate.holders() == []

    async def test_refused_entries_leave_nothing(self) -> None:
        gate = Gate(debug=True, limit=1)
        with gate:
            with pytest.raises(anyio.WouldBlock), gate:
                pass
            assert gate.try_enter() is None
            assert len(gate.holders()) == 1
        gate.close_nowait()
        with pytest.raises(GateClosed):
            gate.enter()
        assert gate.count == 0
        assert gate.holders() == []
        with no_hang("close() of a debug gate whose entries were refused"):
            await gate.close()

    async def test_nested_blocks_in_tasks_each_forget_their_own(self) -> None:
        gate = Gate(debug=True)
        inside = [anyio.Event(), anyio.Event()]
        leave = anyio.Event()

        async def hold(index: int) -> None:
            with gate, gate:
                inside[index].set()
                await leave.wait()

        async with create_task_group() as tg:
            for index in (0, 1):
                tg.start_soon(hold, index, name=f"holder {index}")
                await inside[index].wait()
            with gate:
                assert Counter(h.taken_by for h in gate.holders()) == {
                    "task 'holder 0'": 2,
                    "task 'holder 1'": 2,
                    f"task {anyio.get_current_task().name!r}": 1,
                }
            leave.set()
        assert gate.count == 0
        assert gate.holders() == []

    async def test_a_block_left_in_another_task(self) -> None:
        gate = Gate(debug=True)

        # An async generator entered in one task and finished in another.
        async def agen() -> AsyncIterator[None]:
            with gate:
                yield

        held = agen()
        await held.__anext__()
        assert gate.count == 1

        async def finish() -> None:
            with pytest.raises(StopAsyncIteration):
                await held.__anext__()

        async with create_task_group() as tg:
            tg.start_soon(finish)
        assert gate.count == 0
        assert gate.holders() == []
