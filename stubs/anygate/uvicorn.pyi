import socket
from collections.abc import Awaitable
from types import FrameType
from typing import Protocol

from . import Gate

__all__ = ["serve"]

class _Server(Protocol):
    """What :func:`serve` uses of a ``uvicorn.Server``."""

    should_exit: bool
    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        """The signal handler that Uvicorn installs while it serves."""
    def serve(self, sockets: list[socket.socket] | None = None) -> Awaitable[None]:
        """Serve until told to exit."""

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
