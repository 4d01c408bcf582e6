"""Uvicorn's shutdown, with the gates closed first: :func:`serve`.

Uvicorn is not a dependency: this module does not import it. It needs nothing
but anyio, and runs where Uvicorn does: on asyncio, with or without uvloop.
"""

from __future__ import annotations

import socket
from collections.abc import Awaitable
from types import FrameType
from typing import Protocol

import anyio

from ._gate import Gate
from ._servers import check_gates, close_all
from ._util import check_seconds, require_loop
from ._wakeup import LoopRef

__all__ = ["serve"]


class _Server(Protocol):
    """What :func:`serve` uses of a ``uvicorn.Server``."""

    should_exit: bool

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        """The signal handler that Uvicorn installs while it serves."""

    def serve(self, sockets: list[socket.socket] | None = None) -> Awaitable[None]:
        """Serve until told to exit."""
        ...


async def serve(
    server: _Server,
    *gates: Gate,
    grace: float | None = None,
    sockets: list[socket.socket] | None = None,
) -> None:
    """Run ``server.serve(sockets)``, closing ``gates`` before Uvicorn drains.

    ``server`` is a ``uvicorn.Server``. Uvicorn handles SIGINT and SIGTERM
    itself: by default a signal makes it close its listeners, wait for the
    connections (up to ``timeout_graceful_shutdown``), run the ASGI lifespan
    shutdown, and then raise the signal again, so that the process ends by it
    (exit status ``-15`` from :mod:`subprocess` for SIGTERM). Served by this
    function instead, the first signal closes every gate at once with
    ``grace``, while the server still accepts connections: a request arriving
    then is refused by its gate (a 503 from :class:`~anygate.asgi.GateMiddleware`),
    the requests in progress finish, and long-polls and streams are cancelled
    after the grace. Once all the gates have drained, the server is told to
    exit (``server.should_exit``), and its own shutdown finds nothing left to
    wait for. The signal is not raised again: the process exits with status 0
    after a clean drain::

        import asyncio
        import uvicorn
        from anygate.uvicorn import serve

        server = uvicorn.Server(uvicorn.Config(app, host="0.0.0.0", port=8000))
        asyncio.run(serve(server, gate, grace=5))

    A second signal while the gates drain is handled as Uvicorn handles a
    first one: the server stops without waiting for the gates, bounded by its
    ``timeout_graceful_shutdown``, and the process ends by the signal.

    It works by handling the signals in place of ``server.handle_exit``, the
    handler Uvicorn installs, for as long as it runs. As with Uvicorn, signals
    are handled only when it runs in the main thread; elsewhere nothing closes
    the gates, and setting ``server.should_exit`` yourself stops the server
    without closing them.

    :param server: the ``uvicorn.Server`` to run
    :param gates: the gates to close, such as the root of a tree of gates
    :param grace: seconds before the gates' cancellable holders are cancelled,
        or ``None`` to never cancel them; see :meth:`~anygate.Gate.close_nowait`
    :param sockets: passed to ``server.serve()``: listening sockets to serve on,
        or ``None`` for the ones its config names
    :raises TypeError: if ``server`` is not a Uvicorn server, no gate is given,
        one is not a :class:`~anygate.Gate`, or ``grace`` is not a number
    :raises ValueError: if ``grace`` is negative or NaN
    :raises RuntimeError: if no event loop runs, or it is not asyncio's (Uvicorn
        needs asyncio); with no loop at all, :exc:`anyio.NoEventLoopError`
    """
    if not callable(getattr(server, "serve", None)) or not callable(
        getattr(server, "handle_exit", None)
    ):
        raise TypeError(f"serve() needs a uvicorn.Server, not {type(server).__name__}")
    checked = check_gates("serve", gates)
    seconds = check_seconds("grace", grace)
    token = require_loop("anygate.uvicorn.serve()")
    if "asyncio" not in token.backend_class.__module__:
        raise RuntimeError("anygate.uvicorn.serve() runs on asyncio, as Uvicorn does")
    loop = LoopRef("anygate.uvicorn.serve()")

    uvicorn_handle_exit = server.handle_exit
    signalled = anyio.Event()
    received: list[int] = []

    def handle_exit(sig: int, frame: FrameType | None) -> None:
        if received:
            # A second signal: Uvicorn's own handling, which stops it now.
            uvicorn_handle_exit(sig, frame)
            return
        received.append(sig)
        # Shut the gates in the handler itself, which close_nowait() allows:
        # refusals begin at once. The task below waits for the drain, woken
        # through the loop: setting the event here, perhaps inside the loop's
        # own scheduling, could be lost.
        for gate in checked:
            gate.close_nowait(grace=seconds)
        loop.call_soon(signalled.set)

    async def close_then_stop() -> None:
        await signalled.wait()
        await close_all(checked, seconds)
        server.should_exit = True

    # Uvicorn installs self.handle_exit as its signal handler when serving
    # starts, and restores the previous handlers when it ends.
    server.handle_exit = handle_exit  # type: ignore[method-assign]
    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(close_then_stop)
            try:
                await server.serve(sockets=sockets)
            finally:
                tg.cancel_scope.cancel()
    finally:
        del server.handle_exit
