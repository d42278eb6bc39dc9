"""Fixtures of the app store tests: one real PostgreSQL and one real MariaDB per session
(tests/dbproc.py), a fresh database (or SQLite file) per test.

`store_url` is parametrised over the three database stores, so a test that takes it runs
once per store; `make_store` opens a store on that URL and closes it after the test.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import TypeVar

import pytest

from pyserver.apps import AppStore, store_for_url
from tests.dbproc import MariadbProcess, PostgresProcess

T = TypeVar("T")

STORES = ("sqlite", "postgresql", "mariadb")

_servers: dict[str, PostgresProcess | MariadbProcess] = {}


def database_server(kind: str) -> PostgresProcess | MariadbProcess:
    """The session's server of this kind, started on first use."""
    if kind not in _servers:
        _servers[kind] = PostgresProcess() if kind == "postgresql" else MariadbProcess()
    return _servers[kind]


def pytest_sessionfinish(session: pytest.Session) -> None:
    for server in _servers.values():
        server.destroy()
    _servers.clear()


def fresh_url(kind: str, tmp_path: Path) -> str:
    if kind == "sqlite":
        return f"sqlite:///{tmp_path / 'apps.db'}"
    return database_server(kind).create_database()


@pytest.fixture(params=STORES)
def store_kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def store_url(store_kind: str, tmp_path: Path) -> Iterator[str]:
    url = fresh_url(store_kind, tmp_path)
    yield url
    if store_kind != "sqlite":
        database_server(store_kind).drop_database(url)


def with_store(url: str, scenario: Callable[[AppStore], Awaitable[T]]) -> T:
    """Run `scenario` on an open store on `url` in a new event loop; close the store after."""

    async def main() -> T:
        store = store_for_url(url)
        await store.open()
        try:
            return await scenario(store)
        finally:
            await store.close()

    return asyncio.run(main())
