"""Shutting down a tenant and its timelines: one close reaches the whole tree.

The shape from the README's "shutdown pattern": a tenant owns timelines, and
each object owns a gate that every request to it enters. Each timeline's gate
is a child of the tenant's (``Gate(..., parent=tenant.gate)``), so:

- ``get_page`` requests hold a timeline's gate, named, until they finish;
- ``wait_for_lsn`` long-polls hold it cancellably: they may wait forever;
- a compaction loop holds the tenant's gate, started with ``gate.start``; it
  finishes the compaction in hand and exits once ``gate.wait_closing()``
  returns;
- closing the tenant closes every timeline in the same call, with the same
  grace, so a timeline created during the shutdown is refused, never left
  serving; the tenant's close returns once the timelines have drained too.

It checks that the page reads finished, the long-polls were cancelled, the
compaction loop stopped after a whole compaction, new requests and timelines
were refused, and the tenant outlived its timelines.

    python examples/tenant_shutdown.py [--backend asyncio|trio]
"""

from __future__ import annotations

import argparse
import sys

import anyio
from anyio.abc import TaskGroup, TaskStatus

from anygate import Gate, GateClosed


class ShuttingDown(Exception):
    """Raised to a long-poll that shutdown cancelled."""


class Timeline:
    def __init__(self, name: str, tenant: Tenant) -> None:
        self.name = name
        # Raises GateClosed once the tenant is closing: no timeline is born late.
        self.gate = Gate(f"timeline {name}", parent=tenant.gate, warn_after=None)
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


class Tenant:
    def __init__(self) -> None:
        self.gate = Gate("tenant 42", warn_after=None)
        self.timelines = {name: Timeline(name, self) for name in ("main", "branch")}
        self.compactions = 0
        self.compacting = anyio.Event()

    async def start(self, task_group: TaskGroup) -> None:
        await self.gate.start(task_group, self.compaction_loop, name="compaction")

    async def compaction_loop(self, *, task_status: TaskStatus[None]) -> None:
        async with anyio.create_task_group() as tg:

            async def stop_when_closing() -> None:
                await self.gate.wait_closing()
                tg.cancel_scope.cancel()

            tg.start_soon(stop_when_closing)
            task_status.started()
            while True:
                # A compaction in hand is finished, even once closing began.
                with anyio.CancelScope(shield=True):
                    self.compacting.set()
                    await anyio.sleep(0.2)
                    self.compactions += 1
                await anyio.sleep(10)  # until the next one, or the close

    def begin_shutdown(self) -> None:
        # Shuts the tenant and every timeline at once; the grace counts from now.
        self.gate.close_nowait(grace=0.1)

    async def shutdown(self) -> None:
        self.begin_shutdown()
        await self.gate.close()  # returns once the timelines have drained too


async def main() -> int:
    polls_cancelled = 0
    late_refused = 0

    async def poll(timeline: Timeline) -> None:
        nonlocal polls_cancelled
        try:
            await timeline.wait_for_lsn()
        except ShuttingDown:
            polls_cancelled += 1

    async with anyio.create_task_group() as tg:
        tenant = Tenant()
        await tenant.start(tg)
        for timeline in tenant.timelines.values():
            for key in range(3):
                tg.start_soon(timeline.get_page, key)
            tg.start_soon(poll, timeline)
            await timeline.read_started.wait()
        await tenant.compacting.wait()
        await anyio.wait_all_tasks_blocked()
        tenant.begin_shutdown()
        try:
            Timeline("late", tenant)
        except GateClosed as exc:
            print(f"a late timeline: {exc}")
            late_refused = 1
        await tenant.shutdown()
        assert all(t.gate.count == 0 for t in tenant.timelines.values())

    refused = sum(t.gate.try_enter() is None for t in tenant.timelines.values())
    try:
        await tenant.timelines["main"].get_page(99)
    except GateClosed as exc:
        print(f"a late request: {exc}")
    reads = sum(t.reads_done for t in tenant.timelines.values())
    print(f"page reads finished: {reads}, long-polls cancelled: {polls_cancelled}")
    print(f"compactions finished: {tenant.compactions}, requests refused after: {refused}")
    print(f"timelines refused during shutdown: {late_refused}")
    ok = (reads, polls_cancelled, tenant.compactions, refused, late_refused) == (6, 2, 1, 2, 1)
    print("shutdown complete" if ok else "UNEXPECTED OUTCOME")
    return 0 if ok else 1


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--backend", choices=["asyncio", "trio"], default="asyncio")
    sys.exit(anyio.run(main, backend=parser.parse_args().backend))
