"""A Starlette service whose tenants shut down behind gates.

Each tenant owns a gate and a directory of files. Every request holds its
tenant's gate while it uses the files, so once a tenant's ``close()`` has
returned, nothing is using them and they are deleted. The tenants' gates are
children of the service's gate, which shutdown closes. The patterns shown:

- :class:`anygate.asgi.GateMiddleware` holds the tenant's gate for each
  request, chosen from the path, until the response has been sent to its last
  byte: streaming responses and file downloads included. A closed gate answers
  ``503 Service Unavailable`` with ``Retry-After``, without calling the app.
- Long-polls and a never-ending stream of events are *cancellable*: a close
  with a grace period ends the long-poll with a 503, and the stream with a
  clean end of body, once the grace is over.
- ``POST /admin/tenants/{tenant}/close`` closes one tenant while the others
  go on serving.
- On SIGTERM or SIGINT, the gates are closed *before* the server drains its
  connections, by :func:`anygate.hypercorn.shutdown_trigger` or
  :func:`anygate.uvicorn.serve`: the server still answers during the grace
  (new requests get 503s, ``/ready`` too), then stops, and the process exits
  with status 0. The ASGI lifespan shutdown would be too late: Hypercorn and
  Uvicorn run it only after they have drained, or given up on, the requests
  in progress. ``--shutdown lifespan`` closes them there instead, to show the
  trap.
- ``--workers N`` runs N worker processes on one listening socket, behind a
  minimal process manager that passes SIGTERM on to each and exits 0 when
  they all did.

Served by Hypercorn on asyncio, uvloop or trio, or by Uvicorn on asyncio or
uvloop::

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
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from contextlib import asynccontextmanager
from pathlib import Path
from types import FrameType
from typing import Any, cast

import anyio
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from anygate import Gate
from anygate.asgi import GateMiddleware, Scope

TENANTS = ("alpha", "beta", "gamma")
RETRY_AFTER_SECONDS = 5
CHUNK = 64 * 1024
STARTED = time.monotonic()


def log(message: str) -> None:
    print(f"{time.monotonic() - STARTED:7.3f}s  [{os.getpid()}] {message}", flush=True)


class TenantGone(Exception):
    """A request used a tenant's files after its close had returned: the bug gates prevent."""


class Tenant:
    """A tenant: its files, and the gate that every request using them holds."""

    def __init__(self, name: str, directory: Path, file_size: int, parent: Gate) -> None:
        self.name = name
        # A child of the service's gate: closing the service closes every tenant.
        self.gate = Gate(f"tenant {name}", parent=parent, warn_after=None)
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

        The gate is shut by this call, before anything is awaited, so that
        requests are refused from this call on.
        """
        started = time.monotonic()
        drained = self.gate.close(grace=grace)
        return self._delete_after(drained, started)

    async def _delete_after(self, drained: Awaitable[None], started: float) -> float:
        await drained
        self.delete()
        took = time.monotonic() - started
        log(f"tenant {self.name!r} closed after {took:.3f}s; its files are deleted")
        return took

    def delete(self) -> None:
        # Called once the gate has drained: nothing can be reading the files.
        if not self.deleted:
            self.deleted = True
            shutil.rmtree(self.directory)


class Service:
    """The tenants, their gates under the service's, and the state the tests wait on."""

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
        self.gate = Gate("service", warn_after=None)
        self.tenants = {name: Tenant(name, root / name, file_size, self.gate) for name in TENANTS}
        self._changed: anyio.Event | None = None
        # Slow requests wait for their ticket to be finished by /debug/finish.
        self._tickets: dict[str, anyio.Event] = {}
        self._published: dict[str, anyio.Event] = {}

    def tenant(self, request: Request) -> Tenant:
        return self.tenants[request.path_params["tenant"]]

    def gate_for(self, scope: Scope) -> Gate | None:
        """The gate a request holds, chosen by GateMiddleware: its tenant's, if any."""
        parts = scope["path"].split("/", 3)
        if len(parts) > 2 and parts[1] == "t" and parts[2] in self.tenants:
            return self.tenants[parts[2]].gate
        return None  # /ready, /admin and /debug hold no gate

    @staticmethod
    def cancellable(scope: Scope) -> bool:
        """Long-polls and streams of events end when their gate's grace runs out."""
        path: str = scope["path"]
        return path.endswith(("/poll", "/feed"))

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

    async def report_shutdown(self) -> None:
        """Runs for the server's lifetime: logs the shutdown, and deletes the files after it.

        The server's shutdown helper closes :attr:`gate`; this only watches.
        """
        await self.gate.wait_closing()
        log(f"shutting down: closing {len(self.tenants)} tenants, grace {self.grace}s")
        self.notify()
        await self.gate.close()  # grace None: the close's own grace stands; waits for the drain
        for tenant in self.tenants.values():
            tenant.delete()
        violations = sum(t.violations for t in self.tenants.values())
        log(
            f"all tenants closed; tenant files used after their close: {violations}; "
            "the server drains its connections now"
        )

    async def lifespan_shutdown(self) -> None:
        """Called by the ASGI lifespan shutdown, after the server has drained."""
        held = sum(tenant.gate.count for tenant in self.tenants.values())
        log(f"lifespan shutdown; holds left: {held}")
        if self.close_in_lifespan:
            # The trap, kept for comparison (--shutdown lifespan): the server
            # has already waited for the requests, then cancelled them; there is
            # nothing left to close gracefully.
            await self.gate.close(grace=self.grace)


def build_app(service: Service) -> Starlette:
    """The ASGI application: the tenants' routes, the admin route and the debug routes.

    No handler touches a gate: GateMiddleware holds the tenant's gate around
    each request, until its response has been sent.
    """

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with anyio.create_task_group() as tg:
            tg.start_soon(service.report_shutdown)
            log("worker ready")
            yield
            await service.lifespan_shutdown()
            if not service.gate.closed:
                tg.cancel_scope.cancel()  # stopped without closing: nothing to report

    async def ready(request: Request) -> Response:
        """Readiness: 503 from the moment closing begins, so that traffic moves away."""
        if service.gate.closed:
            return Response("shutting down\n", status_code=503, media_type="text/plain")
        return Response("ready\n", media_type="text/plain")

    async def item(request: Request) -> Response:
        tenant = service.tenant(request)
        key = int(request.path_params["key"])
        tenant.check_files()
        async with await anyio.open_file(tenant.data, "rb") as f:
            await f.seek(key)
            value = (await f.read(1))[0]
        return JSONResponse({"tenant": tenant.name, "key": key, "value": value})

    async def work(request: Request) -> Response:
        """A slow request: it runs until /debug/finish/{ticket} is called.

        With ``?until=closing`` it runs until the service begins to close
        instead, so that it is in flight when the shutdown starts, whichever
        worker process serves it.
        """
        tenant = service.tenant(request)
        ticket = request.path_params["ticket"]
        log(f"work {ticket} started")
        service.notify()
        if request.query_params.get("until") == "closing":
            await service.gate.wait_closing()
        else:
            await service.ticket(ticket).wait()
        tenant.check_files()
        size = (await anyio.Path(tenant.data).stat()).st_size
        return JSONResponse({"tenant": tenant.name, "ticket": ticket, "size": size})

    async def upload(request: Request) -> Response:
        """Reads the request's body to its end, as the client sends it, then answers."""
        tenant = service.tenant(request)
        size = 0
        async for chunk in request.stream():
            if size == 0 and chunk:
                log(f"upload {request.path_params['name']} started")
            size += len(chunk)
        tenant.check_files()
        return JSONResponse({"tenant": tenant.name, "received": size, "worker": os.getpid()})

    async def poll(request: Request) -> Response:
        """A long-poll: waits for the tenant's next event; a close's grace ends it with a 503."""
        tenant = service.tenant(request)
        service.notify()
        await service.published(tenant.name).wait()
        tenant.check_files()
        return JSONResponse({"tenant": tenant.name, "events": tenant.events})

    async def publish(request: Request) -> Response:
        tenant = service.tenant(request)
        tenant.events += 1
        service.publish(tenant.name)
        return JSONResponse({"tenant": tenant.name, "events": tenant.events})

    async def feed(request: Request) -> Response:
        """The tenant's events as a never-ending stream, ended cleanly by a close's grace."""
        tenant = service.tenant(request)
        service.notify()

        async def lines() -> AsyncIterator[bytes]:
            yield b"subscribed\n"
            while True:
                await service.published(tenant.name).wait()
                yield f"event {tenant.events}\n".encode()

        return StreamingResponse(lines(), media_type="text/plain")

    async def export(request: Request) -> Response:
        """The tenant's data as a stream, read chunk by chunk while it is sent."""
        tenant = service.tenant(request)
        service.notify()

        async def chunks() -> AsyncIterator[bytes]:
            # No gate code here: the middleware holds the gate until the last chunk is sent.
            async with await anyio.open_file(tenant.data, "rb") as f:
                while True:
                    tenant.check_files()
                    chunk = await f.read(CHUNK)
                    if not chunk:
                        return
                    yield chunk

        return StreamingResponse(chunks(), media_type="application/octet-stream")

    async def download(request: Request) -> Response:
        tenant = service.tenant(request)
        service.notify()
        # The handler returns before a byte is sent; the middleware's hold lasts
        # until the file has been sent, so a close cannot delete it mid-download.
        return FileResponse(tenant.data, filename=f"{tenant.name}.bin")

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

    return Starlette(
        routes=[
            Route("/ready", ready),
            Route("/t/{tenant}/items/{key:int}", item),
            Route("/t/{tenant}/work/{ticket}", work),
            Route("/t/{tenant}/upload/{name}", upload, methods=["POST"]),
            Route("/t/{tenant}/poll", poll),
            Route("/t/{tenant}/events", publish, methods=["POST"]),
            Route("/t/{tenant}/feed", feed),
            Route("/t/{tenant}/export", export),
            Route("/t/{tenant}/download", download),
            Route("/admin/tenants/{tenant}/close", close_tenant, methods=["POST"]),
            Route("/debug/tenants/{tenant}", debug_tenant),
            Route("/debug/finish/{ticket}", debug_finish, methods=["POST"]),
        ],
        middleware=[
            Middleware(
                GateMiddleware,
                gate=service.gate_for,
                cancellable=service.cancellable,
                retry_after=RETRY_AFTER_SECONDS,
            )
        ],
        lifespan=lifespan,
    )


async def wait_for_signal() -> None:
    with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async for _ in signals:
            return


async def serve_hypercorn(service: Service, sock: socket.socket, backend: str) -> None:
    from hypercorn.config import Config
    from hypercorn.typing import ASGIFramework

    from anygate.hypercorn import shutdown_trigger

    config = Config()
    # Hypercorn takes an inherited socket by its file descriptor; detach() hands it
    # over, so that this socket object does not close it too.
    config.bind = [f"fd://{sock.detach()}"]
    config.accesslog = None
    # Only what the gates let through is left to drain: this is a backstop.
    config.graceful_timeout = service.drain_timeout
    # On SIGTERM or SIGINT: close the gates, wait for their drain, then stop.
    trigger = shutdown_trigger(service.gate, grace=service.grace)
    if service.close_in_lifespan:
        trigger = wait_for_signal  # the trap: stop at once, close in the lifespan

    # Hypercorn's ASGI types are stricter than Starlette's; the protocol is the same.
    app = cast("ASGIFramework", build_app(service))
    if backend == "trio":
        from hypercorn.trio import serve as serve_trio

        await serve_trio(app, config, shutdown_trigger=trigger)
    else:
        from hypercorn.asyncio import serve as serve_asyncio

        await serve_asyncio(app, config, shutdown_trigger=trigger)


async def serve_uvicorn(service: Service, sock: socket.socket) -> None:
    import uvicorn

    from anygate.uvicorn import serve

    config = uvicorn.Config(
        build_app(service),
        log_level="warning",
        lifespan="on",
        timeout_graceful_shutdown=math.ceil(service.drain_timeout),
    )
    server = uvicorn.Server(config)
    if service.close_in_lifespan:
        # The trap: Uvicorn's own handling, which drains first, then ends by the signal.
        await server.serve(sockets=[sock])
    else:
        # On SIGTERM or SIGINT: close the gates, wait for their drain, then stop.
        await serve(server, service.gate, grace=service.grace, sockets=[sock])


def run_workers(argv: list[str], sock: socket.socket, workers: int) -> int:
    """A minimal process manager: N workers on one socket; SIGTERM is passed on to each.

    Each worker is this script with ``--fd``, serving the inherited socket with
    its own gates. The workers run in a session of their own, so that a Ctrl+C
    in a terminal reaches them once, from here, not twice. Exits 0 when every
    worker did.
    """
    command = [sys.executable, __file__, *argv, "--fd", str(sock.fileno())]
    children = [
        subprocess.Popen(command, pass_fds=[sock.fileno()], start_new_session=True)
        for _ in range(workers)
    ]
    # The workers listen; this copy would keep accepting connections into the
    # backlog after they stopped, which clients would see as a hang.
    sock.close()

    def pass_on(signum: int, frame: FrameType | None) -> None:
        log(f"manager: received {signal.Signals(signum).name}, passing SIGTERM to the workers")
        for child in children:
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)

    signal.signal(signal.SIGTERM, pass_on)
    signal.signal(signal.SIGINT, pass_on)
    statuses = []
    for child in children:
        statuses.append(child.wait())
        log(f"manager: worker {child.pid} exited with status {statuses[-1]}")
    return 0 if all(status == 0 for status in statuses) else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--server", choices=["hypercorn", "uvicorn"], default="hypercorn")
    parser.add_argument("--backend", choices=["asyncio", "uvloop", "trio"], default="asyncio")
    parser.add_argument("--port", type=int, default=8000, help="0 picks a free port")
    parser.add_argument("--grace", type=float, default=5.0, help="seconds before long-polls end")
    parser.add_argument(
        "--drain-timeout", type=float, default=30.0, help="the server's own backstop, in seconds"
    )
    parser.add_argument("--file-size", type=int, default=4 * 1024 * 1024)
    parser.add_argument(
        "--shutdown",
        choices=["trigger", "lifespan"],
        default="trigger",
        help="where the gates are closed: 'lifespan' shows the trap, for comparison",
    )
    parser.add_argument("--workers", type=int, default=1, help="worker processes")
    parser.add_argument("--fd", type=int, help=argparse.SUPPRESS)  # a worker's inherited socket
    args = parser.parse_args(argv)
    if args.server == "uvicorn" and args.backend == "trio":
        parser.error("uvicorn runs on asyncio only")

    if args.fd is not None:
        sock = socket.socket(fileno=args.fd)
    else:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", args.port))
        sock.listen(128)
    port = sock.getsockname()[1]
    if args.workers > 1:
        log(f"{args.server} on {args.backend}, listening on http://127.0.0.1:{port}")
        worker_argv = [
            *("--server", args.server, "--backend", args.backend, "--grace", str(args.grace)),
            *("--drain-timeout", str(args.drain_timeout), "--file-size", str(args.file_size)),
            *("--shutdown", args.shutdown),
        ]
        return run_workers(worker_argv, sock, args.workers)

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
