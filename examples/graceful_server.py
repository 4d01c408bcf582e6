"""A TCP server that shuts down gracefully behind a Gate.

Every connection handler holds the gate, named for its peer, while it serves.
A built-in client opens a first wave of connections, some quick and some slow.
Once all of them are in, the server closes the gate: a second wave, arriving
while the slow requests drain, is refused, and the server stops only when the
last admitted request has been answered.

Run it with ``make demo`` (``BACKEND=trio make demo`` for trio).
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass, field

import anyio
from anyio.abc import SocketAttribute, SocketStream

from anygate import Gate, GateClosed

FIRST_WAVE = 40
SLOW_EVERY = 4  # every fourth request of the first wave is slow
LATE_WAVE = 10
SLOW_SECONDS = 0.3


@dataclass
class Server:
    gate: Gate = field(default_factory=lambda: Gate("demo server"))
    started: float = field(default_factory=time.monotonic)
    admitted: int = 0
    served: int = 0
    refused: int = 0
    first_wave_in: anyio.Event = field(default_factory=anyio.Event)

    def log(self, message: str) -> None:
        print(f"{time.monotonic() - self.started:7.3f}s  {message}")

    async def handle(self, stream: SocketStream) -> None:
        peer = stream.extra(SocketAttribute.remote_address)
        holder = peer if isinstance(peer, str) else f"{peer[0]}:{peer[1]}"
        async with stream:
            request = await stream.receive()
            try:
                guard = self.gate.enter(holder)
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
                await stream.send(b"ok")
                self.served += 1


async def client(port: int, request: bytes, replies: list[bytes]) -> None:
    async with await anyio.connect_tcp("127.0.0.1", port) as stream:
        await stream.send(request)
        replies.append(await stream.receive())


async def main() -> int:
    server = Server()
    listener = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=0)
    port = listener.extra(SocketAttribute.local_port)
    server.log(f"listening on 127.0.0.1:{port}")
    replies: list[bytes] = []
    async with anyio.create_task_group() as tg:
        tg.start_soon(listener.serve, server.handle)
        async with anyio.create_task_group() as clients:
            for i in range(FIRST_WAVE):
                request = b"slow" if i % SLOW_EVERY == 0 else b"quick"
                clients.start_soon(client, port, request, replies)
            await server.first_wave_in.wait()
            server.log(f"{FIRST_WAVE} requests admitted; closing the gate")
            drained = server.gate.close()
            server.log(f"gate closed with {server.gate.count} requests in progress")
            closed_at = time.monotonic()
            for _ in range(LATE_WAVE):
                clients.start_soon(client, port, b"quick", replies)
            await drained
            drain_time = time.monotonic() - closed_at
            server.log(f"gate drained in {drain_time:.3f}s")
        tg.cancel_scope.cancel()
    await listener.aclose()

    server.log(
        f"served {server.served}, refused after close {server.refused}, "
        f"time to drain {drain_time:.3f}s"
    )
    expected = (FIRST_WAVE, LATE_WAVE, FIRST_WAVE + LATE_WAVE)
    if (server.served, server.refused, len(replies)) != expected:
        print(f"unexpected outcome, wanted served/refused/replies {expected}")
        return 1
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", choices=["asyncio", "trio"], default="asyncio")
    args = parser.parse_args()
    print(f"backend: {args.backend}")
    sys.exit(anyio.run(main, backend=args.backend))
