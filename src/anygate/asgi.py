"""An ASGI middleware that holds a gate for each request: :class:`GateMiddleware`.

It needs nothing but anyio: ASGI is a protocol, and the types it speaks are
written here (:data:`Scope`, :data:`Message`, :class:`Receive`, :class:`Send`,
:class:`ASGIApp`), not imported from a framework or a server.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Awaitable, Callable, Coroutine, MutableMapping
from typing import Any, Protocol, TypeAlias

import anyio
from typing_extensions import final

from ._exceptions import GateClosed
from ._gate import Gate
from ._guards import GateGuard

if sys.version_info < (3, 11):
    # anyio's own dependency on Python 3.10.
    from exceptiongroup import BaseExceptionGroup

__all__ = ["ASGIApp", "GateMiddleware", "Message", "Receive", "Scope", "Send"]

#: The connection scope an ASGI server passes to the application: ``type``
#: (``"http"``, ``"websocket"``, ``"lifespan"``), ``path``, ``method``, ...
#: A mutable mapping of strings, as Starlette's own ``Scope`` is, so that
#: Starlette's and FastAPI's applications and middleware type-check with it.
Scope: TypeAlias = MutableMapping[str, Any]

#: One ASGI event, received or sent: a mapping with a ``type`` key, such as
#: ``{"type": "http.response.body", "body": b"...", "more_body": False}``.
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


#: WebSocket close codes (RFC 6455): try again later, and service restart.
_TRY_AGAIN_LATER = 1013
_SERVICE_RESTART = 1012
#: The most bytes a WebSocket close reason may have (RFC 6455, 5.5.1).
_MAX_REASON = 123
#: The most seconds the middleware's clean ending at the grace (the final
#: empty body, the 503, the close) may take: a client that does not read any
#: more would otherwise keep the gate held for ever. Past it, the server cuts.
_ENDING_TIMEOUT = 1.0


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

    __slots__ = (
        "_app",
        "_cancellable",
        "_choose",
        "_choose_cancellable",
        "_gate",
        "_headers",
    )

    def __init__(
        self,
        app: ASGIApp,
        gate: Gate | Callable[[Scope], Gate | None],
        *,
        cancellable: bool | Callable[[Scope], bool] = False,
        retry_after: float | None = None,
    ) -> None:
        if not callable(app):
            raise TypeError(f"app must be an ASGI application, not {type(app).__name__}")
        self._app = app
        self._gate: Gate | None = None
        self._choose: Callable[[Scope], Gate | None] | None = None
        if isinstance(gate, Gate):
            self._gate = gate
        elif callable(gate):
            self._choose = gate
        else:
            raise TypeError(
                "gate must be a Gate, or a function of the scope that returns a Gate "
                f"or None, not {type(gate).__name__}"
            )
        self._cancellable = False
        self._choose_cancellable: Callable[[Scope], bool] | None = None
        if isinstance(cancellable, bool):
            self._cancellable = cancellable
        elif callable(cancellable):
            self._choose_cancellable = cancellable
        else:
            raise TypeError(
                "cancellable must be a bool, or a function of the scope that returns "
                f"a bool, not {type(cancellable).__name__}"
            )
        headers = [(b"content-type", b"text/plain; charset=utf-8"), (b"connection", b"close")]
        if retry_after is not None:
            headers.append((b"retry-after", _retry_after_header(retry_after)))
        self._headers = headers

    def __repr__(self) -> str:
        gate = self._gate if self._choose is None else self._choose
        return f"<GateMiddleware {gate!r} around {self._app!r}>"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Serve one connection: gated for ``"http"`` and ``"websocket"``, else
        passed through untouched."""
        # The HTTP path is written out in one function: it runs for every request.
        if scope["type"] != "http":
            return await self._other(scope, receive, send)
        gate = self._gate
        if gate is None:
            try:
                gate = self._chosen(scope)
            except GateClosed as exc:
                return await self._refuse_http(send, exc)
            if gate is None:
                return await self._app(scope, receive, send)
        cancellable = (
            self._cancellable if self._choose_cancellable is None else self._is_cancellable(scope)
        )
        name = f"{scope['method']} {scope['path']}"
        try:
            # An unbounded gate always has room: enter() takes the hold that
            # acquire() would, without its checkpoint.
            if gate.limit is None:
                guard = gate.enter(name, cancellable=cancellable)
            else:
                guard = await gate.acquire(name, cancellable=cancellable)
        except GateClosed as exc:
            return await self._refuse_http(send, exc)
        response = _Response(send, receive)
        if cancellable:
            await self._cancellable_http(scope, response, guard, gate)
            return
        with guard:
            refused = await self._call_http(scope, response)
            if refused is not None:
                await self._refuse_http(send, refused)

    async def _call_http(self, scope: Scope, response: _Response) -> GateClosed | None:
        """Call the application, and wait for the end of its response: the
        :exc:`~anygate.GateClosed` to answer with a 503, if it refused before
        its response started."""
        try:
            await self._app(scope, response.receive, response.send)
        except BaseException as exc:
            refused = None if response.started else _only_gate_closed(exc)
            if refused is None:
                raise
            return refused
        if response.started and not response.done:
            # Another task sends the rest: the hold lasts until it has, or
            # until the client has gone.
            await response.wait_done()
        return None

    async def _cancellable_http(
        self, scope: Scope, response: _Response, guard: GateGuard, gate: Gate
    ) -> None:
        # A plain hold beside the cancellable one, so that the clean ending at
        # the grace is sent while the gate is still held.
        ending = guard.clone()
        try:
            refused: GateClosed | None = None
            with guard:
                refused = await self._call_http(scope, response)
            if refused is not None:
                with anyio.move_on_after(_ENDING_TIMEOUT):
                    await self._refuse_http(response.server_send, refused)
            elif guard.cancelled_caught:
                with anyio.move_on_after(_ENDING_TIMEOUT):
                    await response.cut(self, gate)
        finally:
            ending.release()

    async def _other(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "websocket":
            return await self._app(scope, receive, send)
        gate = self._gate
        if gate is None:
            try:
                gate = self._chosen(scope)
            except GateClosed as exc:
                return await self._connection(scope, receive, send).refuse(exc)
            if gate is None:
                return await self._app(scope, receive, send)
        await self._websocket(gate, scope, receive, send)

    def _chosen(self, scope: Scope) -> Gate | None:
        """The gate the chooser picks for ``scope``, checked."""
        choose = self._choose
        assert choose is not None
        # Typed as the user may have got it wrong: an async function, say.
        gate: object = choose(scope)
        if gate is None or isinstance(gate, Gate):
            return gate
        hint = " (an async function? it must be a plain one)" if _is_awaitable(gate) else ""
        raise TypeError(
            f"the gate chooser {choose!r} returned {type(gate).__name__}{hint}; "
            "it must return a Gate or None"
        )

    def _is_cancellable(self, scope: Scope) -> bool:
        choose = self._choose_cancellable
        if choose is None:
            return self._cancellable
        cancellable: object = choose(scope)
        if isinstance(cancellable, bool):
            return cancellable
        hint = " (an async function? it must be a plain one)" if _is_awaitable(cancellable) else ""
        raise TypeError(
            f"the cancellable chooser {choose!r} returned {type(cancellable).__name__}"
            f"{hint}; it must return a bool"
        )

    async def _hold(self, gate: Gate, name: str, cancellable: bool) -> GateGuard:
        # An unbounded gate always has room: enter() takes the same hold as
        # acquire(), without acquire()'s checkpoint.
        if gate.limit is None:
            return gate.enter(name, cancellable=cancellable)
        return await gate.acquire(name, cancellable=cancellable)

    # -- HTTP ----------------------------------------------------------------

    async def _refuse_http(self, send: Send, error: GateClosed, kind: str = "http") -> None:
        """Send the 503 that refuses a request: ``kind`` ``"websocket.http"``
        for a websocket's denial response."""
        body = f"Service Unavailable: {error}\n".encode()
        headers = [*self._headers, (b"content-length", str(len(body)).encode())]
        await send({"type": f"{kind}.response.start", "status": 503, "headers": headers})
        await send({"type": f"{kind}.response.body", "body": body, "more_body": False})

    def _connection(self, scope: Scope, receive: Receive, send: Send) -> _WebSocket:
        extensions = scope.get("extensions") or {}
        # Where the server can deny a websocket with an HTTP response, a
        # refusal is the same 503 as a request's: a close before the accept
        # reaches the client as a 403 Forbidden, which clients do not retry.
        deny = self if "websocket.http.response" in extensions else None
        return _WebSocket(receive, send, deny)

    # -- WebSocket -----------------------------------------------------------

    async def _websocket(self, gate: Gate, scope: Scope, receive: Receive, send: Send) -> None:
        connection = self._connection(scope, receive, send)
        try:
            cancellable = self._is_cancellable(scope)
            guard = await self._hold(gate, f"WEBSOCKET {scope['path']}", cancellable)
        except GateClosed as exc:
            await connection.refuse(exc)
            return
        # A plain hold beside a cancellable one, so that the close sent at the
        # grace is sent while the gate is still held.
        ending = guard.clone() if cancellable else None
        try:
            refused: GateClosed | None = None
            with guard:
                try:
                    await self._app(scope, connection.receive, connection.send)
                except BaseException as exc:
                    refused = None if connection.answered else _only_gate_closed(exc)
                    if refused is None:
                        raise
                if refused is not None and not cancellable:
                    await connection.refuse(refused)
                    refused = None
            with anyio.move_on_after(_ENDING_TIMEOUT):
                if refused is not None:
                    await connection.refuse(refused)
                elif guard.cancelled_caught:
                    await connection.cut(gate)
        finally:
            if ending is not None:
                ending.release()


@final
class _Response:
    """One HTTP response on its way to the client, as the application sends it."""

    __slots__ = (
        "_receive",
        "_waiter",
        "body_done",
        "cut_off",
        "done",
        "server_send",
        "started",
        "trailers",
    )

    #: ``http.response.start`` has been sent, or is being sent.
    started: bool
    #: The start announced trailers.
    trailers: bool
    #: The final body message (or ``pathsend``) has been sent, or is being sent.
    body_done: bool
    #: The whole response has been sent, or sending it failed.
    done: bool
    #: The middleware ended the response at its gate's grace.
    cut_off: bool

    def __init__(self, send: Send, receive: Receive) -> None:
        #: The server's ``send``.
        self.server_send = send
        self._receive = receive
        self._waiter: anyio.Event | None = None
        self.started = self.trailers = self.body_done = self.done = self.cut_off = False

    async def receive(self) -> Message:
        """The ``receive`` the application gets: the server's, watched for the
        client's leaving, after which nothing more of the response can be sent
        (Starlette's streams stop at it, without a final body message)."""
        message = await self._receive()
        if message["type"] == "http.disconnect":
            self._finish()
        return message

    async def send(self, message: Message) -> None:
        """The ``send`` the application gets: the server's, watched."""
        if self.cut_off:
            raise GateClosed("the response was ended when its gate's grace ran out")
        kind = message["type"]
        final = False
        if kind == "http.response.body":
            if not message.get("more_body", False):
                self.body_done = True
                final = not self.trailers
        elif kind == "http.response.start":
            self.started = True
            if message.get("trailers", False):
                self.trailers = True
        elif kind == "http.response.trailers":
            final = not message.get("more_trailers", False)
        elif kind == "http.response.pathsend" or (
            kind == "http.response.zerocopysend" and not message.get("more_body", False)
        ):
            self.body_done = True
            final = not self.trailers
        try:
            await self.server_send(message)
        except Exception:
            final = True  # the client is gone: nothing more will be sent
            raise
        finally:
            # A final message ends the response even if its send was cancelled
            # half-way: Starlette's streams cancel their own last send when the
            # server (Hypercorn on trio) reports the disconnect from inside it.
            if final:
                self._finish()

    def _finish(self) -> None:
        self.done = True
        if self._waiter is not None:
            self._waiter.set()

    async def wait_done(self) -> None:
        """Wait until the response has ended, or its client has left.

        The application has returned: any task it left to send the rest
        rarely reads the request, so the middleware reads it meanwhile, for the
        ``http.disconnect`` that says nobody will (a response left unfinished
        would hold the gate for ever).
        """
        self._waiter = waiter = anyio.Event()
        async with anyio.create_task_group() as tg:
            tg.start_soon(self._until_disconnect)
            await waiter.wait()
            tg.cancel_scope.cancel()

    async def _until_disconnect(self) -> None:
        while not self.done:
            await self.receive()

    async def cut(self, middleware: GateMiddleware, gate: Gate) -> None:
        """End the response cleanly, at its gate's grace."""
        if self.done:
            return
        self.cut_off = True
        if not self.started:
            await middleware._refuse_http(self.server_send, _closed(gate))
            return
        if not self.body_done:
            await self.server_send({"type": "http.response.body", "body": b"", "more_body": False})
        if self.trailers:
            await self.server_send(
                {"type": "http.response.trailers", "headers": [], "more_trailers": False}
            )


@final
class _WebSocket:
    """One WebSocket connection, as the application receives and sends on it."""

    __slots__ = (
        "_deny",
        "_receive",
        "_send",
        "accepted",
        "answered",
        "connected",
        "disconnected",
    )

    def __init__(self, receive: Receive, send: Send, deny: GateMiddleware | None) -> None:
        self._receive = receive
        self._send = send
        #: Refuses with a 503 denial response where the server can send one.
        self._deny = deny
        #: The client's ``websocket.connect`` has been received.
        self.connected = False
        #: The application accepted, closed or denied the connection.
        self.answered = False
        self.accepted = False
        #: The connection is over: closed by either side.
        self.disconnected = False

    async def receive(self) -> Message:
        message = await self._receive()
        kind = message["type"]
        if kind == "websocket.connect":
            self.connected = True
        elif kind == "websocket.disconnect":
            self.disconnected = True
        return message

    async def send(self, message: Message) -> None:
        kind = message["type"]
        if kind == "websocket.accept":
            self.answered = self.accepted = True
        elif kind in ("websocket.close", "websocket.http.response.start"):
            # Closed, or denied with an HTTP response: over either way.
            self.answered = self.disconnected = True
        await self._send(message)

    async def refuse(self, error: GateClosed) -> None:
        """Refuse before accepting, in reply to ``websocket.connect``: with the
        503 where the server offers denial responses, else a close of 1013."""
        if not self.connected:
            message = await self._receive()
            if message["type"] != "websocket.connect":
                return  # the client left first
        self.answered = self.disconnected = True
        if self._deny is not None:
            await self._deny._refuse_http(self._send, error, "websocket.http")
            return
        await self._send(
            {"type": "websocket.close", "code": _TRY_AGAIN_LATER, "reason": _reason(error)}
        )

    async def cut(self, gate: Gate) -> None:
        """End the connection at its gate's grace."""
        if self.disconnected:
            return
        if not self.answered:
            await self.refuse(_closed(gate))
            return
        self.disconnected = True
        await self._send(
            {"type": "websocket.close", "code": _SERVICE_RESTART, "reason": _reason(_closed(gate))}
        )


def _closed(gate: Gate) -> GateClosed:
    """The error a closed gate raises on entry, with its message."""
    try:
        gate.check()
    except GateClosed as exc:
        return exc
    return GateClosed(f"{gate!r} was closed")  # reopened meanwhile


def _only_gate_closed(error: BaseException) -> GateClosed | None:
    """The :exc:`~anygate.GateClosed` that ``error`` is, or that an exception
    group of nothing else holds (as a task group of the application raises
    it); else ``None``."""
    if isinstance(error, GateClosed):
        return error
    if isinstance(error, BaseExceptionGroup):
        closed, rest = error.split(GateClosed)
        if closed is not None and rest is None:
            first: BaseException = closed
            while isinstance(first, BaseExceptionGroup):
                first = first.exceptions[0]
            assert isinstance(first, GateClosed)
            return first
    return None


def _reason(error: GateClosed) -> str:
    """A WebSocket close reason: the error's message, cut to the bytes allowed."""
    reason = str(error).encode()[:_MAX_REASON]
    return reason.decode(errors="ignore")


def _retry_after_header(seconds: object) -> bytes:
    if not isinstance(seconds, (int, float)) or isinstance(seconds, bool):
        raise TypeError(
            f"retry_after must be a number of seconds or None, not {type(seconds).__name__}"
        )
    if math.isnan(seconds) or math.isinf(seconds) or seconds < 0:
        raise ValueError(f"retry_after must be a finite number of seconds >= 0, not {seconds}")
    return str(math.ceil(seconds)).encode()


def _is_awaitable(value: object) -> bool:
    """Whether a chooser's result is awaitable: closed if it is a coroutine,
    which an async function given as a chooser returns, never to be awaited."""
    if isinstance(value, Coroutine):
        value.close()
    return hasattr(value, "__await__")
