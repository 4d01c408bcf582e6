"""A bounded gate in front of an asyncpg pool, under a tenant's gate.

A tenant's database access goes through a pool of ``SIZE`` connections
(``asyncpg.create_pool(max_size=SIZE)``) and a gate of the same size,
``Gate(limit=SIZE, parent=tenant.gate)``:

- Every transaction holds the pool's gate, taken with ``acquire()``, for as
  long as it holds a connection, and gives the connection back to the pool
  before it lets go of the gate. So the gate admits a transaction only when a
  connection is free: ``pool.acquire()`` never waits, and whoever waits, waits
  in the gate, where a close can refuse them.
- The pool's gate is a child of the tenant's: closing the tenant closes it,
  with the same grace, and the tenant's close returns once its transactions
  have ended. Only then is the pool closed: nothing is using it.
- A transaction that may be cut short (a report, a long query) holds the gate
  cancellably: once the grace is over, its block is cancelled, asyncpg asks
  the server to cancel the query, the transaction is rolled back, and the
  connection goes back to the pool, usable.

The run checks that the transactions in flight at the close committed before
the pool closed, that a transaction waiting for a connection was refused at
once with ``GateClosed``, as was one started after the close, and that the
grace cancelled a ``pg_sleep(30)`` on the server too (``pg_stat_activity``
shows its backend idle), leaving every connection idle in the pool and
answering queries.

asyncpg runs on asyncio only: so does this example, on asyncio's own event
loop or on uvloop's, not on trio. It needs a server it may create a table in::

    python examples/postgres_pool.py --dsn postgresql://postgres@127.0.0.1:5432/postgres \\
        [--backend asyncio|uvloop]

tests/test_postgres.py runs it against a server of its own (``make postgres``).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import asyncpg

from anygate import Gate, GateClosed

SIZE = 2
GRACE = 0.5
TABLE = "anygate_postgres_pool_demo"


class TenantDatabase:
    """A tenant's connections: at most ``size`` transactions at once, each with its own."""

    def __init__(self, tenant: Tenant, pool: Any, size: int) -> None:
        # The gate's limit is the pool's size: a transaction the gate admits
        # finds a connection free in the pool.
        self.gate = Gate(f"pool {tenant.name}", parent=tenant.gate, limit=size, warn_after=None)
        self.pool = pool
        self.size = size

    @classmethod
    async def open(cls, tenant: Tenant, dsn: str, size: int = SIZE) -> TenantDatabase:
        pool = await asyncpg.create_pool(dsn, min_size=size, max_size=size)
        return cls(tenant, pool, size)

    @asynccontextmanager
    async def transaction(
        self, name: str, *, cancellable: bool = False
    ) -> AsyncIterator[Any]:  # asyncpg.Connection
        """A connection in a transaction, committed if the block ends normally.

        Waits for a free connection in the gate, first come, first served.
        With ``cancellable=True``, the block is cancelled once a close's grace
        is over; the transaction is then rolled back.

        :raises GateClosed: if the tenant or the pool is closing, or closes
            while this waits for a connection
        """
        async with self.gate.acquire(name, cancellable=cancellable):
            connection = await self.pool.acquire()  # never waits: the gate counted for us
            try:
                transaction = connection.transaction()
                await transaction.start()
                try:
                    yield connection
                except BaseException:
                    # Shielded: the block may end in a cancellation, which must
                    # not cut the rollback short.
                    with anyio.CancelScope(shield=True):
                        await transaction.rollback()
                    raise
                await transaction.commit()
            finally:
                # Back in the pool before the gate lets the next one in.
                with anyio.CancelScope(shield=True):
                    await self.pool.release(connection)

    async def close(self) -> None:
        """Close the pool once its gate has drained: nothing is using it then."""
        await self.gate.close()
        await self.pool.close()


class Tenant:
    def __init__(self, name: str) -> None:
        self.name = name
        self.gate = Gate(f"tenant {name}", warn_after=None)

    def begin_shutdown(self, grace: float) -> None:
        """Refuse new work at once, the tenant's and its pool's; the grace counts from now."""
        self.gate.close_nowait(grace=grace)

    async def drain(self) -> None:
        """Wait for the work in flight, the pool's transactions included."""
        await self.gate.close()


async def main(dsn: str) -> int:
    setup = await asyncpg.connect(dsn)
    try:
        await setup.execute(f"DROP TABLE IF EXISTS {TABLE}")
        await setup.execute(f"CREATE TABLE {TABLE} (note text NOT NULL)")
    finally:
        await setup.close()

    tenant = Tenant("t1")
    db = await TenantDatabase.open(tenant, dsn)
    committed: list[str] = []
    refused: list[str] = []
    cancelled: list[str] = []
    sleeper_pid: list[int] = []
    writing, sleeping, finish_write = anyio.Event(), anyio.Event(), anyio.Event()
    waiter_refused = anyio.Event()

    async def write(note: str) -> None:
        async with db.transaction(f"insert {note}") as conn:
            await conn.execute(f"INSERT INTO {TABLE} VALUES ($1)", note)
            writing.set()
            await finish_write.wait()  # still in flight when the close begins
        committed.append(note)

    async def report() -> None:
        async with db.transaction("report", cancellable=True) as conn:
            sleeper_pid.append(conn.get_server_pid())
            sleeping.set()
            try:
                await conn.fetchval("SELECT pg_sleep(30)")
            except anyio.get_cancelled_exc_class():
                cancelled.append("report")
                raise

    async def wait_for_connection(note: str) -> None:
        try:
            async with db.transaction(f"insert {note}") as conn:
                await conn.execute(f"INSERT INTO {TABLE} VALUES ($1)", note)
        except GateClosed as exc:
            print(f"waiting for a connection: {exc}")
            refused.append(note)
            waiter_refused.set()

    async with anyio.create_task_group() as tg:
        tg.start_soon(write, "in flight")
        await writing.wait()
        tg.start_soon(report)
        await sleeping.wait()
        assert db.gate.count == SIZE
        assert db.pool.get_idle_size() == 0
        tg.start_soon(wait_for_connection, "waiting")
        await anyio.wait_all_tasks_blocked()

        started = time.monotonic()
        tenant.begin_shutdown(GRACE)  # closes the pool's gate too
        with anyio.fail_after(GRACE / 2):
            await waiter_refused.wait()  # refused at once, not after the grace
        refused_after = time.monotonic() - started
        try:
            async with db.transaction("insert late") as conn:
                await conn.execute(f"INSERT INTO {TABLE} VALUES ('late')")
        except GateClosed as exc:
            print(f"started after the close: {exc}")
            refused.append("late")
        finish_write.set()  # the writer commits; the report runs until the grace is over
        await tenant.drain()
    drain_time = time.monotonic() - started

    # The pool's gate has drained: its connections are all back, and the
    # server has ended the cancelled pg_sleep.
    check = await asyncpg.connect(dsn)
    try:
        state = await check.fetchval(
            "SELECT state FROM pg_stat_activity WHERE pid = $1", sleeper_pid[0]
        )
        sleeping_on_server = await check.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE state = 'active'"
            " AND query LIKE '%pg_sleep(30)%' AND pid <> pg_backend_pid()"
        )
        idle = db.pool.get_idle_size()
        pids: list[int] = []
        all_taken = anyio.Event()

        async def use_one() -> None:
            # Straight from the pool: its gate is closed, as the tenant is shutting down.
            async with db.pool.acquire() as conn:
                pids.append(await conn.fetchval("SELECT pg_backend_pid()"))
                if len(pids) == SIZE:
                    all_taken.set()
                await all_taken.wait()  # each its own connection

        async with anyio.create_task_group() as tg:
            for _ in range(SIZE):
                tg.start_soon(use_one)
        await db.close()
        rows = [r["note"] for r in await check.fetch(f"SELECT note FROM {TABLE} ORDER BY note")]
        await check.execute(f"DROP TABLE {TABLE}")
    finally:
        await check.close()

    print(f"in flight at the close: committed {committed}, cancelled after the grace {cancelled}")
    print(f"refused: {refused}; the waiter after {refused_after:.3f}s")
    print(f"drained in {drain_time:.2f}s (grace {GRACE}s); rows in the table: {rows}")
    print(
        f"pg_sleep(30)'s backend on the server: {state}; "
        f"pg_sleep(30) queries still active: {sleeping_on_server}"
    )
    reused = sleeper_pid[0] in pids
    print(
        f"pool: {idle} of {SIZE} connections idle, all answering; pg_sleep's among them: {reused}"
    )
    ok = (
        committed == ["in flight"]
        and cancelled == ["report"]
        and refused == ["waiting", "late"]
        and rows == ["in flight"]
        and drain_time < 10
        and state == "idle"
        and sleeping_on_server == 0
        and idle == SIZE
        and reused
        and db.pool.is_closing()
    )
    print("shutdown complete" if ok else "UNEXPECTED OUTCOME")
    return 0 if ok else 1


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dsn", required=True, help="postgresql://user@host:port/database")
    parser.add_argument("--backend", choices=["asyncio", "uvloop"], default="asyncio")
    args = parser.parse_args()
    options = {"use_uvloop": args.backend == "uvloop"}
    sys.exit(anyio.run(main, args.dsn, backend="asyncio", backend_options=options))
