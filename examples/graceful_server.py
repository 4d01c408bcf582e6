"""A TCP server that shuts down gracefully behind a Gate.

Every connection handler holds the gate, named for its request and peer. A
built-in client opens a first wave of connections: quick requests, slow ones,
and long-polls that would wait forever. A background flush runs under the gate
too. Once the first wave is in, the server closes the gate with a grace period:

- a second wave of clients, arriving during the drain, is refused;
- the flush finishes on its own, within the grace period;
- when the grace period is over, the long-polls are cancelled;
- the slow requests outlive the grace, so the gate logs a warning naming them,
  and each logs that it kept the gate from closing;
- the server stops only when the last holder has let go.

Run it with ``make demo`` (``BACKEND=trio make demo`` for trio).
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from dataclasses import dataclass, field

import anyio
from anyio.abc import SocketAttribute, SocketStream

from anygate import Gate, GateClosed

FIRST_WAVE = 40
LATE_WAVE = 10
SLOW_SECONDS = 0.8
FLUSH_SECONDS = 0.2
GRACE_SECONDS = 0.3
WARN_AFTER_SECONDS = 0.1
STARTED = time.monotonic()


def request_kind(i: int) -> bytes:
    """Every eighth request is slow and every eighth a long-poll; the rest are quick."""
    return {0: b"slow", 4: b"poll"}.get(i % 8, b"quick")


def log(message: str) -> None:
    print(f"{time.monotonic() - STARTED:7.3f}s  {message}", flush=True)


class TimelineHandler(logging.Handler):
    """Shows anygate's log records in the demo's timeline."""

    def emit(self, record: logging.LogRecord) -> None:
        log(f"[{record.name} {record.levelname}] {record.getMessage()}")


@dataclass
class Server:
    gate: Gate = field(default_factory=lambda: Gate("demo server", warn_after=WARN_AFTER_SECONDS))
    admitted: int = 0
    served: int = 0
    cancelled: int = 0
    refused: int = 0
    flushed: bool = False
    first_wave_in: anyio.Event = field(default_factory=anyio.Event)

    async def handle(self, stream: SocketStream) -> None:
        peer = stream.extra(SocketAttribute.remote_address)
        where = peer if isinstance(peer, str) else f"{peer[0]}:{peer[1]}"
        async with stream:
            request = await stream.receive()
            holder = f"{request.decode()} from {where}"
            try:
                guard = self.gate.enter(holder, cancellable=request == b"poll")
            except GateClosed:
                self.refused += 1
                await stream.send(b"refused: shutting down")
                return
            with guard:
                self.admitted += 1
                if self.admitted == FIRST_WAVE:
                    self.first_wave_in.set()
                if request == b"slow":
                    await anyio.sleep(SLOW_SECONDS)
                elif request == b"poll":
                    await anyio.sleep_forever()  # until an event that never comes
                await stream.send(b"ok")
                self.served += 1
            if guard.cancelled_caught:
                self.cancelled += 1
                await stream.send(b"cancelled: shutting down")

    async def flush(self) -> None:
        await anyio.sleep(FLUSH_SECONDS)
        self.flushed = True


async def client(port: int, request: bytes, replies: list[bytes]) -> None:
    async with await anyio.connect_tcp("127.0.0.1", port) as stream:
        await stream.send(request)
        replies.append(await stream.receive())


async def main() -> int:
    server = Server()
    listener = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=0)
    port = listener.extra(SocketAttribute.local_port)
    log(f"listening on 127.0.0.1:{port}")
    replies: list[bytes] = []
    async with anyio.create_task_group() as tg:
        tg.start_soon(listener.serve, server.handle)
        async with anyio.create_task_group() as clients:
            for i in range(FIRST_WAVE):
                clients.start_soon(client, port, request_kind(i), replies)
            await server.first_wave_in.wait()
            server.gate.start_soon(tg, server.flush, name="background flush")
            log(f"{FIRST_WAVE} requests admitted and a flush started")
            drained = server.gate.close(grace=GRACE_SECONDS)
            log(
                f"gate closed with {server.gate.count} holders; "
                f"long-polls get a {GRACE_SECONDS}s grace period"
            )
            closed_at = time.monotonic()
            for _ in range(LATE_WAVE):
                clients.start_soon(client, port, b"quick", replies)
            await drained
            drain_time = time.monotonic() - closed_at
        tg.cancel_scope.cancel()
    await listener.aclose()

    log(
        f"served {server.served}, cancelled after grace {server.cancelled}, "
        f"refused after close {server.refused}, flushed {server.flushed}, "
        f"time to drain {drain_time:.3f}s"
    )
    polls = sum(request_kind(i) == b"poll" for i in range(FIRST_WAVE))
    got = (server.served, server.cancelled, server.refused, server.flushed, len(replies))
    expected = (FIRST_WAVE - polls, polls, LATE_WAVE, True, FIRST_WAVE + LATE_WAVE)
    if got != expected:
        print(f"unexpected outcome {got}, wanted {expected}")
        return 1
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", choices=["asyncio", "trio"], default="asyncio")
    args = parser.parse_args()
    logger = logging.getLogger("anygate")
    logger.addHandler(TimelineHandler())
    logger.setLevel(logging.INFO)
    print(f"backend: {args.backend}")
    sys.exit(anyio.run(main, backend=args.backend))
