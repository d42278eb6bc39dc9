"""The PostgreSQL driver on a real PostgreSQL: whatever asyncpg raises when the database goes
away in the middle of a query comes out as `StoreUnavailable` (so the server's /ready says
503 and its refresh retries), and the store works again once the database is back."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest

from pyserver.apps import AppStore
from pyserver.apps.drivers import Driver
from pyserver.apps.errors import StoreUnavailable
from pyserver.apps.sql import SqlAppStore
from pyserver.config import AppConfig
from tests.apps.conftest import database_server, fresh_url, with_store
from tests.dbproc import PostgresProcess


@pytest.fixture
def server() -> PostgresProcess:
    found = database_server("postgresql")
    assert isinstance(found, PostgresProcess)
    return found


@pytest.fixture
def pg_url(server: PostgresProcess, tmp_path: Path) -> Iterator[str]:
    url = fresh_url("postgresql", tmp_path)
    yield url
    server.drop_database(url)


def _driver(store: AppStore) -> Driver:
    assert isinstance(store, SqlAppStore)
    return store.driver


def test_a_server_stopped_mid_query_is_unavailable_and_used_again_when_back(
    server: PostgresProcess, pg_url: str
) -> None:
    async def scenario(store: AppStore) -> None:
        await store.add(AppConfig(id="1", key="key-1", secret="secret-1"))
        driver = _driver(store)

        async def long_query() -> None:
            async with driver.session() as session:
                await session.fetch("SELECT pg_sleep(30)")

        query = asyncio.create_task(long_query())
        # Stop the server once the query runs on it (seen from a connection of its own).
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 10
        while not await loop.run_in_executor(None, _sleeping, server):
            assert loop.time() < deadline, "the query never started"
            await asyncio.sleep(0.05)
        await loop.run_in_executor(None, server.stop)
        try:
            with pytest.raises(StoreUnavailable, match="is unavailable"):
                await asyncio.wait_for(query, 30)
        finally:
            await loop.run_in_executor(None, server.start)
        assert await store.get_by_key("key-1") is not None

    with_store(pg_url, scenario)


def _sleeping(server: PostgresProcess) -> bool:
    """Whether a `pg_sleep` query runs on the server now (other than this question)."""
    found = server._run(
        "SELECT count(*) FROM pg_stat_activity "
        "WHERE query = 'SELECT pg_sleep(30)' AND pid <> pg_backend_pid()"
    )
    return found not in ("", "0")


def test_asyncpgs_internal_client_error_is_unavailable_too(pg_url: str) -> None:
    """asyncpg raises `InternalClientError` (no subclass of its connection or server errors)
    when its protocol meets a state it did not expect, as once when PostgreSQL stopped in the
    middle of a query; that cannot be brought about on demand, so the statement in the
    session raises it here, on a real connection of the real driver."""

    async def scenario(store: AppStore) -> None:
        driver = _driver(store)
        with pytest.raises(StoreUnavailable, match="is unavailable: waiter is not done"):
            async with driver.session():
                raise asyncpg.InternalClientError(
                    "waiter is not done while handling critical protocol error"
                )
        async with driver.session() as session:
            assert await session.fetch("SELECT 1") == [(1,)]

    with_store(pg_url, scenario)
