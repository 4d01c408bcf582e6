"""anygate.hypercorn and anygate.uvicorn: the gates close before the server drains.

Each server runs tests/gated_server.py in a process of its own, on an ephemeral
port of 127.0.0.1, and is sent real signals: Hypercorn on asyncio, uvloop and
trio, Uvicorn on asyncio and uvloop. The client is httpx, on the server's
backend (asyncio for uvloop). The tests wait for the lines the server prints,
never by sleeping.
"""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from subprocess import PIPE
from typing import Any

import anyio
import httpx
import pytest
from anyio.abc import ByteReceiveStream, Process, TaskGroup
from anyio.streams.buffered import BufferedByteReceiveStream
from servers import each_server

import anygate.hypercorn
import anygate.uvicorn
from anygate import Gate

SERVER = Path(__file__).parent / "gated_server.py"
# Well below the servers' own graceful timeout (30 s): an exit within this
# bound did not wait for it.
PROMPT_EXIT = 15


@dataclass
class Child:
    process: Process
    stdout: BufferedByteReceiveStream
    url: str = ""
    lines: list[str] = field(default_factory=list)
    stderr: list[str] = field(default_factory=list)

    async def expect(self, text: str) -> None:
        """Read the server's lines until one contains ``text``."""
        while True:
            try:
                line = (await self.stdout.receive_until(b"\n", 65536)).decode()
            except anyio.IncompleteRead:
                raise AssertionError(f"the server ended before {text!r}: {self.output()}") from None
            self.lines.append(line)
            if text in line:
                return

    async def rest(self) -> None:
        """Read the server's lines until it closes its output."""
        try:
            while True:
                self.lines.append((await self.stdout.receive_until(b"\n", 65536)).decode())
        except (anyio.IncompleteRead, anyio.EndOfStream):
            pass

    def output(self) -> str:
        return "\n".join(self.lines) + "\n" + "".join(self.stderr)


async def collect(stream: ByteReceiveStream, into: list[str]) -> None:
    async for data in stream:
        into.append(data.decode())  # noqa: PERF401


@asynccontextmanager
async def serving(kind: tuple[str, str], *options: str) -> AsyncIterator[Child]:
    process = await anyio.open_process(
        [sys.executable, str(SERVER), *kind, *options], stdout=PIPE, stderr=PIPE
    )
    try:
        assert process.stdout is not None
        assert process.stderr is not None
        child = Child(process, BufferedByteReceiveStream(process.stdout))
        async with anyio.create_task_group() as tg:
            tg.start_soon(collect, process.stderr, child.stderr)
            await child.expect("listening on ")
            child.url = child.lines[-1].rsplit(" ", 1)[-1]
            await child.expect("ready")
            yield child
    finally:
        if process.returncode is None:
            process.kill()
        with anyio.CancelScope(shield=True):
            await process.wait()


async def get_into(client: httpx.AsyncClient, path: str, into: list[httpx.Response]) -> None:
    into.append(await client.get(path))


def start_get(tg: TaskGroup, client: httpx.AsyncClient, path: str) -> list[httpx.Response]:
    into: list[httpx.Response] = []
    tg.start_soon(get_into, client, path, into)
    return into


@each_server
@pytest.mark.anyio
async def test_sigterm_closes_the_gates_first_and_exits_0(server_kind: tuple[str, str]) -> None:
    with anyio.fail_after(60):
        async with serving(server_kind) as child:
            async with httpx.AsyncClient(base_url=child.url, timeout=30) as client:
                assert (await client.get("/other")).status_code == 200
                async with anyio.create_task_group() as tg:
                    slow = start_get(tg, client, "/slow")
                    await child.expect("held slow")
                    poll = start_get(tg, client, "/poll")
                    await child.expect("held poll")

                    child.process.send_signal(signal.SIGTERM)
                    await child.expect("gate closing")
                    # The server still accepts connections while the gate
                    # drains: the gate refuses the new request, on a new
                    # connection, and the slow one is still held.
                    async with httpx.AsyncClient(base_url=child.url) as new_client:
                        refused = await new_client.get("/other")
                    assert (refused.status_code, refused.text) == (503, "gate closed")
                    assert not slow
                    assert (await client.post("/finish")).status_code == 200

                # The request in flight at SIGTERM finished; the long-poll was
                # cancelled by the grace, and answered.
                assert (slow[0].status_code, slow[0].text) == (200, "slow done")
                assert (poll[0].status_code, poll[0].text) == (503, "cancelled by the grace")

            # Once the client has closed its connections, the server exits
            # promptly, with status 0 (Uvicorn's own would end by the signal).
            with anyio.fail_after(PROMPT_EXIT):
                returncode = await child.process.wait()
            await child.rest()

            # The listener is closed: a new connection is refused.
            async with httpx.AsyncClient(base_url=child.url) as late:
                with pytest.raises(httpx.ConnectError):
                    await late.get("/other")

    output = child.output()
    assert returncode == 0, output
    # The gate drained before the server's own shutdown ran the lifespan's.
    assert output.index("gate closing") < output.index("lifespan shutdown; holds left: 0")
    assert "server returned; holds left: 0" in output


#: Hypercorn's asyncio worker from Python 3.12.1 on: its shutdown waits for
#: every connection (asyncio.Server.wait_closed) before its graceful timeout
#: starts (Hypercorn issue 308), so it cannot end a request that never ends.
HYPERCORN_WAITS_FOR_EVERY_CONNECTION = sys.version_info >= (3, 12, 1)


@each_server
@pytest.mark.anyio
async def test_a_second_signal_stops_without_waiting_for_the_gates(
    server_kind: tuple[str, str],
) -> None:
    """A hold that never ends keeps the gate draining; a second SIGTERM stops anyway.

    The server's own graceful timeout, 1 s here, then ends the request. Where
    Hypercorn cannot (on asyncio, from Python 3.12.1 on), the trigger has
    returned and absorbs nothing more: a third SIGTERM ends the process.
    """
    uvicorn = server_kind[0] == "uvicorn"
    stuck = server_kind == ("hypercorn", "asyncio") and HYPERCORN_WAITS_FOR_EVERY_CONNECTION
    with anyio.fail_after(60):
        async with serving(server_kind, "1") as child:
            outcome: list[object] = []

            async with httpx.AsyncClient(base_url=child.url, timeout=30) as client:

                async def slow() -> None:
                    try:
                        outcome.append((await client.get("/slow")).status_code)
                    except httpx.TransportError as exc:
                        outcome.append(type(exc).__name__)

                async with anyio.create_task_group() as tg:
                    tg.start_soon(slow)
                    await child.expect("held slow")
                    child.process.send_signal(signal.SIGTERM)
                    await child.expect("gate closing")
                    child.process.send_signal(signal.SIGTERM)
                    # Without the second signal, the server would wait for
                    # the gate, and the gate for /finish, forever.
                    if stuck:
                        await child.expect("trigger returned")
                        assert not outcome
                        child.process.send_signal(signal.SIGTERM)
                    else:
                        await child.expect("lifespan shutdown")
            with anyio.fail_after(PROMPT_EXIT):
                returncode = await child.process.wait()
            await child.rest()

    output = child.output()
    if stuck:
        # Ended by the third signal, with the request still in flight.
        assert outcome == ["RemoteProtocolError"], output
        assert returncode == -signal.SIGTERM, output
        assert "lifespan shutdown" not in output
        return
    # Cut by the server's timeout: a 500, or a connection closed with no response.
    assert outcome in ([500], ["RemoteProtocolError"]), output
    # Uvicorn handles a second signal as its own first: it ends by the signal.
    assert returncode == (-signal.SIGTERM if uvicorn else 0), output


async def run_to_end(function: Callable[[], Awaitable[None]]) -> None:
    await function()


@pytest.mark.parametrize("second_signal", [False, True], ids=["drained", "second signal"])
@pytest.mark.anyio
async def test_the_trigger_absorbs_one_signal_after_a_drain_and_none_after_a_second(
    second_signal: bool,
) -> None:
    """In-process, with SIGUSR1: what the signal's handler is once the trigger returned."""
    received: list[int] = []
    previous = signal.signal(signal.SIGUSR1, lambda signum, frame: received.append(signum))
    try:
        gate = Gate("g", warn_after=None)
        # A hold that never ends, but for the second signal.
        guard = gate.enter() if second_signal else None
        trigger = anygate.hypercorn.shutdown_trigger(gate, signals=[signal.SIGUSR1])
        async with anyio.create_task_group() as tg:
            tg.start_soon(run_to_end, trigger)
            await anyio.wait_all_tasks_blocked()
            signal.raise_signal(signal.SIGUSR1)
            await gate.wait_closing()
            if second_signal:
                await anyio.wait_all_tasks_blocked()
                signal.raise_signal(signal.SIGUSR1)
        assert received == []
        signal.raise_signal(signal.SIGUSR1)
        # After a drain the first is absorbed, after a second signal none is.
        assert received == ([signal.SIGUSR1] if second_signal else [])
        signal.raise_signal(signal.SIGUSR1)
        # Then the handler found before the trigger has them, either way.
        assert received == [signal.SIGUSR1] * (2 if second_signal else 1)
        assert gate.count == (1 if second_signal else 0)
        if guard is not None:
            guard.release()
    finally:
        signal.signal(signal.SIGUSR1, previous)


def test_importing_the_helpers_imports_no_server() -> None:
    code = (
        "import sys, anygate, anygate.hypercorn, anygate.uvicorn;"
        "print(sorted(m for m in ('hypercorn', 'uvicorn', 'starlette') if m in sys.modules))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[]"


def test_public_names_report_their_public_module() -> None:
    assert anygate.hypercorn.shutdown_trigger.__module__ == "anygate.hypercorn"
    assert anygate.uvicorn.serve.__module__ == "anygate.uvicorn"
    assert anygate.hypercorn.__all__ == ["shutdown_trigger"]
    assert anygate.uvicorn.__all__ == ["serve"]


def test_shutdown_trigger_checks_its_arguments() -> None:
    gate = Gate("g")
    trigger: Any = anygate.hypercorn.shutdown_trigger
    with pytest.raises(TypeError, match=r"shutdown_trigger\(\) needs at least one gate"):
        trigger()
    with pytest.raises(TypeError, match=r"shutdown_trigger\(\) closes Gate objects, not list"):
        trigger([gate])
    with pytest.raises(TypeError, match="grace must be a number of seconds or None, not str"):
        trigger(gate, grace="5")
    with pytest.raises(ValueError, match="grace must be a number of seconds >= 0, not -1"):
        trigger(gate, grace=-1)
    with pytest.raises(
        TypeError, match="signals must be an iterable of signal numbers, not Signals"
    ):
        trigger(gate, signals=signal.SIGTERM)
    with pytest.raises(ValueError, match="signals must name at least one signal"):
        trigger(gate, signals=())
    with pytest.raises(TypeError, match="signals must be signal numbers, not str"):
        trigger(gate, signals=["SIGTERM"])
    with pytest.raises(ValueError, match="signals must be signal numbers, not"):
        trigger(gate, signals=[100000])
    assert callable(trigger(gate, grace=0, signals=[signal.SIGUSR1]))


@pytest.mark.parametrize("anyio_backend", ["asyncio", "trio"])
@pytest.mark.anyio
async def test_uvicorn_serve_checks_its_arguments(anyio_backend: str) -> None:
    gate = Gate("g")
    serve: Any = anygate.uvicorn.serve
    if anyio_backend == "trio":
        with pytest.raises(RuntimeError, match="runs on asyncio, as Uvicorn does"):
            await serve(anygate_server_stand_in(), gate)
        return
    with pytest.raises(TypeError, match=r"serve\(\) needs a uvicorn.Server, not object"):
        await serve(object(), gate)
    with pytest.raises(TypeError, match=r"serve\(\) needs at least one gate"):
        await serve(anygate_server_stand_in())
    with pytest.raises(TypeError, match=r"serve\(\) closes Gate objects, not str"):
        await serve(anygate_server_stand_in(), "gate")
    with pytest.raises(ValueError, match="grace must be a number of seconds >= 0, not nan"):
        await serve(anygate_server_stand_in(), gate, grace=float("nan"))
    assert not gate.closed


class anygate_server_stand_in:
    """Has what serve() checks for, and serves nothing."""

    should_exit = False

    def handle_exit(self, sig: int, frame: object) -> None:
        raise AssertionError("not called")

    async def serve(self, sockets: object = None) -> None:
        raise AssertionError("not called")
