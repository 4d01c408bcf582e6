"""A Starlette service whose tenants shut down behind gates.

Each tenant owns a gate and a directory of files. Every request holds its
tenant's gate while it uses the files, so once a tenant's ``close()`` has
returned, nothing is using them and they are deleted. The patterns shown:

- A closed gate turns into ``503 Service Unavailable`` with ``Retry-After``,
  from one exception handler for :exc:`anygate.GateClosed` (not for anyio's
  ``ClosedResourceError``, which it subclasses).
- A streaming response and a file download hold the gate until their last
  byte is sent: the guard is released by the response once it has been sent,
  not by the handler when it returns the response.
- A long-poll holds a *cancellable* guard: a close with a grace period ends it
  with a 503 once the grace is over. So does a never-ending stream of events,
  whose body then ends once the grace is over.
- ``POST /admin/tenants/{tenant}/close`` closes one tenant while the others
  go on serving.
- On SIGTERM or SIGINT, the gates are closed from the server's shutdown
  trigger, *before* the server drains its connections: the server still
  answers during the grace (new requests get 503s), then stops. The ASGI
  lifespan shutdown would be too late: Hypercorn and Uvicorn run it only
  after they have drained, or given up on, the requests in progress.
  ``--shutdown lifespan`` closes them there instead, to show the trap.

Served by Hypercorn on asyncio, uvloop or trio, or by Uvicorn on asyncio::

    python examples/web_service.py --server hypercorn --backend trio --port 8000

Then, in another shell (``kill -TERM`` the server, or press Ctrl+C, to stop it)::

    curl localhost:8000/t/alpha/items/3
    curl localhost:8000/t/alpha/poll &        # waits for an event
    curl -X POST localhost:8000/t/alpha/events
    curl -o /dev/null localhost:8000/t/alpha/download
    curl -X POST 'localhost:8000/admin/tenants/alpha/close?grace=2'
    curl -i localhost:8000/t/alpha/items/3    # 503, Retry-After: 5

The ``/debug`` routes exist for tests/test_web_service.py: they let a client
wait for the server's state without polling, and finish slow requests on cue.
"""

from __future__ import annotations

import argparse
import math
import shutil
import signal
import socket
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, cast

import anyio
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response, StreamingResponse
from starlette.routing import Route
from starlette.types import Message, Receive, Scope, Send

from anygate import Gate, GateClosed, GateGuard

TENANTS = ("alpha", "beta", "gamma")
RETRY_AFTER_SECONDS = 5
CHUNK = 64 * 1024
STARTED = time.monotonic()


def log(message: str) -> None:
    print(f"{time.monotonic() - STARTED:7.3f}s  {message}", flush=True)


class TenantGone(Exception):
    """A request used a tenant's files after its close had returned: the bug gates prevent."""


class Tenant:
    """A tenant: its files, and the gate that every request using them holds."""

    def __init__(self, name: str, directory: Path, file_size: int) -> None:
        self.name = name
        self.gate = Gate(f"tenant {name}", warn_after=None)
        self.directory = directory
        self.data = directory / "data.bin"
        directory.mkdir()
        # A repeating pattern, so that a client can check every byte it got.
        pattern = bytes(range(256))
        self.data.write_bytes(pattern * (file_size // len(pattern)))
        self.deleted = False
        # Requests that found the files gone; the gates keep this at zero.
        self.violations = 0
        self.events = 0

    def check_files(self) -> None:
        """Called by requests while they hold the gate, each time they use the files."""
        if self.deleted:
            self.violations += 1
            raise TenantGone(f"tenant {self.name!r} was used after its close returned")

    def close(self, grace: float | None) -> Coroutine[Any, Any, float]:
        """Close the gate now; the coroutine returned waits for the drain, then deletes.

        The gate is shut by this call, before anything is awaited, so a service
        can shut every tenant at once and then wait for them together.
        """
        started = time.monotonic()
        drained = self.gate.close(grace=grace)
        return self._delete_after(drained, started)

    async def _delete_after(self, drained: Awaitable[None], started: float) -> float:
        await drained
        # Nothing holds the gate: nothing can be reading the files.
        self.deleted = True
        shutil.rmtree(self.directory)
        took = time.monotonic() - started
        log(f"tenant {self.name!r} closed after {took:.3f}s; its files are deleted")
        return took


class Service:
    """The tenants, and the server-side state the tests wait on."""

    def __init__(
        self,
        root: Path,
        *,
        grace: float,
        drain_timeout: float,
        file_size: int,
        close_in_lifespan: bool = False,
    ) -> None:
        self.grace = grace
        self.drain_timeout = drain_timeout
        self.close_in_lifespan = close_in_lifespan
        self.tenants = {name: Tenant(name, root / name, file_size) for name in TENANTS}
        self.shutting_down = False
        self._changed: anyio.Event | None = None
        # Slow requests wait for their ticket to be finished by /debug/finish.
        self._tickets: dict[str, anyio.Event] = {}
        self._published: dict[str, anyio.Event] = {}

    def tenant(self, request: Request) -> Tenant:
        name = request.path_params["tenant"]
        return self.tenants[name]

    def notify(self) -> None:
        """Wake the tasks in :meth:`wait_until`: something they look at has changed."""
        if self._changed is not None:
            self._changed.set()
            self._changed = None

    async def wait_until(self, predicate: Callable[[], bool]) -> None:
        while not predicate():
            # Created here, inside the running loop: anyio primitives bind to it.
            if self._changed is None:
                self._changed = anyio.Event()
            await self._changed.wait()

    def ticket(self, name: str) -> anyio.Event:
        return self._tickets.setdefault(name, anyio.Event())

    def published(self, tenant: str) -> anyio.Event:
        """Set at the tenant's next event."""
        return self._published.setdefault(tenant, anyio.Event())

    def publish(self, tenant: str) -> None:
        self._published.pop(tenant, anyio.Event()).set()

    async def server_stopping(self) -> None:
        """Called by the server's shutdown trigger, before the server drains."""
        if not self.close_in_lifespan:
            await self.shutdown()

    async def lifespan_shutdown(self) -> None:
        """Called by the ASGI lifespan shutdown, after the server has drained."""
        held = sum(tenant.gate.count for tenant in self.tenants.values())
        log(f"lifespan shutdown; holds left: {held}")
        if self.close_in_lifespan:
            # The trap, kept for comparison (--shutdown lifespan): the server
            # has already waited for the requests, then cancelled them; there is
            # nothing left to close gracefully.
            await self.shutdown()

    async def shutdown(self) -> None:
        """Close every tenant at once, then wait for them all to drain.

        Called by the server's shutdown trigger, while the server still accepts
        connections: requests arriving now are refused with a 503, the ones in
        progress finish, and long-polls are cancelled after the grace.
        """
        if self.shutting_down:
            return
        self.shutting_down = True
        log(f"shutting down: closing {len(self.tenants)} tenants, grace {self.grace}s")
        open_tenants = [t for t in self.tenants.values() if not t.gate.closed]
        drains = [tenant.close(self.grace) for tenant in open_tenants]
        self.notify()
        with anyio.move_on_after(self.drain_timeout) as scope:
            async with anyio.create_task_group() as tg:
                for drain in drains:
                    tg.start_soon(_await, drain)
        if scope.cancelled_caught:
            held = {t.name: t.gate.holders() for t in open_tenants if t.gate.count}
            log(f"gave up waiting after {self.drain_timeout}s; still held: {held}")
        else:
            violations = sum(t.violations for t in self.tenants.values())
            log(
                f"all tenants closed; tenant files used after their close: {violations}; "
                "the server drains its connections now"
            )


async def _await(awaitable: Awaitable[object]) -> None:
    await awaitable


class HeldStreamingResponse(StreamingResponse):
    """A streaming response that holds ``guard`` until its last byte is sent.

    The guard is released when the response has been sent, or has failed (the
    client went away), in the task that sends it. A cancellable guard works
    too: its cancel scope is entered and left around the whole send, in that
    one task, and when a close's grace cuts the stream, the body is ended
    properly, so that the client sees a complete response. Never put a
    cancellable guard inside the body's async generator: the generator may be
    resumed or closed from another task.
    """

    def __init__(self, guard: GateGuard, content: AsyncIterator[bytes], media_type: str) -> None:
        super().__init__(content, media_type=media_type)
        self.guard = guard

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = ended = False

        async def watched(message: Message) -> None:
            nonlocal started, ended
            started = started or message["type"] == "http.response.start"
            ended = message["type"] == "http.response.body" and not message.get("more_body")
            await send(message)

        with self.guard:
            await super().__call__(scope, receive, watched)
        if self.guard.cancelled_caught and started and not ended:
            await send({"type": "http.response.body", "body": b"", "more_body": False})


class HeldFileResponse(FileResponse):
    """A file response that holds ``guard`` until the file has been sent."""

    def __init__(self, guard: GateGuard, path: Path, filename: str) -> None:
        super().__init__(path, filename=filename)
        self.guard = guard

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        with self.guard:
            await super().__call__(scope, receive, send)


def build_app(service: Service) -> Starlette:
    """The ASGI application: the tenants' routes, the admin route and the debug routes."""

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        await service.lifespan_shutdown()

    async def item(request: Request) -> Response:
        tenant = service.tenant(request)
        key = int(request.path_params["key"])
        with tenant.gate:  # the fastest hold: a block, no guard object
            tenant.check_files()
            async with await anyio.open_file(tenant.data, "rb") as f:
                await f.seek(key)
                value = (await f.read(1))[0]
        return JSONResponse({"tenant": tenant.name, "key": key, "value": value})

    async def work(request: Request) -> Response:
        """A slow request: it runs until /debug/finish/{ticket} is called."""
        tenant = service.tenant(request)
        ticket = request.path_params["ticket"]
        with tenant.gate.enter(f"work {ticket}"):
            service.notify()
            await service.ticket(ticket).wait()
            tenant.check_files()
            size = (await anyio.Path(tenant.data).stat()).st_size
        return JSONResponse({"tenant": tenant.name, "ticket": ticket, "size": size})

    async def poll(request: Request) -> Response:
        """A long-poll: waits for the tenant's next event, cancelled by a close's grace."""
        tenant = service.tenant(request)
        with tenant.gate.enter("long-poll", cancellable=True) as guard:
            service.notify()
            await service.published(tenant.name).wait()
            tenant.check_files()
        if guard.cancelled_caught:
            return JSONResponse(
                {"error": f"tenant {tenant.name!r} is shutting down", "cancelled": True},
                status_code=503,
                headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
            )
        return JSONResponse({"tenant": tenant.name, "events": tenant.events})

    async def publish(request: Request) -> Response:
        tenant = service.tenant(request)
        with tenant.gate:
            tenant.events += 1
            service.publish(tenant.name)
        return JSONResponse({"tenant": tenant.name, "events": tenant.events})

    async def feed(request: Request) -> Response:
        """The tenant's events as a never-ending stream, cut by a close's grace."""
        tenant = service.tenant(request)
        guard = tenant.gate.enter("feed", cancellable=True)
        service.notify()

        async def lines() -> AsyncIterator[bytes]:
            yield b"subscribed\n"
            while True:
                await service.published(tenant.name).wait()
                yield f"event {tenant.events}\n".encode()

        return HeldStreamingResponse(guard, lines(), media_type="text/plain")

    async def export(request: Request) -> Response:
        """The tenant's data as a stream, read chunk by chunk while it is sent."""
        tenant = service.tenant(request)
        guard = tenant.gate.enter("export")  # released by the response, once sent
        service.notify()

        async def chunks() -> AsyncIterator[bytes]:
            # No gate code in here: the response holds the guard around the whole send.
            async with await anyio.open_file(tenant.data, "rb") as f:
                while True:
                    tenant.check_files()
                    chunk = await f.read(CHUNK)
                    if not chunk:
                        return
                    yield chunk

        return HeldStreamingResponse(guard, chunks(), media_type="application/octet-stream")

    async def download(request: Request) -> Response:
        tenant = service.tenant(request)
        guard = tenant.gate.enter("download")
        service.notify()
        # `with tenant.gate: return FileResponse(...)` would let go here, before
        # a byte is sent, and the close could delete the file mid-download.
        return HeldFileResponse(guard, tenant.data, filename=f"{tenant.name}.bin")

    async def close_tenant(request: Request) -> Response:
        tenant = service.tenant(request)
        grace = float(request.query_params.get("grace", service.grace))
        log(f"admin: closing tenant {tenant.name!r}, grace {grace}s")
        drained = tenant.close(grace)  # shut now, then notify the waiters
        service.notify()
        took = await drained
        return JSONResponse({"tenant": tenant.name, "closed_after": took})

    async def debug_tenant(request: Request) -> Response:
        """The tenant's state; ``?holders=N`` or ``?closed=1`` first waits for it."""
        tenant = service.tenant(request)
        holders = int(request.query_params.get("holders", 0))
        closed = request.query_params.get("closed") == "1"
        await service.wait_until(
            lambda: len(tenant.gate.holders()) >= holders and (tenant.gate.closed or not closed)
        )
        return JSONResponse(
            {
                "count": tenant.gate.count,
                "closed": tenant.gate.closed,
                "holders": [h.name for h in tenant.gate.holders()],
                "violations": tenant.violations,
            }
        )

    async def debug_finish(request: Request) -> Response:
        service.ticket(request.path_params["ticket"]).set()
        return JSONResponse({"finished": request.path_params["ticket"]})

    async def gate_closed(request: Request, exc: Exception) -> Response:
        return JSONResponse(
            {"error": str(exc)},
            status_code=503,
            headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
        )

    return Starlette(
        routes=[
            Route("/t/{tenant}/items/{key:int}", item),
            Route("/t/{tenant}/work/{ticket}", work),
            Route("/t/{tenant}/poll", poll),
            Route("/t/{tenant}/events", publish, methods=["POST"]),
            Route("/t/{tenant}/feed", feed),
            Route("/t/{tenant}/export", export),
            Route("/t/{tenant}/download", download),
            Route("/admin/tenants/{tenant}/close", close_tenant, methods=["POST"]),
            Route("/debug/tenants/{tenant}", debug_tenant),
            Route("/debug/finish/{ticket}", debug_finish, methods=["POST"]),
        ],
        # GateClosed only: its base class, anyio.ClosedResourceError, also means
        # "a stream was closed", which is a bug here rather than a 503.
        exception_handlers={GateClosed: gate_closed},
        lifespan=lifespan,
    )


async def wait_for_signal() -> None:
    with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async for signum in signals:
            log(f"received {signal.Signals(signum).name}")
            return


async def serve_hypercorn(service: Service, sock: socket.socket, backend: str) -> None:
    from hypercorn.config import Config
    from hypercorn.typing import ASGIFramework

    config = Config()
    # Hypercorn takes an inherited socket by its file descriptor; detach() hands it
    # over, so that this socket object does not close it too.
    config.bind = [f"fd://{sock.detach()}"]
    config.accesslog = None
    # Only what the gates let through is left to drain: this is a backstop.
    config.graceful_timeout = service.drain_timeout

    async def shutdown_trigger() -> None:
        # Hypercorn stops the server when this returns, then drains, then runs
        # the lifespan shutdown. The gates are closed and drained first.
        await wait_for_signal()
        await service.server_stopping()

    # Hypercorn's ASGI types are stricter than Starlette's; the protocol is the same.
    app = cast("ASGIFramework", build_app(service))
    if backend == "trio":
        from hypercorn.trio import serve as serve_trio

        await serve_trio(app, config, shutdown_trigger=shutdown_trigger)
    else:
        from hypercorn.asyncio import serve as serve_asyncio

        await serve_asyncio(app, config, shutdown_trigger=shutdown_trigger)


async def serve_uvicorn(service: Service, sock: socket.socket) -> None:
    import uvicorn

    class GatedServer(uvicorn.Server):
        """Closes the gates when the server is told to exit, before it drains."""

        async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
            # Uvicorn's own shutdown closes the listeners, waits for the
            # connections, and only then runs the lifespan shutdown.
            await service.server_stopping()
            await super().shutdown(sockets)
            log("server stopped")

    config = uvicorn.Config(
        build_app(service),
        log_level="warning",
        lifespan="on",
        timeout_graceful_shutdown=math.ceil(service.drain_timeout),
    )
    # Uvicorn handles SIGTERM and SIGINT itself, by setting should_exit, and
    # raises the signal again once it has shut down, so the process ends by it.
    await GatedServer(config).serve(sockets=[sock])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--server", choices=["hypercorn", "uvicorn"], default="hypercorn")
    parser.add_argument("--backend", choices=["asyncio", "uvloop", "trio"], default="asyncio")
    parser.add_argument("--port", type=int, default=8000, help="0 picks a free port")
    parser.add_argument("--grace", type=float, default=5.0, help="seconds before long-polls end")
    parser.add_argument(
        "--drain-timeout", type=float, default=30.0, help="seconds before shutdown gives up"
    )
    parser.add_argument("--file-size", type=int, default=4 * 1024 * 1024)
    parser.add_argument(
        "--shutdown",
        choices=["trigger", "lifespan"],
        default="trigger",
        help="where the gates are closed: 'lifespan' shows the trap, for comparison",
    )
    args = parser.parse_args(argv)
    if args.server == "uvicorn" and args.backend == "trio":
        parser.error("uvicorn runs on asyncio only")

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", args.port))
    sock.listen(128)
    port = sock.getsockname()[1]

    with tempfile.TemporaryDirectory() as root:
        service = Service(
            Path(root),
            grace=args.grace,
            drain_timeout=args.drain_timeout,
            file_size=args.file_size,
            close_in_lifespan=args.shutdown == "lifespan",
        )

        async def serve() -> None:
            log(f"{args.server} on {args.backend}, listening on http://127.0.0.1:{port}")
            if args.server == "uvicorn":
                await serve_uvicorn(service, sock)
            else:
                await serve_hypercorn(service, sock, args.backend)

        backend = "trio" if args.backend == "trio" else "asyncio"
        options = {"use_uvloop": True} if args.backend == "uvloop" else {}
        anyio.run(serve, backend=backend, backend_options=options)

    violations = sum(t.violations for t in service.tenants.values())
    log(f"server stopped; tenant files used after their close: {violations}")
    return 0 if violations == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
