"""GateMiddleware and the servers' shutdown helpers, under attack: clients that
leave, apps that leave responses unfinished, the grace's clean ending, exception
groups, ASGI extensions, refused websockets, signals at awkward moments.

Each test here demonstrated a defect when it was written. Those still open are
marked ``xfail(strict=True)`` with the defect in their reason: each flips to
XPASS, and fails the run, once fixed. No sleeps as synchronisation: the tests
wait on events and ``anyio.wait_all_tasks_blocked()``, each wait bounded.
"""

from __future__ import annotations

import contextlib
import signal
import sys
from collections.abc import AsyncIterator
from subprocess import PIPE
from typing import Any

import anyio
import pytest
from anyio.streams.buffered import BufferedByteReceiveStream
from servers import each_server
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route
from test_asgi import START, Client, body, call, http, websocket
from test_asgi_servers import serving

from anygate import Gate
from anygate.asgi import GateMiddleware, Message, Receive, Scope, Send
from helpers import HANG

pytestmark = pytest.mark.anyio

#: Seconds within which a server sees its client go, and a gate drains.
PROMPTLY = 1.0

REQUEST: Message = {"type": "http.request", "body": b"", "more_body": False}


class FinalBlocks(Client):
    """A client whose send blocks on the message that ends what it sees: the
    final body, a websocket close. The others go straight through."""

    async def send(self, message: Message) -> None:
        kind = message["type"]
        if (kind == "http.response.body" and not message.get("more_body", False)) or (
            kind == "websocket.close"
        ):
            self.blocked.set()
            await self._unblock.wait()
        self.sent.append(message)


# -- The hold outlives a response nobody will finish -------------------------


async def test_a_stream_whose_client_disconnects_mid_stream_releases_the_gate() -> None:
    gate = Gate("svc", warn_after=None)
    parked = anyio.Event()

    async def chunks() -> AsyncIterator[bytes]:
        yield b"first\n"
        parked.set()
        await anyio.sleep_forever()  # the next event, which never comes
        yield b"never\n"

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await StreamingResponse(chunks(), media_type="text/plain")(scope, receive, send)

    client = Client(REQUEST)
    async with anyio.create_task_group() as tg:
        tg.start_soon(call, GateMiddleware(app, gate), http(), client)
        with anyio.fail_after(HANG):
            await parked.wait()
        client.disconnect()  # the client goes away between two chunks
        with anyio.fail_after(HANG):
            await gate.close()


async def test_a_response_left_unfinished_by_the_app_does_not_hold_the_gate_forever() -> None:
    gate = Gate("svc", warn_after=None)

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await send(START)
        await send(body(b"partial", more=True))
        # returns: a bug, or a cancelled stream; the servers then end the
        # connection themselves

    client = Client(REQUEST)
    async with anyio.create_task_group() as tg:
        tg.start_soon(call, GateMiddleware(app, gate), http(), client)
        await anyio.wait_all_tasks_blocked()
        client.disconnect()
        with anyio.fail_after(HANG):
            await gate.close()


async def test_zerocopysend_ends_the_body_as_a_final_body_message() -> None:
    gate = Gate("svc", warn_after=None)

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await send(START)
        await send({"type": "http.response.zerocopysend", "file": 0, "more_body": False})

    scope = http(extensions={"http.response.zerocopysend": {}})
    client = Client(REQUEST)
    with anyio.fail_after(HANG):
        await GateMiddleware(app, gate)(scope, client.receive, client.send)
    assert gate.count == 0


# -- The hold ends before the last byte ---------------------------------------


async def test_the_final_body_sent_at_the_grace_is_sent_before_the_hold_ends() -> None:
    gate = Gate("svc", warn_after=None)

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await send(START)
        await send(body(b"data: 1\n\n", more=True))
        await anyio.sleep_forever()

    client = FinalBlocks(REQUEST)
    closed = anyio.Event()

    async def close() -> None:
        await gate.close(grace=0)
        closed.set()

    async with anyio.create_task_group() as tg:
        tg.start_soon(call, GateMiddleware(app, gate, cancellable=True), http(), client)
        await anyio.wait_all_tasks_blocked()
        tg.start_soon(close)
        with anyio.fail_after(HANG):
            await client.blocked.wait()  # the final body, on its way
        await anyio.wait_all_tasks_blocked()
        drained_early = closed.is_set()
        client.unblock()
    assert not drained_early, "the gate drained before the final body was sent"


async def test_the_websocket_close_sent_at_the_grace_is_sent_before_the_hold_ends() -> None:
    gate = Gate("svc", warn_after=None)

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()
        await send({"type": "websocket.accept"})
        await anyio.sleep_forever()

    client = FinalBlocks({"type": "websocket.connect"})
    closed = anyio.Event()

    async def close() -> None:
        await gate.close(grace=0)
        closed.set()

    async with anyio.create_task_group() as tg:
        tg.start_soon(call, GateMiddleware(app, gate, cancellable=True), websocket(), client)
        await anyio.wait_all_tasks_blocked()
        tg.start_soon(close)
        with anyio.fail_after(HANG):
            await client.blocked.wait()
        await anyio.wait_all_tasks_blocked()
        drained_early = closed.is_set()
        client.unblock()
    assert client.sent[-1]["code"] == 1012
    assert not drained_early, "the gate drained before the close was sent"


# -- GateClosed in an exception group ------------------------------------------


async def test_gate_closed_in_an_exception_group_before_the_response_starts_is_a_503() -> None:
    gate = Gate("svc", warn_after=None)
    inner = Gate("tenant", warn_after=None)
    inner.close_nowait()

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        async def refused() -> None:
            with inner.enter("job"):
                pass

        async with anyio.create_task_group() as tg:
            tg.start_soon(refused)

    client = Client(REQUEST)
    with anyio.fail_after(HANG):
        await GateMiddleware(app, gate)(http(), client.receive, client.send)
    assert client.status == 503


# -- Behind real servers -------------------------------------------------------

HANDSHAKE = (
    b"GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
    b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
    b"Sec-WebSocket-Version: 13\r\n\r\n"
)


@each_server
class TestBehindServers:
    async def test_a_client_leaving_a_stream_mid_way_does_not_hold_the_gate(
        self, server_kind: tuple[str, str]
    ) -> None:
        gate = Gate("svc", warn_after=None)

        async def stream(request: Request) -> Response:
            async def chunks() -> AsyncIterator[bytes]:
                yield b"first\n"
                await anyio.sleep_forever()  # the next event, which never comes
                yield b"never\n"

            return StreamingResponse(chunks(), media_type="text/plain")

        # Cancellable, so that the grace ends what the defect leaves held, and
        # the servers stop cleanly; the test looks at what happens before it.
        app = Starlette(
            routes=[Route("/stream", stream)],
            middleware=[Middleware(GateMiddleware, gate=gate, cancellable=True)],
        )
        drained = anyio.Event()

        async def close() -> None:
            await gate.close(grace=2 * PROMPTLY)
            drained.set()

        async with serving(server_kind, app) as client, anyio.create_task_group() as tg:
            port = client.base_url.port
            assert port is not None
            with anyio.fail_after(HANG):
                async with await anyio.connect_tcp("127.0.0.1", port) as connection:
                    await connection.send(b"GET /stream HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
                    received = b""
                    while b"first" not in received:
                        received += await connection.receive()
                # the client has closed its connection, mid-stream
            tg.start_soon(close)
            with anyio.move_on_after(PROMPTLY):
                await drained.wait()
            held = not drained.is_set()
            with anyio.fail_after(HANG):
                await drained.wait()  # the grace ends it
        assert not held, "the gate was still held by a request whose client had left"

    async def test_a_refused_websocket_does_not_look_forbidden_to_the_client(
        self, server_kind: tuple[str, str]
    ) -> None:
        gate = Gate("svc", warn_after=None)
        gate.close_nowait()

        async def app(scope: Scope, receive: Receive, send: Send) -> None:
            if scope["type"] == "lifespan":
                while True:
                    message = await receive()
                    await send({"type": message["type"] + ".complete"})
                    if message["type"] == "lifespan.shutdown":
                        return
            await receive()
            await send({"type": "websocket.accept"})

        async with serving(server_kind, GateMiddleware(app, gate, retry_after=5)) as client:
            port = client.base_url.port
            assert port is not None
            with anyio.fail_after(HANG):
                stream = await anyio.connect_tcp("127.0.0.1", port)
                async with stream:
                    await stream.send(HANDSHAKE)
                    head = b""
                    while b"\r\n\r\n" not in head:
                        try:
                            head += await stream.receive()
                        except anyio.EndOfStream:  # noqa: PERF203
                            break
        status_line = head.split(b"\r\n", 1)[0]
        # The denial response both servers offer: the 503 a request gets.
        assert status_line.startswith(b"HTTP/1.1 503"), status_line
        assert b"retry-after: 5" in head.lower(), head


# -- Hypercorn's shutdown trigger: a second signal after the drain ---------------

SLOW_CLEANUP = """
import signal, socket, sys
from typing import Any, cast

import anyio

from anygate import Gate
from anygate.hypercorn import shutdown_trigger

gate = Gate("app", warn_after=None)


def say(line: str) -> None:
    print(line, flush=True)


async def app(scope: Any, receive: Any, send: Any) -> None:
    assert scope["type"] == "lifespan"
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        else:
            say("lifespan shutdown")
            # A clean-up that takes a while (flushing, closing pools): it goes
            # on when the test says so, on stdin.
            await anyio.to_thread.run_sync(sys.stdin.readline)
            say("lifespan shutdown complete")
            await send({"type": "lifespan.shutdown.complete"})
            return


async def serve(sock: socket.socket, backend: str) -> None:
    from hypercorn.config import Config

    config = Config()
    config.bind = [f"fd://{sock.detach()}"]
    config.accesslog = None
    closing = shutdown_trigger(gate, grace=0.1)

    async def trigger() -> None:
        async def announce() -> None:
            say("ready")  # run once closing() waits: it listens by then

        async with anyio.create_task_group() as tg:
            tg.start_soon(announce)
            await closing()

    if backend == "trio":
        from hypercorn.trio import serve as serve_trio

        await serve_trio(cast(Any, app), config, shutdown_trigger=trigger)
    else:
        from hypercorn.asyncio import serve as serve_asyncio

        await serve_asyncio(cast(Any, app), config, shutdown_trigger=trigger)


backend = sys.argv[1]
sock = socket.socket()
sock.bind(("127.0.0.1", 0))
sock.listen(16)
options = {"use_uvloop": True} if backend == "uvloop" else {}
anyio.run(serve, sock, backend, backend="trio" if backend == "trio" else "asyncio",
          backend_options=options)
say("server returned")
"""


@pytest.mark.parametrize("anyio_backend", [("asyncio", {})], ids=["client-asyncio"])
@pytest.mark.parametrize("server_backend", ["asyncio", "uvloop", "trio"])
async def test_hypercorn_a_second_signal_after_the_drain_does_not_kill_the_process(
    server_backend: str, anyio_backend: Any, tmp_path: Any
) -> None:
    script = tmp_path / "slow_cleanup.py"
    script.write_text(SLOW_CLEANUP)
    process = await anyio.open_process(
        [sys.executable, str(script), server_backend], stdin=PIPE, stdout=PIPE, stderr=PIPE
    )
    assert process.stdout is not None
    assert process.stdin is not None
    lines = BufferedByteReceiveStream(process.stdout)

    async def expect(text: str) -> None:
        try:
            while text not in (await lines.receive_until(b"\n", 65536)).decode():
                pass
        except anyio.IncompleteRead:
            assert process.stderr is not None
            errors = b"".join([chunk async for chunk in process.stderr]).decode()
            raise AssertionError(f"the server ended before {text!r}: {errors}") from None

    try:
        with anyio.fail_after(4 * HANG):
            await expect("ready")
            process.send_signal(signal.SIGTERM)  # the gates close, drain, the server stops
            await expect("lifespan shutdown")
            process.send_signal(signal.SIGTERM)  # impatient: a second one
            with contextlib.suppress(anyio.BrokenResourceError, OSError):
                await process.stdin.send(b"go\n")  # unless it is dead already
            returncode = await process.wait()
    finally:
        if process.returncode is None:
            process.kill()
        with anyio.CancelScope(shield=True):
            await process.wait()
    assert returncode == 0, (await process.stderr.receive()).decode() if process.stderr else ""
