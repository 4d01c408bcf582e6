"""examples/web_service.py, served for real and driven by httpx clients on 127.0.0.1.

Each server runs in its own process, on an ephemeral port: Hypercorn on asyncio,
uvloop and trio, and Uvicorn on asyncio and uvloop. The client runs on the same
backend as the server, so that between them the tests run the client on all
three backends too, without running each server three times.

No sleeps: the tests wait for the server's state through its /debug routes,
which answer once the state is reached, and finish slow requests on cue.
"""

from __future__ import annotations

import re
import signal
import sys
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from subprocess import PIPE
from typing import Any

import anyio
import httpx
import pytest
from anyio.abc import ByteReceiveStream, Process, TaskGroup
from anyio.streams.buffered import BufferedByteReceiveStream
from servers import each_server, servers

EXAMPLE = Path(__file__).parent.parent / "examples" / "web_service.py"
GRACE = 0.3
# Larger than the loopback socket buffers, so that a client that stops reading
# keeps the server from sending the last byte.
FILE_SIZE = 32 * 1024 * 1024
# The servers' own backstop (--drain-timeout, their graceful timeout) is 30 s:
# a server that exits within this bound after SIGTERM did not wait for it.
PROMPT_EXIT = 15
PATTERN = bytes(range(256))


@dataclass
class Server:
    process: Process
    url: str
    stdout: list[str] = field(default_factory=list)
    stderr: list[str] = field(default_factory=list)
    received: anyio.Event = field(default_factory=anyio.Event)

    def output(self) -> str:
        return "".join(self.stdout) + "".join(self.stderr)

    async def wait_for(self, text: str, count: int = 1) -> None:
        """Wait until the server has printed ``text`` ``count`` times."""
        while "".join(self.stdout).count(text) < count:
            if self.process.returncode is not None:
                raise AssertionError(f"exited before {text!r}: {self.output()}")
            await self.received.wait()
            self.received = anyio.Event()


async def collect(stream: ByteReceiveStream, into: list[str], server: Server | None = None) -> None:
    # One append per read, so that a failing test shows the output up to then.
    async for data in stream:
        into.append(data.decode())
        if server is not None:
            server.received.set()


@asynccontextmanager
async def serving(kind: tuple[str, str], *options: str) -> AsyncIterator[Server]:
    server_name, backend = kind
    command = [
        sys.executable,
        str(EXAMPLE),
        *("--server", server_name, "--backend", backend, "--port", "0"),
        *("--grace", str(GRACE), "--file-size", str(FILE_SIZE)),
        *options,
    ]
    process = await anyio.open_process(command, stdout=PIPE, stderr=PIPE)
    try:
        assert process.stdout is not None
        assert process.stderr is not None
        stdout = BufferedByteReceiveStream(process.stdout)
        first = (await stdout.receive_until(b"\n", 4096)).decode()
        url = first.rsplit(" ", 1)[-1]
        assert url.startswith("http://127.0.0.1:"), first
        server = Server(process, url, stdout=[first + "\n"])
        async with anyio.create_task_group() as tg:
            tg.start_soon(collect, stdout, server.stdout, server)
            tg.start_soon(collect, process.stderr, server.stderr)
            yield server
    finally:
        if process.returncode is None:
            process.kill()
        with anyio.CancelScope(shield=True):
            await process.wait()


async def state(client: httpx.AsyncClient, tenant: str, **wait_for: int) -> dict[str, Any]:
    """The tenant's gate, once it has ``holders=N`` named holders, or is ``closed=1``."""
    response = await client.get(f"/debug/tenants/{tenant}", params=wait_for)
    response.raise_for_status()
    result: dict[str, Any] = response.json()
    return result


def assert_refused(response: httpx.Response, tenant: str | None = None) -> None:
    """A refusal by GateMiddleware: a 503 that names the closed gate."""
    assert response.status_code == 503, response.text
    assert response.headers["Retry-After"] == "5"
    assert response.headers["Connection"] == "close"
    if tenant is not None:
        assert f"tenant {tenant}" in response.text, response.text


@dataclass
class SlowReader:
    """Reads a large response: its first chunk, then the rest once told to."""

    client: httpx.AsyncClient
    path: str
    started: anyio.Event = field(default_factory=anyio.Event)
    go_on: anyio.Event = field(default_factory=anyio.Event)
    body: bytearray = field(default_factory=bytearray)
    status: int = 0

    async def run(self) -> None:
        async with self.client.stream("GET", self.path) as response:
            self.status = response.status_code
            chunks = response.aiter_raw()
            self.body += await chunks.__anext__()
            self.started.set()
            await self.go_on.wait()
            async for chunk in chunks:
                self.body += chunk

    def check_body(self) -> None:
        assert self.status == 200
        assert len(self.body) == FILE_SIZE
        assert self.body == PATTERN * (FILE_SIZE // len(PATTERN))


async def get_into(client: httpx.AsyncClient, path: str, into: list[httpx.Response]) -> None:
    into.append(await client.get(path))


def start_get(tg: TaskGroup, client: httpx.AsyncClient, path: str) -> list[httpx.Response]:
    into: list[httpx.Response] = []
    tg.start_soon(get_into, client, path, into)
    return into


async def post_into(client: httpx.AsyncClient, path: str, into: list[httpx.Response]) -> None:
    into.append(await client.post(path))


def start_post(tg: TaskGroup, client: httpx.AsyncClient, path: str) -> list[httpx.Response]:
    into: list[httpx.Response] = []
    tg.start_soon(post_into, client, path, into)
    return into


@each_server
@pytest.mark.anyio
async def test_admin_close_waits_for_responses_while_other_tenants_serve(
    server_kind: tuple[str, str],
) -> None:
    with anyio.fail_after(60):
        async with serving(server_kind) as server:
            async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
                async with anyio.create_task_group() as tg:
                    poll = start_get(tg, client, "/t/alpha/poll")
                    work = start_get(tg, client, "/t/alpha/work/a1")
                    feed = start_get(tg, client, "/t/alpha/feed")
                    await state(client, "alpha", holders=3)
                    download = SlowReader(client, "/t/alpha/download")
                    export = SlowReader(client, "/t/alpha/export")
                    tg.start_soon(download.run)
                    tg.start_soon(export.run)
                    await download.started.wait()
                    await export.started.wait()
                    # The handlers have returned their responses, which are being sent.
                    before = await state(client, "alpha")
                    holders = sorted(before["holders"])
                    # Held by the middleware, named after each request.
                    assert holders == [
                        f"GET /t/alpha/{path}"
                        for path in ["download", "export", "feed", "poll", "work/a1"]
                    ]

                    closing = start_post(tg, client, "/admin/tenants/alpha/close")
                    after = await state(client, "alpha", closed=1)
                    # Closed, and still held by the responses being sent.
                    assert {
                        "GET /t/alpha/download",
                        "GET /t/alpha/export",
                        "GET /t/alpha/work/a1",
                    } <= set(after["holders"])
                    assert_refused(await client.get("/t/alpha/items/1"), "alpha")
                    beta = await client.get("/t/beta/items/7")
                    assert beta.status_code == 200
                    assert beta.json()["value"] == 7

                    await client.post("/debug/finish/a1")
                    download.go_on.set()
                    export.go_on.set()

                # The task group waited for every response, the close included.
                assert closing[0].status_code == 200, closing[0].text
                # The grace cancelled the long-poll before its response started: a 503.
                [poll_response] = poll
                assert_refused(poll_response, "alpha")
                assert work[0].status_code == 200
                # The grace ended the never-ending feed, with a complete response.
                assert feed[0].status_code == 200
                assert feed[0].text == "subscribed\n"
                download.check_body()
                export.check_body()

                # The close has returned: the tenant serves nothing more, the others do.
                for path in ["/t/alpha/items/1", "/t/alpha/poll", "/t/alpha/download"]:
                    assert_refused(await client.get(path))
                assert (await client.get("/t/gamma/items/9")).status_code == 200
                final = await state(client, "alpha")
                assert final == {"count": 0, "closed": True, "holders": [], "violations": 0}

            # Once the client has closed its connections, the server exits promptly.
            server.process.send_signal(signal.SIGTERM)
            with anyio.fail_after(PROMPT_EXIT):
                assert await server.process.wait() == 0, server.output()


@each_server
@pytest.mark.anyio
async def test_sigterm_closes_the_gates_before_the_server_drains(
    server_kind: tuple[str, str],
) -> None:
    with anyio.fail_after(60):
        async with serving(server_kind) as server:
            async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
                async with anyio.create_task_group() as tg:
                    work = start_get(tg, client, "/t/beta/work/b1")
                    polls = [start_get(tg, client, f"/t/{t}/poll") for t in ("beta", "gamma")]
                    await state(client, "beta", holders=2)
                    await state(client, "gamma", holders=1)

                    assert (await client.get("/ready")).status_code == 200
                    server.process.send_signal(signal.SIGTERM)
                    # The server still answers while the gates drain: refusals are
                    # 503s, and readiness fails so that a load balancer moves away.
                    await state(client, "beta", closed=1)
                    assert_refused(await client.get("/t/beta/items/1"), "beta")
                    assert_refused(await client.get("/t/alpha/items/1"), "alpha")
                    assert (await client.get("/ready")).status_code == 503
                    await client.post("/debug/finish/b1")

                assert work[0].status_code == 200, work[0].text
                for tenant, [poll] in zip(("beta", "gamma"), polls, strict=True):
                    assert_refused(poll, tenant)

            # Once the client has closed its connections, the server exits promptly.
            with anyio.fail_after(PROMPT_EXIT):
                returncode = await server.process.wait()

    output = server.output()
    # Exit status 0 on both servers: Uvicorn's own shutdown would end by the signal.
    assert returncode == 0, output
    assert "tenant files used after their close: 0" in output
    # The gates were drained before the server drained, and its lifespan
    # shutdown found nothing left holding them.
    assert output.index("all tenants closed") < output.index("lifespan shutdown; holds left: 0")


@each_server
@pytest.mark.anyio
async def test_closing_the_gates_in_the_lifespan_shutdown_is_too_late(
    server_kind: tuple[str, str],
) -> None:
    """The trap the docs warn about, shown with ``--shutdown lifespan``.

    The server drains first: it waits for the long-poll until its own timeout,
    then cancels it, and the client gets an error instead of the grace's 503.
    """
    options = ("--shutdown", "lifespan", "--drain-timeout", "1")
    with anyio.fail_after(60):
        async with serving(server_kind, *options) as server:
            async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
                outcome: list[int | str] = []

                async def poll() -> None:
                    try:
                        outcome.append((await client.get("/t/alpha/poll")).status_code)
                    except httpx.TransportError as exc:
                        outcome.append(type(exc).__name__)

                async with anyio.create_task_group() as tg:
                    tg.start_soon(poll)
                    await state(client, "alpha", holders=1)
                    server.process.send_signal(signal.SIGTERM)
            if server_kind == ("hypercorn", "asyncio") and sys.version_info >= (3, 12):
                # Worse still from Python 3.12 on, where asyncio.Server.wait_closed()
                # waits for every connection (cpython#79033): Hypercorn's asyncio
                # worker waits for the long-poll, which only the gate's close
                # would end, and the gates close only after the server: it does
                # not exit until killed, and the long-poll never gets its 503.
                with anyio.move_on_after(10):
                    await server.process.wait()
                if server.process.returncode is None:
                    server.process.kill()
                    await server.process.wait()
                assert outcome != [503], server.output()
                return
            await server.process.wait()

    # A 500 from the cancelled handler, or a connection closed with no response.
    assert outcome in ([500], ["RemoteProtocolError"]), server.output()
    output = server.output()
    # The gates are closed only after the server cancelled what held them.
    assert output.index("lifespan shutdown; holds left: 0") < output.index("all tenants closed")


@dataclass
class Upload:
    """A POST whose body the client sends in two parts: the rest once told to."""

    client: httpx.AsyncClient
    path: str
    go_on: anyio.Event = field(default_factory=anyio.Event)
    response: httpx.Response | None = None

    async def body(self) -> AsyncIterator[bytes]:
        yield b"first part;"
        await self.go_on.wait()
        yield b"last part"

    async def run(self) -> None:
        self.response = await self.client.post(self.path, content=self.body())


@servers("uvicorn-asyncio", "hypercorn-trio")
@pytest.mark.anyio
async def test_two_workers_drain_under_traffic_and_all_exit_0(
    server_kind: tuple[str, str],
) -> None:
    """Two worker processes on one socket; SIGTERM to their manager, under traffic.

    Uploads are in flight on both workers when SIGTERM arrives: their bodies
    are sent only after it. The workers' gates close while they still accept
    connections, so the new requests get the gates' 503s; then the uploads
    finish, none of them cut, and every process exits with status 0.
    """
    with anyio.fail_after(60):
        async with serving(server_kind, "--workers", "2") as server:
            await server.wait_for("worker ready", 2)
            async with AsyncExitStack() as clients, anyio.create_task_group() as tg:
                uploads: list[Upload] = []
                # Each on a connection of its own, accepted by whichever worker
                # is first: go on until both hold some (the kernel decides).
                while len(set(re.findall(r"\[(\d+)\] upload", server.output()))) < 2:
                    assert len(uploads) < 40, "the uploads all went to one worker"
                    client = httpx.AsyncClient(base_url=server.url, timeout=30)
                    await clients.enter_async_context(client)
                    upload = Upload(client, f"/t/beta/upload/u{len(uploads)}")
                    uploads.append(upload)
                    tg.start_soon(upload.run)
                    await server.wait_for(f"upload u{len(uploads) - 1} started")

                server.process.send_signal(signal.SIGTERM)
                await server.wait_for("shutting down: closing", 2)
                # Both workers are draining, and still accept: the gates refuse.
                for _ in range(6):
                    async with httpx.AsyncClient(base_url=server.url) as new_client:
                        assert_refused(await new_client.get("/t/alpha/items/1"), "alpha")
                        assert (await new_client.get("/ready")).status_code == 503
                for upload in uploads:
                    upload.go_on.set()

            for upload in uploads:
                assert upload.response is not None
                assert upload.response.status_code == 200, upload.response.text
                assert upload.response.json()["received"] == len(b"first part;last part")
            with anyio.fail_after(PROMPT_EXIT):
                returncode = await server.process.wait()

            # Every listener is closed: a new connection is refused.
            async with httpx.AsyncClient(base_url=server.url) as late:
                with pytest.raises(httpx.ConnectError):
                    await late.get("/ready")

    output = server.output()
    assert returncode == 0, output
    assert output.count("exited with status 0") == 2, output
    assert output.count("tenant files used after their close: 0; the server drains") == 2
