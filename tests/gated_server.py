"""A bare ASGI app behind one gate, served with anygate's shutdown helpers.

Run by tests/test_servers.py in a process of its own, so that it can be sent
signals. It prints what the tests wait for, one line each, flushed: the URL
it listens on, ``held slow`` and ``held poll`` when a request holds the gate,
``gate closing`` when the gate's close begins, ``trigger returned`` when
Hypercorn's shutdown begins, and the holds left at the lifespan shutdown.

    python tests/gated_server.py hypercorn trio [GRACEFUL_TIMEOUT]
"""

from __future__ import annotations

import signal
import socket
import sys
from typing import Any, cast

import anyio

from anygate import Gate, GateClosed

GRACE = 0.3
# The servers' own backstop, by default: a test that waits less than this for
# the exit knows that the server did not wait for it.
GRACEFUL_TIMEOUT = 30

gate = Gate("app", warn_after=None)
serving_with_uvicorn = False
_finished: anyio.Event | None = None


def say(line: str) -> None:
    print(line, flush=True)


def finished() -> anyio.Event:
    """Set by ``/finish``: the slow request may then answer."""
    global _finished
    if _finished is None:
        _finished = anyio.Event()
    return _finished


async def respond(send: Any, status: int, body: bytes) -> None:
    headers = [(b"content-type", b"text/plain"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def lifespan(receive: Any, send: Any) -> None:
    async def report_closing() -> None:
        await gate.wait_closing()
        say("gate closing")

    async with anyio.create_task_group() as tg:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                tg.start_soon(report_closing)
                await send({"type": "lifespan.startup.complete"})
                if serving_with_uvicorn:
                    # Uvicorn handles the signals from before the lifespan startup.
                    say("ready")
            elif message["type"] == "lifespan.shutdown":
                say(f"lifespan shutdown; holds left: {gate.count}")
                tg.cancel_scope.cancel()
                break
    # Once the task group has ended: the server may cancel the lifespan's task
    # as soon as it reads this (Hypercorn on asyncio does, from Python 3.12 on).
    await send({"type": "lifespan.shutdown.complete"})


async def app(scope: Any, receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        await lifespan(receive, send)
        return
    path = scope["path"]
    try:
        if path == "/slow":
            with gate.enter("slow"):
                say("held slow")
                await finished().wait()
            await respond(send, 200, b"slow done")
        elif path == "/poll":
            with gate.enter("poll", cancellable=True):
                say("held poll")
                await anyio.sleep_forever()
            await respond(send, 503, b"cancelled by the grace")
        elif path == "/finish":
            finished().set()  # holds no gate: it must answer while the gate drains
            await respond(send, 200, b"finished")
        else:
            with gate:
                await respond(send, 200, b"ok")
    except GateClosed:
        await respond(send, 503, b"gate closed")


async def serve_hypercorn(sock: socket.socket, backend: str, graceful_timeout: int) -> None:
    from hypercorn.config import Config
    from hypercorn.typing import ASGIFramework

    from anygate.hypercorn import shutdown_trigger

    config = Config()
    config.bind = [f"fd://{sock.detach()}"]
    config.accesslog = None
    config.graceful_timeout = graceful_timeout
    closing_trigger = shutdown_trigger(gate, grace=GRACE)

    async def trigger() -> None:
        # Hypercorn calls the trigger once serving; it listens for the signals
        # before its first await, so they are handled from this line on.
        say("ready")
        await closing_trigger()
        say("trigger returned")

    asgi = cast("ASGIFramework", app)
    if backend == "trio":
        from hypercorn.trio import serve as serve_trio

        await serve_trio(asgi, config, shutdown_trigger=trigger)
    else:
        from hypercorn.asyncio import serve as serve_asyncio

        await serve_asyncio(asgi, config, shutdown_trigger=trigger)


async def serve_uvicorn(sock: socket.socket, graceful_timeout: int) -> None:
    global serving_with_uvicorn
    serving_with_uvicorn = True
    from uvicorn import Config, Server

    from anygate.uvicorn import serve

    config = Config(
        app, log_level="warning", lifespan="on", timeout_graceful_shutdown=graceful_timeout
    )
    await serve(Server(config), gate, grace=GRACE, sockets=[sock])


def main(server: str, backend: str, graceful_timeout: int = GRACEFUL_TIMEOUT) -> int:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    say(f"listening on http://127.0.0.1:{sock.getsockname()[1]}")

    async def serve() -> None:
        if server == "uvicorn":
            await serve_uvicorn(sock, graceful_timeout)
        else:
            await serve_hypercorn(sock, backend, graceful_timeout)

    options = {"use_uvloop": True} if backend == "uvloop" else {}
    anyio.run(serve, backend="trio" if backend == "trio" else "asyncio", backend_options=options)
    say(f"server returned; holds left: {gate.count}")
    return 0


if __name__ == "__main__":
    # A signal before the server has installed its handling ends the process
    # by the signal, as it would without anygate; the tests wait for readiness.
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
    sys.exit(main(sys.argv[1], sys.argv[2], *map(int, sys.argv[3:4])))
