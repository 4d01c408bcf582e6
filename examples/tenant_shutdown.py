"""Shutting down a tenant and its timelines, children first.

The shape from the README's "shutdown pattern": a tenant owns timelines, and
each object owns a gate that every request to it enters.

- ``get_page`` requests hold a timeline's gate, named, until they finish;
- ``wait_for_lsn`` long-polls hold it cancellably: they may wait forever;
- a compaction task holds the tenant's gate, started with ``gate.start_soon``.

Shutdown closes every timeline's gate together with a grace period, then the
tenant's. It checks that the page reads finished, the long-polls were
cancelled, new requests were refused, and the tenant outlived its timelines.

    python examples/tenant_shutdown.py [--backend asyncio|trio]
"""

from __future__ import annotations

import argparse
import sys

import anyio
from anyio.abc import TaskGroup

from anygate import Gate, GateClosed


class ShuttingDown(Exception):
    """Raised to a long-poll that shutdown cancelled."""


class Timeline:
    def __init__(self, name: str) -> None:
        self.name = name
        self.gate = Gate(f"timeline {name}", warn_after=None)
        self.reads_done = 0
        self.lsn = anyio.Event()  # never set: a long-poll waits until cancelled
        self.read_started = anyio.Event()

    async def get_page(self, key: int) -> bytes:
        with self.gate.enter(f"get_page {key}"):
            self.read_started.set()
            await anyio.sleep(0.05)
            self.reads_done += 1
            return f"{self.name}:{key}".encode()

    async def wait_for_lsn(self) -> None:
        with self.gate.enter("wait_for_lsn", cancellable=True) as guard:
            await self.lsn.wait()
        if guard.cancelled_caught:
            raise ShuttingDown(self.name)

    async def shutdown(self) -> None:
        await self.gate.close(grace=0.1)


class Tenant:
    def __init__(self, task_group: TaskGroup) -> None:
        self.gate = Gate("tenant 42", warn_after=None)
        self.timelines = {name: Timeline(name) for name in ("main", "branch")}
        self.compactions = 0
        self.gate.start_soon(task_group, self.compact, name="compaction")

    async def compact(self) -> None:
        await anyio.sleep(0.2)
        self.compactions += 1

    async def shutdown(self) -> None:
        async with anyio.create_task_group() as tg:
            for timeline in self.timelines.values():
                tg.start_soon(timeline.shutdown)
        # Every timeline is drained: only now may the tenant go.
        assert all(t.gate.count == 0 for t in self.timelines.values())
        await self.gate.close(grace=1.0)


async def main() -> int:
    polls_cancelled = 0

    async def poll(timeline: Timeline) -> None:
        nonlocal polls_cancelled
        try:
            await timeline.wait_for_lsn()
        except ShuttingDown:
            polls_cancelled += 1

    async with anyio.create_task_group() as tg:
        tenant = Tenant(tg)
        for timeline in tenant.timelines.values():
            for key in range(3):
                tg.start_soon(timeline.get_page, key)
            tg.start_soon(poll, timeline)
            await timeline.read_started.wait()
        await anyio.wait_all_tasks_blocked()
        await tenant.shutdown()

    refused = sum(t.gate.try_enter() is None for t in tenant.timelines.values())
    try:
        await tenant.timelines["main"].get_page(99)
    except GateClosed as exc:
        print(f"a late request: {exc}")
    reads = sum(t.reads_done for t in tenant.timelines.values())
    print(f"page reads finished: {reads}, long-polls cancelled: {polls_cancelled}")
    print(f"compactions finished: {tenant.compactions}, requests refused after: {refused}")
    ok = (reads, polls_cancelled, tenant.compactions, refused) == (6, 2, 1, 2)
    print("shutdown complete" if ok else "UNEXPECTED OUTCOME")
    return 0 if ok else 1


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--backend", choices=["asyncio", "trio"], default="asyncio")
    sys.exit(anyio.run(main, backend=parser.parse_args().backend))
