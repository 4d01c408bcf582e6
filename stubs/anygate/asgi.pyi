from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any, Protocol, TypeAlias

from typing_extensions import final

from . import Gate

__all__ = ["ASGIApp", "GateMiddleware", "Message", "Receive", "Scope", "Send"]

Scope: TypeAlias = MutableMapping[str, Any]
Message: TypeAlias = MutableMapping[str, Any]

class Receive(Protocol):
    """The ``receive`` callable of ASGI: awaits the next event from the client."""
    def __call__(self) -> Awaitable[Message]: ...

class Send(Protocol):
    """The ``send`` callable of ASGI: sends one event to the client."""
    def __call__(self, message: Message, /) -> Awaitable[None]: ...

class ASGIApp(Protocol):
    """An ASGI 3 application: ``await app(scope, receive, send)``."""
    def __call__(self, scope: Scope, receive: Receive, send: Send, /) -> Awaitable[None]: ...

@final
class GateMiddleware:
    """An ASGI 3 middleware that holds a gate for each request it passes on.

    Wrap an application, or list it in Starlette's or FastAPI's middleware::

        app = GateMiddleware(app, gate)
        app = Starlette(routes=..., middleware=[Middleware(GateMiddleware, gate=gate)])
        app.add_middleware(GateMiddleware, gate=gate)  # FastAPI

    Each ``"http"`` request holds its gate, as a holder named
    ``"{method} {path}"``, from before the application is called until the
    application has returned *and* the response has been sent to its last
    byte, whichever comes later: a streaming or file response holds the gate
    until its final body message (``more_body`` false, or
    ``http.response.pathsend``) has been sent, a response with trailers until
    its last ``http.response.trailers``, and a response whose end is sent by
    another task after the application returned holds it until then (the
    middleware returns to the server only then, too), or until the client has
    gone (``http.disconnect``), after which nothing more can be sent: a stream
    the client left, or a response the application left unfinished, ends the
    hold then. On a gate at its limit
    the request first waits for room, first come first served, as
    :meth:`~anygate.Gate.acquire` does.

    A request refused by a closed gate gets a ``503 Service Unavailable``,
    without the application being called: ``text/plain`` with a short body
    that names the gate, ``connection: close``, and ``retry-after`` when it is
    set. So does a request whose application raises :exc:`~anygate.GateClosed` before
    starting its response (a gate of its own, inside, refused it); raised after
    the response started, it propagates.

    A ``"websocket"`` connection holds its gate, as ``"WEBSOCKET {path}"``,
    until the application returns. A closed gate refuses it before it is
    accepted, in reply to its ``websocket.connect``; so does a
    :exc:`~anygate.GateClosed` raised by the application before it accepted.
    Where the server offers the ASGI denial response extension
    (``websocket.http.response``, as Hypercorn and Uvicorn do), the refusal is
    the same 503 as a request's; elsewhere it is a ``websocket.close`` of code
    1013 (try again later), which the server sends as a 403 Forbidden, since
    a connection closed before its accept is refused with that.

    A :exc:`~anygate.GateClosed` inside an exception group of nothing else (as
    a task group of the application raises it) counts as one.

    Cancellable requests (``cancellable=True``, or chosen per request) are
    cancelled when their gate's close runs out of grace, as the block of a
    cancellable guard is (:meth:`~anygate.Gate.enter`). The middleware then ends what
    the client sees cleanly: a response not yet started gets the 503; a started
    one gets a final empty body message (and empty trailers, if it announced
    trailers), so that the client sees a complete response, not a reset; an
    accepted websocket gets a ``websocket.close`` of code 1012 (service
    restart), and one not yet accepted the refusal. The gate stays held until
    that ending is sent, for a second at the most (a client that reads no
    more is then left to the server). A send made after that, by a task the
    application left behind, raises :exc:`~anygate.GateClosed`.

    ``"lifespan"`` and every other scope type are passed through untouched, as
    is every scope for which the gate chooser returns ``None``.

    Close the gates from the server's shutdown trigger, before the server
    drains its connections: the ASGI lifespan shutdown comes too late (see
    :ref:`where-to-close`).

    :param app: the ASGI 3 application to call
    :param gate: the gate every request holds, or a function of the scope that
        chooses one per request (a tenant's, say), or returns ``None`` to pass
        the request through ungated; it is called once per ``"http"`` and
        ``"websocket"`` scope, and a :exc:`~anygate.GateClosed` it raises refuses the
        request as a closed gate does
    :param cancellable: whether requests are cancelled when their gate's grace
        runs out (long-polls, server-sent events, streams): a bool for all, or a
        function of the scope that returns a bool
    :param retry_after: seconds for the ``retry-after`` header of a 503 (a
        fraction is rounded up to a whole second, as the header wants), or
        ``None`` for no header
    :raises TypeError: if ``app`` is not callable, ``gate`` neither a
        :class:`~anygate.Gate` nor callable, ``cancellable`` neither a bool nor callable,
        or ``retry_after`` not a number
    :raises ValueError: if ``retry_after`` is negative, infinite or NaN
    """
    def __init__(
        self,
        app: ASGIApp,
        gate: Gate | Callable[[Scope], Gate | None],
        *,
        cancellable: bool | Callable[[Scope], bool] = False,
        retry_after: float | None = None,
    ) -> None: ...
    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Serve one connection: gated for ``"http"`` and ``"websocket"``, else
        passed through untouched.
        """
