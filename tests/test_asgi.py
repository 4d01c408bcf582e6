"""anygate.asgi.GateMiddleware at the ASGI level, with hand-made receive and send.

Each rule of the middleware has its test here, on asyncio, uvloop and trio;
tests/test_asgi_servers.py runs it behind real servers. No sleeps: the tests
wait on events, and on ``anyio.wait_all_tasks_blocked()``.
"""

from __future__ import annotations

import math
import subprocess
import sys
import textwrap
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import anyio.abc
import pytest

from anygate import Gate, GateClosed
from anygate.asgi import ASGIApp, GateMiddleware, Message, Receive, Scope, Send
from helpers import Closer, no_hang

pytestmark = pytest.mark.anyio

START: Message = {"type": "http.response.start", "status": 200, "headers": []}


def http(path: str = "/items/1", method: str = "GET", **extra: Any) -> Scope:
    return {"type": "http", "method": method, "path": path, "headers": [], **extra}


def websocket(path: str = "/ws") -> Scope:
    return {"type": "websocket", "path": path, "headers": []}


def body(data: bytes = b"", more: bool = False) -> Message:
    return {"type": "http.response.body", "body": data, "more_body": more}


class Client:
    """The server's side of one connection: what the middleware receives and sends.

    ``receive`` hands out the ``incoming`` messages, then waits until the test
    calls :meth:`disconnect`. ``send`` records each message; one whose type is
    in ``blocking`` waits there until :meth:`unblock`, as a slow client makes
    a server's send wait.
    """

    def __init__(self, *incoming: Message, blocking: tuple[str, ...] = ()) -> None:
        self.incoming = list(incoming)
        self.sent: list[Message] = []
        self.blocking = blocking
        self.blocked = anyio.Event()
        self._unblock = anyio.Event()
        self._gone = anyio.Event()
        self.fail_with: Exception | None = None

    async def receive(self) -> Message:
        if self.incoming:
            return self.incoming.pop(0)
        await self._gone.wait()
        return {"type": "http.disconnect"}

    async def send(self, message: Message) -> None:
        if self.fail_with is not None:
            raise self.fail_with
        if message["type"] in self.blocking:
            self.blocked.set()
            await self._unblock.wait()
        self.sent.append(message)

    def unblock(self) -> None:
        self._unblock.set()

    def disconnect(self) -> None:
        self._gone.set()

    @property
    def types(self) -> list[str]:
        return [message["type"] for message in self.sent]

    @property
    def status(self) -> int:
        assert self.sent, "nothing was sent"
        assert self.sent[0]["type"] == "http.response.start"
        status: int = self.sent[0]["status"]
        return status

    @property
    def headers(self) -> dict[bytes, bytes]:
        return dict(self.sent[0]["headers"])

    @property
    def body(self) -> bytes:
        return b"".join(m.get("body", b"") for m in self.sent if m["type"] == "http.response.body")


async def call(app: ASGIApp, scope: Scope, client: Client) -> None:
    with no_hang(f"{scope['type']} {scope.get('path')}"):
        await app(scope, client.receive, client.send)


class Called:
    """An app that records its calls and answers 200 "ok"."""

    def __init__(self) -> None:
        self.calls: list[tuple[Scope, Receive, Send]] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.calls.append((scope, receive, send))
        if scope["type"] == "http":
            await send(START)
            await send(body(b"ok"))


# -- Passing through -------------------------------------------------------


async def test_lifespan_is_passed_through_untouched() -> None:
    app = Called()
    chosen: list[Scope] = []

    def choose(scope: Scope) -> Gate:
        chosen.append(scope)
        return Gate()

    client = Client()
    scope: Scope = {"type": "lifespan"}
    await call(GateMiddleware(app, choose), scope, client)
    await call(GateMiddleware(app, Gate("closed")), scope, client)
    assert chosen == []
    for called in app.calls:
        assert called == (scope, client.receive, client.send)


async def test_a_scope_whose_chooser_returns_none_is_passed_through_untouched() -> None:
    app = Called()
    gate = Gate("admin")
    gate.close_nowait()
    middleware = GateMiddleware(app, lambda scope: None if scope["path"] == "/health" else gate)
    client = Client()
    await call(middleware, http("/health"), client)
    assert app.calls == [(http("/health"), client.receive, client.send)]
    assert client.status == 200
    ws = Client({"type": "websocket.connect"})
    await call(middleware, {**websocket(), "path": "/health"}, ws)
    assert app.calls[-1][1:] == (ws.receive, ws.send)
    refused = Client()
    await call(middleware, http("/items"), refused)
    assert refused.status == 503


# -- HTTP: holding ---------------------------------------------------------


async def test_a_request_holds_the_gate_named_by_method_and_path() -> None:
    gate = Gate("svc")
    seen: list[tuple[int, list[str]]] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        seen.append((gate.count, [h.name for h in gate.holders()]))
        await send(START)
        await send(body(b"ok"))

    client = Client()
    await call(GateMiddleware(app, gate), http("/items/7", "POST"), client)
    assert seen == [(1, ["POST /items/7"])]
    assert gate.count == 0
    assert client.status == 200
    assert client.body == b"ok"


async def test_a_bounded_gate_admits_requests_first_come_first_served() -> None:
    gate = Gate("pool", limit=1)
    admitted: list[str] = []
    finish = {path: anyio.Event() for path in ("/1", "/2", "/3")}

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        admitted.append(scope["path"])
        await finish[scope["path"]].wait()
        await send(START)
        await send(body())

    middleware = GateMiddleware(app, gate)
    with no_hang("bounded gate"):
        async with anyio.create_task_group() as tg:
            for path in ("/1", "/2", "/3"):
                tg.start_soon(middleware, http(path), Client().receive, Client().send)
                await anyio.wait_all_tasks_blocked()
            assert admitted == ["/1"]
            assert gate.statistics().tasks_waiting == 2
            finish["/1"].set()
            await anyio.wait_all_tasks_blocked()
            assert admitted == ["/1", "/2"]
            finish["/2"].set()
            finish["/3"].set()
    assert admitted == ["/1", "/2", "/3"]
    assert gate.count == 0


async def test_a_final_body_sent_before_the_app_returns_holds_until_it_returns() -> None:
    # As Starlette's BackgroundTask: the response is sent, then the app goes on.
    gate = Gate("svc")
    sent = anyio.Event()
    go_on = anyio.Event()

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await send(START)
        await send(body(b"done"))
        sent.set()
        await go_on.wait()

    client = Client()
    async with anyio.create_task_group() as tg:
        tg.start_soon(call, GateMiddleware(app, gate), http(), client)
        await sent.wait()
        assert gate.count == 1
        go_on.set()
    assert gate.count == 0


async def test_a_streaming_body_holds_until_its_final_message_has_been_sent() -> None:
    gate = Gate("svc")

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await send(START)
        await send(body(b"a", more=True))
        await send(body(b"b", more=True))
        await send(body(b"c"))

    # The client is slow: the server's send of the final message waits for it.
    client = Client(blocking=("http.response.body",))
    async with anyio.create_task_group() as tg:
        tg.start_soon(call, GateMiddleware(app, gate), http(), client)
        await client.blocked.wait()
        closer = Closer(gate)
        tg.start_soon(closer.run)
        await anyio.wait_all_tasks_blocked()
        assert gate.count == 1
        assert not closer.done
        client.unblock()
    assert closer.done
    assert client.body == b"abc"


class BackgroundSender:
    """An app that starts the response and returns, leaving the rest of the
    response to a task of its own that sends ``rest`` once told to."""

    def __init__(self, tg: anyio.abc.TaskGroup, *rest: Message, start: Message = START) -> None:
        self.tg = tg
        self.rest = rest
        self.start = start
        self.returned = anyio.Event()
        self.go = anyio.Event()
        self.errors: list[BaseException] = []
        self.sent_all = anyio.Event()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send(self.start)
        self.tg.start_soon(self._send_rest, send)
        self.returned.set()

    async def _send_rest(self, send: Send) -> None:
        await self.go.wait()
        try:
            for message in self.rest:
                await send(message)
                await anyio.wait_all_tasks_blocked()
        except Exception as exc:
            self.errors.append(exc)
        self.sent_all.set()


async def test_a_body_sent_by_a_task_after_the_app_returned_is_held_too() -> None:
    gate = Gate("svc")
    client = Client()
    done = anyio.Event()

    async def serve(app: ASGIApp) -> None:
        await call(GateMiddleware(app, gate), http(), client)
        done.set()

    async with anyio.create_task_group() as tg:
        app = BackgroundSender(tg, body(b"a", more=True), body(b"b"))
        tg.start_soon(serve, app)
        await app.returned.wait()
        await anyio.wait_all_tasks_blocked()
        # The app has returned; the middleware has not: the server must not
        # end the response, nor the gate drain.
        assert gate.count == 1
        assert not done.is_set()
        app.go.set()
        await done.wait()
        assert gate.count == 0
    assert client.body == b"ab"


async def test_pathsend_ends_the_body_as_a_final_body_message() -> None:
    gate = Gate("svc")
    client = Client()
    scope = http(extensions={"http.response.pathsend": {}})
    async with anyio.create_task_group() as tg:
        app = BackgroundSender(tg, {"type": "http.response.pathsend", "path": "/srv/file"})
        tg.start_soon(call, GateMiddleware(app, gate), scope, client)
        await app.returned.wait()
        await anyio.wait_all_tasks_blocked()
        assert gate.count == 1
        app.go.set()
    assert gate.count == 0
    assert client.types == ["http.response.start", "http.response.pathsend"]


async def test_a_response_with_trailers_is_held_until_its_last_trailers() -> None:
    gate = Gate("svc")
    client = Client()
    counts: list[int] = []
    start = {**START, "trailers": True}
    trailers = {"type": "http.response.trailers", "headers": [(b"x-sum", b"1")]}

    async def send(message: Message) -> None:
        counts.append(gate.count)
        await client.send(message)

    async with anyio.create_task_group() as tg:
        app = BackgroundSender(
            tg,
            body(b"a"),
            {**trailers, "more_trailers": True},
            {**trailers, "more_trailers": False},
            start=start,
        )
        with no_hang("trailers"):
            tg.start_soon(GateMiddleware(app, gate), http(), client.receive, send)
            await app.returned.wait()
            app.go.set()
            await app.sent_all.wait()
            await anyio.wait_all_tasks_blocked()
    # Held at each send, the final body's included; released after the last trailers.
    assert counts == [1, 1, 1, 1]
    assert gate.count == 0
    assert client.types[-1] == "http.response.trailers"


async def test_a_send_that_fails_after_the_app_returned_ends_the_hold() -> None:
    gate = Gate("svc")
    client = Client()
    async with anyio.create_task_group() as tg:
        app = BackgroundSender(tg, body(b"a", more=True), body(b"b"))
        tg.start_soon(call, GateMiddleware(app, gate), http(), client)
        await app.returned.wait()
        client.fail_with = OSError("the client went away")
        app.go.set()
    assert gate.count == 0
    assert [type(e) for e in app.errors] == [OSError]


async def test_a_final_send_cancelled_half_way_by_the_app_ends_the_response() -> None:
    # As Starlette's StreamingResponse on Hypercorn's trio worker: the server
    # reports the disconnect from inside the last send, and the response's
    # disconnect listener cancels that send; then the app returns.
    gate = Gate("svc")
    client = Client(blocking=("http.response.body",))

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await send(START)
        async with anyio.create_task_group() as tg:

            async def cancel_when_blocked() -> None:
                await client.blocked.wait()
                tg.cancel_scope.cancel()

            tg.start_soon(cancel_when_blocked)
            await send(body(b"last"))

    await call(GateMiddleware(app, gate), http(), client)
    assert gate.count == 0


# -- HTTP: refusals ----------------------------------------------------------


@pytest.mark.parametrize(
    ("retry_after", "header"), [(None, None), (5, b"5"), (2.5, b"3"), (0, b"0")]
)
async def test_a_closed_gate_answers_503_without_calling_the_app(
    retry_after: float | None, header: bytes | None
) -> None:
    app = Called()
    gate = Gate("tenant alpha")
    gate.close_nowait()
    client = Client()
    await call(GateMiddleware(app, gate, retry_after=retry_after), http(), client)
    assert app.calls == []
    assert client.status == 503
    expected = {b"content-type": b"text/plain; charset=utf-8", b"connection": b"close"}
    if header is not None:
        expected[b"retry-after"] = header
    expected[b"content-length"] = str(len(client.body)).encode()
    assert client.headers == expected
    assert b"gate 'tenant alpha' is closed" in client.body
    assert client.sent[-1]["more_body"] is False


async def test_a_gate_closing_while_a_request_waits_for_room_answers_503() -> None:
    gate = Gate("pool", limit=1)
    release = anyio.Event()

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await release.wait()
        await send(START)
        await send(body())

    waiting = Client()
    async with anyio.create_task_group() as tg:
        tg.start_soon(call, GateMiddleware(app, gate), http("/1"), Client())
        await anyio.wait_all_tasks_blocked()
        tg.start_soon(call, GateMiddleware(app, gate), http("/2"), waiting)
        await anyio.wait_all_tasks_blocked()
        gate.close_nowait()
        await anyio.wait_all_tasks_blocked()
        assert waiting.status == 503
        release.set()


async def test_gate_closed_raised_by_the_app_before_the_response_starts_is_a_503() -> None:
    inner = Gate("tenant beta")
    inner.close_nowait()

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        with inner:
            await send(START)

    client = Client()
    outer = Gate("svc")
    await call(GateMiddleware(app, outer, retry_after=1), http(), client)
    assert client.status == 503
    assert client.headers[b"retry-after"] == b"1"
    assert b"gate 'tenant beta' is closed" in client.body
    assert outer.count == 0


async def test_gate_closed_raised_by_the_app_after_the_response_started_propagates() -> None:
    inner = Gate("tenant beta")
    inner.close_nowait()

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await send(START)
        with inner:
            await send(body())

    client = Client()
    outer = Gate("svc")
    with pytest.raises(GateClosed, match="tenant beta"):
        await call(GateMiddleware(app, outer), http(), client)
    assert client.types == ["http.response.start"]
    assert outer.count == 0


async def test_gate_closed_raised_by_the_chooser_is_a_503() -> None:
    app = Called()

    def choose(scope: Scope) -> Gate:
        raise GateClosed("tenant gamma is shutting down")

    client = Client()
    await call(GateMiddleware(app, choose), http(), client)
    assert client.status == 503
    assert b"tenant gamma is shutting down" in client.body
    assert app.calls == []


async def test_a_gate_per_tenant_refuses_only_its_own_requests() -> None:
    gates = {"alpha": Gate("tenant alpha"), "beta": Gate("tenant beta")}
    middleware = GateMiddleware(Called(), lambda scope: gates[scope["path"].split("/")[2]])
    gates["alpha"].close_nowait()
    alpha, beta = Client(), Client()
    await call(middleware, http("/t/alpha/items"), alpha)
    await call(middleware, http("/t/beta/items"), beta)
    assert (alpha.status, beta.status) == (503, 200)


# -- HTTP: cancellable requests ---------------------------------------------


async def test_a_cancellable_response_started_gets_a_final_empty_body_at_the_grace() -> None:
    gate = Gate("svc")
    cancelled = anyio.Event()

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await send(START)
        await send(body(b"event 1\n", more=True))
        try:
            await anyio.sleep_forever()
        except anyio.get_cancelled_exc_class():
            cancelled.set()
            raise

    client = Client()
    async with anyio.create_task_group() as tg:
        tg.start_soon(call, GateMiddleware(app, gate, cancellable=True), http("/feed"), client)
        await anyio.wait_all_tasks_blocked()
        with no_hang("close at the grace"):
            await gate.close(grace=0)
    assert cancelled.is_set()
    assert client.sent == [START, body(b"event 1\n", more=True), body()]


async def test_a_cancellable_response_not_started_gets_the_503_at_the_grace() -> None:
    gate = Gate("svc")

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await anyio.sleep_forever()

    client = Client()
    async with anyio.create_task_group() as tg:
        middleware = GateMiddleware(app, gate, cancellable=True, retry_after=7)
        tg.start_soon(call, middleware, http("/poll"), client)
        await anyio.wait_all_tasks_blocked()
        with no_hang("close at the grace"):
            await gate.close(grace=0)
    assert client.status == 503
    assert client.headers[b"retry-after"] == b"7"
    assert b"gate 'svc' is closed" in client.body


async def test_a_request_not_cancellable_is_waited_for_past_the_grace() -> None:
    gate = Gate("svc", warn_after=None)
    finish = anyio.Event()

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await send(START)
        await finish.wait()
        await send(body(b"all of it"))

    client = Client()
    async with anyio.create_task_group() as tg:
        tg.start_soon(call, GateMiddleware(app, gate), http(), client)
        await anyio.wait_all_tasks_blocked()
        closer = Closer(gate, grace=0)
        tg.start_soon(closer.run)
        await anyio.wait_all_tasks_blocked()
        assert not closer.done
        finish.set()
    assert closer.done
    assert client.body == b"all of it"


async def test_cancellable_may_be_chosen_per_request() -> None:
    gate = Gate("svc", warn_after=None)
    finish = anyio.Event()

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await send(START)
        await finish.wait()
        await send(body(b"done"))

    middleware = GateMiddleware(app, gate, cancellable=lambda scope: scope["path"] == "/poll")
    poll, work = Client(), Client()
    async with anyio.create_task_group() as tg:
        tg.start_soon(call, middleware, http("/poll"), poll)
        tg.start_soon(call, middleware, http("/work"), work)
        await anyio.wait_all_tasks_blocked()
        gate.close_nowait(grace=0)
        await anyio.wait_all_tasks_blocked()
        assert poll.sent == [START, body()]
        assert work.sent == [START]
        assert gate.count == 1
        finish.set()
    assert work.body == b"done"


async def test_a_cancellable_response_with_trailers_gets_empty_trailers_at_the_grace() -> None:
    gate = Gate("svc")

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await send({**START, "trailers": True})
        await anyio.sleep_forever()

    client = Client()
    async with anyio.create_task_group() as tg:
        tg.start_soon(call, GateMiddleware(app, gate, cancellable=True), http(), client)
        await anyio.wait_all_tasks_blocked()
        await gate.close(grace=0)
    assert client.types == [
        "http.response.start",
        "http.response.body",
        "http.response.trailers",
    ]
    assert client.sent[1]["more_body"] is False
    assert client.sent[2]["more_trailers"] is False


async def test_a_response_left_to_a_task_is_ended_at_the_grace_and_the_task_refused() -> None:
    gate = Gate("svc")
    client = Client()
    async with anyio.create_task_group() as tg:
        app = BackgroundSender(tg, body(b"late"))
        tg.start_soon(call, GateMiddleware(app, gate, cancellable=True), http(), client)
        await app.returned.wait()
        await anyio.wait_all_tasks_blocked()
        await gate.close(grace=0)
        assert client.sent == [START, body()]
        app.go.set()
    assert [type(e) for e in app.errors] == [GateClosed]
    assert client.sent == [START, body()]


async def test_a_cancellable_response_that_ended_gets_nothing_more_at_the_grace() -> None:
    gate = Gate("svc")

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await send(START)
        await send(body(b"ok"))
        await anyio.sleep_forever()  # a background task, after the response

    client = Client()
    async with anyio.create_task_group() as tg:
        tg.start_soon(call, GateMiddleware(app, gate, cancellable=True), http(), client)
        await anyio.wait_all_tasks_blocked()
        await gate.close(grace=0)
    assert client.sent == [START, body(b"ok")]


# -- WebSocket ---------------------------------------------------------------

CONNECT: Message = {"type": "websocket.connect"}


async def test_a_closed_gate_closes_a_websocket_with_1013_before_accepting() -> None:
    app = Called()
    gate = Gate("chat")
    gate.close_nowait()
    client = Client(CONNECT)
    await call(GateMiddleware(app, gate), websocket(), client)
    assert app.calls == []
    assert client.types == ["websocket.close"]
    assert client.sent[0]["code"] == 1013
    assert "chat" in client.sent[0]["reason"]


async def test_an_accepted_websocket_holds_the_gate_until_the_app_returns() -> None:
    gate = Gate("chat")
    counts: list[int] = []
    finish = anyio.Event()

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        assert (await receive())["type"] == "websocket.connect"
        await send({"type": "websocket.accept"})
        counts.append(gate.count)
        await finish.wait()
        await send({"type": "websocket.close", "code": 1000})
        counts.append(gate.count)

    client = Client(CONNECT)
    async with anyio.create_task_group() as tg:
        tg.start_soon(call, GateMiddleware(app, gate), websocket(), client)
        await anyio.wait_all_tasks_blocked()
        assert [h.name for h in gate.holders()] == ["WEBSOCKET /ws"]
        closer = Closer(gate, grace=0)
        tg.start_soon(closer.run)
        await anyio.wait_all_tasks_blocked()
        assert not closer.done
        finish.set()
    assert counts == [1, 1]
    assert closer.done
    assert client.types == ["websocket.accept", "websocket.close"]


async def test_a_cancellable_accepted_websocket_is_closed_with_1012_at_the_grace() -> None:
    gate = Gate("chat")

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()
        await send({"type": "websocket.accept"})
        await anyio.sleep_forever()

    client = Client(CONNECT)
    async with anyio.create_task_group() as tg:
        tg.start_soon(call, GateMiddleware(app, gate, cancellable=True), websocket(), client)
        await anyio.wait_all_tasks_blocked()
        await gate.close(grace=0)
    assert client.types == ["websocket.accept", "websocket.close"]
    assert client.sent[1]["code"] == 1012


async def test_a_cancellable_websocket_not_accepted_is_refused_with_1013_at_the_grace() -> None:
    gate = Gate("chat")

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await anyio.sleep_forever()

    client = Client(CONNECT)
    async with anyio.create_task_group() as tg:
        tg.start_soon(call, GateMiddleware(app, gate, cancellable=True), websocket(), client)
        await anyio.wait_all_tasks_blocked()
        await gate.close(grace=0)
    assert client.types == ["websocket.close"]
    assert client.sent[0]["code"] == 1013


async def test_a_cancellable_websocket_the_client_closed_gets_no_close() -> None:
    gate = Gate("chat")

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()
        await send({"type": "websocket.accept"})
        await receive()  # the client's disconnect
        await anyio.sleep_forever()

    client = Client(CONNECT, {"type": "websocket.disconnect", "code": 1001})
    async with anyio.create_task_group() as tg:
        tg.start_soon(call, GateMiddleware(app, gate, cancellable=True), websocket(), client)
        await anyio.wait_all_tasks_blocked()
        await gate.close(grace=0)
    assert client.types == ["websocket.accept"]


async def test_gate_closed_raised_by_a_websocket_app_before_accepting_closes_with_1013() -> None:
    inner = Gate("room 9")
    inner.close_nowait()

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()
        inner.check()

    client = Client(CONNECT)
    await call(GateMiddleware(app, Gate("chat")), websocket(), client)
    assert client.types == ["websocket.close"]
    assert client.sent[0]["code"] == 1013
    assert "room 9" in client.sent[0]["reason"]


async def test_gate_closed_raised_by_a_websocket_app_after_accepting_propagates() -> None:
    inner = Gate("room 9")
    inner.close_nowait()

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()
        await send({"type": "websocket.accept"})
        inner.check()

    with pytest.raises(GateClosed):
        await call(GateMiddleware(app, Gate("chat")), websocket(), Client(CONNECT))


async def test_a_websocket_refused_after_its_client_left_sends_nothing() -> None:
    gate = Gate("chat")
    gate.close_nowait()
    client = Client({"type": "websocket.disconnect", "code": 1001})
    await call(GateMiddleware(Called(), gate), websocket(), client)
    assert client.sent == []


# -- Arguments and the module ------------------------------------------------


async def noop_app(scope: Scope, receive: Receive, send: Send) -> None:
    pass


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"app": None}, TypeError, "app must be an ASGI application, not NoneType"),
        ({"gate": "tenant"}, TypeError, "gate must be a Gate, or a function .* not str"),
        ({"cancellable": 1}, TypeError, "cancellable must be a bool, or a function .* not int"),
        ({"retry_after": True}, TypeError, "retry_after must be a number of seconds .* not bool"),
        ({"retry_after": "5"}, TypeError, "retry_after must be a number of seconds .* not str"),
        ({"retry_after": -1}, ValueError, "retry_after must be a finite number .* not -1"),
        ({"retry_after": math.nan}, ValueError, "retry_after must be a finite number .* not nan"),
        ({"retry_after": math.inf}, ValueError, "retry_after must be a finite number .* not inf"),
    ],
)
def test_bad_arguments_are_named(
    kwargs: dict[str, Any], error: type[Exception], match: str
) -> None:
    arguments: dict[str, Any] = {"app": noop_app, "gate": Gate(), **kwargs}
    with pytest.raises(error, match=match):
        GateMiddleware(**arguments)


async def test_a_chooser_that_returns_no_gate_is_named() -> None:
    async def async_chooser(scope: Scope) -> Gate:
        return Gate()

    chooser: Any = async_chooser
    with pytest.raises(TypeError, match=r"returned coroutine .*async function.* Gate or None"):
        await GateMiddleware(noop_app, chooser)(http(), Client().receive, Client().send)
    for value in (1, "gate"):

        def wrong(scope: Scope, value: object = value) -> Any:
            return value

        with pytest.raises(TypeError, match=f"returned {type(value).__name__}; it must"):
            await GateMiddleware(noop_app, wrong)(http(), Client().receive, Client().send)


async def test_a_cancellable_chooser_that_returns_no_bool_is_named() -> None:
    def chooser(scope: Scope) -> Any:
        return "yes"

    with pytest.raises(TypeError, match=r"cancellable chooser .* returned str; it must return"):
        await GateMiddleware(noop_app, Gate(), cancellable=chooser)(
            http(), Client().receive, Client().send
        )


def test_the_middleware_is_final_and_reports_its_public_module() -> None:
    assert GateMiddleware.__module__ == "anygate.asgi"
    assert getattr(GateMiddleware, "__final__", False)


def test_the_module_imports_no_framework_and_no_server() -> None:
    code = textwrap.dedent(
        """
        import sys
        FORBIDDEN = ("starlette", "fastapi", "hypercorn", "uvicorn", "httpx", "asgiref",
                     "litestar", "quart", "h11", "wsproto")
        for name in FORBIDDEN:
            sys.modules[name] = None  # importing it now raises ImportError
        from anygate.asgi import GateMiddleware
        loaded = sorted(m for m in sys.modules if m.split(".")[0] in FORBIDDEN
                        and sys.modules[m] is not None)
        assert not loaded, loaded
        """
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_starlette_accepts_the_middleware_in_its_list() -> None:
    from starlette.applications import Starlette
    from starlette.middleware import Middleware

    gate = Gate("svc")
    Starlette(middleware=[Middleware(GateMiddleware, gate=gate, retry_after=5)])


def _typing_only(app: Callable[[Scope, Receive, Send], Awaitable[None]]) -> GateMiddleware:
    """Type-checked by mypy, never run: the middleware fits Starlette's types both ways."""
    from starlette.applications import Starlette
    from starlette.middleware import Middleware
    from starlette.types import ASGIApp as StarletteApp

    wrapped = GateMiddleware(Starlette(), Gate())
    as_starlette: StarletteApp = wrapped
    Starlette(middleware=[Middleware(GateMiddleware, gate=Gate(), cancellable=True)])
    return GateMiddleware(GateMiddleware(as_starlette, lambda scope: None), Gate())


async def test_a_refused_websocket_gets_the_503_where_the_server_can_deny() -> None:
    """A close before the accept reaches the client as a 403 Forbidden, which
    clients do not retry: where the server offers the denial response
    extension, the refusal is the 503 a request gets, with its retry-after."""
    gate = Gate("svc")
    await gate.close()

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        raise AssertionError("not called")

    scope = websocket("/ws")
    scope["extensions"] = {"websocket.http.response": {}}
    client = Client({"type": "websocket.connect"})
    await call(GateMiddleware(app, gate, retry_after=5), scope, client)
    start, sent_body = client.sent
    assert start["type"] == "websocket.http.response.start"
    assert start["status"] == 503
    assert (b"retry-after", b"5") in start["headers"]
    assert sent_body["type"] == "websocket.http.response.body"
    assert b"gate 'svc' is closed" in sent_body["body"]
