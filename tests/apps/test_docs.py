"""docs/apps.md shows the schema as the code creates it, and a database set up by hand from
those statements is one pyserver uses as it is (for operators who create tables themselves)."""

from __future__ import annotations

import asyncio
import re
import sqlite3
from pathlib import Path
from urllib.parse import urlsplit

from pyserver.apps import AppStore
from pyserver.apps.schema import _VERSION_TABLE, CURRENT_VERSION, MIGRATIONS
from pyserver.config import AppConfig
from tests.apps.conftest import with_store

DOC = Path(__file__).resolve().parents[2] / "docs" / "apps.md"
DIALECTS = ("postgresql", "mysql", "sqlite")
"""The order of the ```sql blocks in docs/apps.md."""


def _normal(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip()


def documented_sql() -> dict[str, str]:
    blocks = re.findall(r"```sql\n(.*?)```", DOC.read_text(), re.S)
    assert len(blocks) == len(DIALECTS)
    return dict(zip(DIALECTS, blocks, strict=True))


def test_the_documented_schema_is_the_current_one() -> None:
    assert CURRENT_VERSION == 1, "document the new migration in docs/apps.md"
    for dialect, block in documented_sql().items():
        for statement in [*MIGRATIONS[0].statements[dialect], _VERSION_TABLE]:
            if dialect == "mysql":  # shown for the mysql client, without ANSI_QUOTES
                statement = statement.replace('"key"', "`key`")
            assert _normal(statement + ";") in _normal(block), (dialect, statement)


def _create_by_hand(store_kind: str, url: str, block: str) -> None:
    statements = [s for s in block.split(";\n") if s.strip()]
    if store_kind == "sqlite":
        with sqlite3.connect(url.removeprefix("sqlite:///")) as conn:
            for statement in statements:
                conn.execute(statement)
    elif store_kind == "postgresql":
        import asyncpg

        async def run() -> None:
            conn = await asyncpg.connect(url)
            try:
                for statement in statements:
                    await conn.execute(statement)
            finally:
                await conn.close()

        asyncio.run(run())
    else:
        import pymysql

        parts = urlsplit(url)
        conn = pymysql.connect(
            host=parts.hostname,
            port=parts.port,
            user=parts.username,
            password=parts.password,
            database=parts.path.lstrip("/"),
        )
        try:
            with conn.cursor() as cursor:
                for statement in statements:
                    cursor.execute(statement)
            conn.commit()
        finally:
            conn.close()


def test_a_schema_created_from_the_docs_is_used_as_it_is(store_url: str, store_kind: str) -> None:
    dialect = "mysql" if store_kind == "mariadb" else store_kind
    _create_by_hand(store_kind, store_url, documented_sql()[dialect])

    async def scenario(store: AppStore) -> None:
        await store.add(AppConfig(id="1", key="k", secret="s", max_connections=3))
        found = await store.get_by_key("k")
        assert found is not None and found.config.max_connections == 3
        assert (await store.changes(0)).cursor == 1

    with_store(store_url, scenario)
