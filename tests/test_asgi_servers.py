"""GateMiddleware behind real servers, driven by httpx over 127.0.0.1.

Hypercorn runs on asyncio, uvloop and trio, Uvicorn on asyncio and uvloop,
each in the test's own event loop, on an ephemeral port, with the client in
the same loop: the test looks at the gate directly. A streaming response, a
file response (Starlette's ``FileResponse``) and a server-sent-events stream
are each shown to hold the gate until their last byte is sent, or to end
cleanly at the grace when cancellable. No sleeps: the tests wait on events
and on the gate's own ``wait_closing()``.
"""

from __future__ import annotations

import socket
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import cast

import anyio
import httpx
import pytest
from servers import each_server
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import FileResponse, Response, StreamingResponse
from starlette.routing import Route

from anygate import Gate
from anygate.asgi import ASGIApp, GateMiddleware
from helpers import Closer

if sys.version_info < (3, 11):
    from exceptiongroup import ExceptionGroup

pytestmark = pytest.mark.anyio

GRACE = 0.05
RETRY_AFTER = 5
# Larger than the loopback socket buffers, so that a client that stops reading
# keeps the server from sending the last byte.
FILE_SIZE = 32 * 1024 * 1024
PATTERN = bytes(range(256))
# Longer than the servers' graceful timeouts below.
SERVER_STOPS_WITHIN = 15


class Service:
    """A Starlette app behind the middleware, with what the tests steer."""

    def __init__(self, data: Path) -> None:
        self.gate = Gate("svc", warn_after=None)
        self.data = data
        self.finish_stream = anyio.Event()
        self.app = Starlette(
            routes=[
                Route("/stream", self.stream),
                Route("/file", self.file),
                Route("/sse", self.sse),
            ],
            middleware=[
                Middleware(
                    GateMiddleware,
                    gate=self.gate,
                    cancellable=lambda scope: scope["path"] == "/sse",
                    retry_after=RETRY_AFTER,
                )
            ],
        )

    async def stream(self, request: Request) -> Response:
        async def chunks() -> AsyncIterator[bytes]:
            yield b"first\n"
            await self.finish_stream.wait()
            yield b"last\n"

        return StreamingResponse(chunks(), media_type="text/plain")

    async def file(self, request: Request) -> Response:
        return FileResponse(self.data)

    async def sse(self, request: Request) -> Response:
        async def events() -> AsyncIterator[bytes]:
            yield b"data: 1\n\n"
            await anyio.sleep_forever()  # until the grace cancels it

        return StreamingResponse(events(), media_type="text/event-stream")


@pytest.fixture
def service(tmp_path: Path) -> Service:
    data = tmp_path / "data.bin"
    data.write_bytes(PATTERN * (FILE_SIZE // len(PATTERN)))
    return Service(data)


@asynccontextmanager
async def serving(kind: tuple[str, str], app: ASGIApp) -> AsyncIterator[httpx.AsyncClient]:
    """Serve ``app`` on an ephemeral port of 127.0.0.1; yield a client for it."""
    server_name, _ = kind
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    stop = anyio.Event()
    stopped = anyio.Event()

    async def serve() -> None:
        try:
            if server_name == "hypercorn":
                await serve_hypercorn(app, sock, kind[1], stop)
            else:
                await serve_uvicorn(app, sock, stop)
        finally:
            stopped.set()

    async with anyio.create_task_group() as tg:
        tg.start_soon(serve)
        try:
            async with httpx.AsyncClient(base_url=url, timeout=30) as client:
                yield client
        finally:
            # The server stops on its own terms, its graceful timeout included,
            # even when the test failed or timed out: cancelled, it could leave
            # requests' tasks behind (see
            # test_a_test_that_fails_mid_response_lets_the_server_stop).
            stop.set()
            with anyio.move_on_after(SERVER_STOPS_WITHIN, shield=True):
                await stopped.wait()


async def serve_hypercorn(
    app: ASGIApp, sock: socket.socket, backend: str, stop: anyio.Event
) -> None:
    from hypercorn.config import Config
    from hypercorn.typing import ASGIFramework

    config = Config()
    config.bind = [f"fd://{sock.detach()}"]
    config.accesslog = None
    config.graceful_timeout = 5
    # Hypercorn's ASGI types are TypedDicts, Starlette's and anygate's mappings.
    framework = cast("ASGIFramework", app)
    if backend == "trio":
        from hypercorn.trio import serve

        await serve(framework, config, shutdown_trigger=stop.wait)
    else:
        from hypercorn.asyncio import serve as serve_asyncio

        await serve_asyncio(framework, config, shutdown_trigger=stop.wait)


async def serve_uvicorn(app: ASGIApp, sock: socket.socket, stop: anyio.Event) -> None:
    import uvicorn

    server = uvicorn.Server(
        uvicorn.Config(app, log_level="warning", lifespan="off", timeout_graceful_shutdown=5)
    )

    async def stop_when_told() -> None:
        await stop.wait()
        server.should_exit = True

    async with anyio.create_task_group() as tg:
        tg.start_soon(stop_when_told)
        await server.serve(sockets=[sock])


@each_server
async def test_a_streaming_response_holds_the_gate_until_its_last_byte(
    server_kind: tuple[str, str], service: Service
) -> None:
    with anyio.fail_after(30):
        async with serving(server_kind, service.app) as client, anyio.create_task_group() as tg:
            async with client.stream("GET", "/stream") as response:
                chunks = response.aiter_bytes()
                assert await chunks.__anext__() == b"first\n"
                # The handler has returned its response, which is being sent.
                assert [h.name for h in service.gate.holders()] == ["GET /stream"]
                closer = Closer(service.gate)
                tg.start_soon(closer.run)
                # Not wait_all_tasks_blocked(): on Python 3.10, Hypercorn's
                # asyncio worker runs tasks that anyio cannot inspect.
                await service.gate.wait_closing()
                assert not closer.done
                assert service.gate.count == 1
                refused = await client.get("/stream")
                assert refused.status_code == 503
                assert refused.headers["retry-after"] == str(RETRY_AFTER)
                assert "gate 'svc' is closed" in refused.text
                service.finish_stream.set()
                rest = b"".join([chunk async for chunk in chunks])
            assert rest == b"last\n"
    assert closer.done


@each_server
async def test_a_file_response_holds_the_gate_until_its_last_byte(
    server_kind: tuple[str, str], service: Service
) -> None:
    with anyio.fail_after(30):
        async with serving(server_kind, service.app) as client, anyio.create_task_group() as tg:
            async with client.stream("GET", "/file") as response:
                assert response.status_code == 200
                chunks = response.aiter_raw()
                received = bytearray(await chunks.__anext__())
                closer = Closer(service.gate)
                tg.start_soon(closer.run)
                # The client reads no more: the server cannot send the last byte.
                await service.gate.wait_closing()
                assert [h.name for h in service.gate.holders()] == ["GET /file"]
                assert not closer.done
                async for chunk in chunks:
                    received += chunk
            assert len(received) == FILE_SIZE
            assert received == PATTERN * (FILE_SIZE // len(PATTERN))
    assert closer.done


@each_server
async def test_a_server_sent_events_stream_ends_cleanly_at_the_grace(
    server_kind: tuple[str, str], service: Service
) -> None:
    with anyio.fail_after(30):
        async with serving(server_kind, service.app) as client, anyio.create_task_group() as tg:
            async with client.stream("GET", "/sse") as response:
                assert response.headers["content-type"].startswith("text/event-stream")
                chunks = response.aiter_bytes()
                assert await chunks.__anext__() == b"data: 1\n\n"
                assert [h.name for h in service.gate.holders()] == ["GET /sse"]
                closer = Closer(service.gate, grace=GRACE)
                tg.start_soon(closer.run)
                # The stream ends, as a complete response: httpx raises on a
                # connection cut before the final chunk.
                rest = b"".join([chunk async for chunk in chunks])
            assert rest == b""
            assert response.is_stream_consumed
    assert closer.done


class _TestBodyFailed(Exception):
    """What a test body raises in the middle of a response."""


@each_server
async def test_a_test_that_fails_mid_response_lets_the_server_stop(
    server_kind: tuple[str, str], service: Service
) -> None:
    # serving() itself: a failing test must fail, not hang. When serving()
    # cancelled the server instead of stopping it, the asyncio servers left the
    # request's task behind, still holding the gate, and with Uvicorn on uvloop
    # the test's event loop then hung as it closed.
    with anyio.fail_after(30):
        with pytest.raises(ExceptionGroup) as failed:
            async with (
                serving(server_kind, service.app) as client,
                client.stream("GET", "/stream") as response,
            ):
                # The response has started; its body is left unread.
                assert response.status_code == 200
                assert service.gate.count == 1
                raise _TestBodyFailed
        assert failed.group_contains(_TestBodyFailed)
        # And nothing else: the server stopped without an error of its own.
        assert failed.value.split(_TestBodyFailed)[1] is None
        assert service.gate.count == 0
