"""examples/postgres_pool.py against a real PostgreSQL server.

The server is started once for the session by tests/postgres_server.py, on a
temporary data directory and a free port, and stopped by its PID at the end.
Its binaries come from ``make postgres``, which ``make test`` runs first. These
tests are never skipped: without a server they fail, saying what is missing.

asyncpg runs on asyncio only: the tests run on asyncio and on uvloop, not trio.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import anyio
import asyncpg
import pytest

import postgres_server
from anygate import GateClosed

EXAMPLE = Path(__file__).parent.parent / "examples" / "postgres_pool.py"


def load_example() -> ModuleType:
    spec = importlib.util.spec_from_file_location("postgres_pool", EXAMPLE)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


example = load_example()


@pytest.fixture(scope="session")
def postgres() -> Iterator[postgres_server.Server]:
    try:
        server = postgres_server.start()
    except postgres_server.NoServer as exc:
        pytest.fail(f"no PostgreSQL server for the tests: {exc}", pytrace=False)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(
    params=[
        pytest.param(("asyncio", {}), id="asyncio"),
        pytest.param(("asyncio", {"use_uvloop": True}), id="asyncio+uvloop"),
    ]
)
def anyio_backend(request: pytest.FixtureRequest) -> tuple[str, dict[str, Any]]:
    backend: tuple[str, dict[str, Any]] = request.param
    return backend


@pytest.mark.parametrize("backend", ["asyncio", "uvloop"])
def test_example(postgres: postgres_server.Server, backend: str) -> None:
    result = subprocess.run(
        [sys.executable, str(EXAMPLE), "--dsn", postgres.dsn, "--backend", backend],
        capture_output=True,
        text=True,
        timeout=60,
    )
    out = result.stdout
    assert result.returncode == 0, out + result.stderr
    assert "committed ['in flight'], cancelled after the grace ['report']" in out
    assert "refused: ['waiting', 'late']" in out
    assert "waiting for a connection: gate 'pool t1' is closed" in out
    assert "rows in the table: ['in flight']" in out
    assert "backend on the server: idle; pg_sleep(30) queries still active: 0" in out
    assert "2 of 2 connections idle, all answering; pg_sleep's among them: True" in out
    assert "shutdown complete" in out


async def open_db(dsn: str, size: int) -> tuple[Any, Any]:
    tenant = example.Tenant("t")
    return tenant, await example.TenantDatabase.open(tenant, dsn, size)


@pytest.mark.anyio
async def test_in_flight_commit_and_refusals(postgres: postgres_server.Server) -> None:
    """A pool of one: the holder commits; the waiter and a late one are refused at once."""
    conn = await asyncpg.connect(postgres.dsn)
    try:
        await conn.execute("DROP TABLE IF EXISTS pg_test_notes")
        await conn.execute("CREATE TABLE pg_test_notes (note text)")
        tenant, db = await open_db(postgres.dsn, 1)
        holding, finish = anyio.Event(), anyio.Event()
        refused: list[str] = []

        async def hold() -> None:
            async with db.transaction("holder") as c:
                await c.execute("INSERT INTO pg_test_notes VALUES ('holder')")
                holding.set()
                await finish.wait()

        async def wait() -> None:
            try:
                async with db.transaction("waiter") as c:
                    await c.execute("INSERT INTO pg_test_notes VALUES ('waiter')")
            except GateClosed as exc:
                refused.append(str(exc))

        async with anyio.create_task_group() as tg:
            tg.start_soon(hold)
            await holding.wait()
            tg.start_soon(wait)
            await anyio.wait_all_tasks_blocked()
            assert db.gate.count == 1
            assert refused == []
            tenant.begin_shutdown(grace=None)
            await anyio.wait_all_tasks_blocked()
            # At once, while the holder still holds; the refusal names the tenant's close.
            assert refused == ["gate 'pool t' is closed: its parent 'tenant t' is closing"]
            with pytest.raises(GateClosed):
                async with db.transaction("late"):
                    pytest.fail("admitted after the close")
            # Not committed yet: invisible to another connection.
            assert await conn.fetchval("SELECT count(*) FROM pg_test_notes") == 0
            finish.set()
            await tenant.drain()
        assert db.pool.get_idle_size() == 1
        await db.close()
        assert db.pool.is_closing()
        notes = await conn.fetch("SELECT note FROM pg_test_notes")
        assert [r["note"] for r in notes] == ["holder"]
    finally:
        await conn.execute("DROP TABLE IF EXISTS pg_test_notes")
        await conn.close()


@pytest.mark.anyio
async def test_grace_cancels_the_query_on_the_server(postgres: postgres_server.Server) -> None:
    """pg_sleep(30) in a cancellable block ends at the grace, on the server too."""
    tenant, db = await open_db(postgres.dsn, 1)
    sleeping = anyio.Event()
    pids: list[int] = []
    cancelled: list[bool] = []

    async def report() -> None:
        async with db.transaction("report", cancellable=True) as c:
            pids.append(c.get_server_pid())
            sleeping.set()
            try:
                await c.fetchval("SELECT pg_sleep(30)")
            except anyio.get_cancelled_exc_class():
                cancelled.append(True)
                raise

    check = await asyncpg.connect(postgres.dsn)
    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(report)
            await sleeping.wait()
            started = time.monotonic()
            await tenant.gate.close(grace=0.2)
            drained = time.monotonic() - started
        assert cancelled == [True]
        assert 0.2 <= drained < 10  # the grace, not the 30 s of the query
        state = await check.fetchval("SELECT state FROM pg_stat_activity WHERE pid = $1", pids[0])
        assert state == "idle"
        # The same connection, back in the pool, outside any transaction, and usable.
        async with db.pool.acquire() as c:
            assert c.get_server_pid() == pids[0]
            assert not c.is_in_transaction()
            assert await c.fetchval("SELECT 1") == 1
        await db.close()
    finally:
        await check.close()


def test_no_server_fails_saying_what_is_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ANYGATE_POSTGRES_BIN", "/nonexistent/bin")
    with pytest.raises(postgres_server.NoServer, match=r"make postgres"):
        postgres_server.start()
