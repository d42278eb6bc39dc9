"""The tables of a database app store, per dialect, and the migrations that create them.

Tables (docs/apps.md shows the DDL of each database):
- `pyserver_apps`: one row per app. Real columns for id, key, secret, enabled, the previous
  secret and its expiry, the revision of the last change and its time; every other
  `[[apps]]` option in the JSON document `options`.
- `pyserver_app_removals`: the id and revision of each removed app, so that a node asking
  "what changed since N" learns about removals (deleted when the id is added again).
- `pyserver_app_revision`: one row, the change counter. Every write increments it first, in
  its own transaction; the row lock serialises writers, so revisions commit in order.
- `pyserver_schema_version`: one row, the schema version of the database.

Invariants:
- `ensure_schema` runs under the store's schema lock, so nodes starting together migrate
  once; it applies every migration above the database's version, in order, and records each.
  On PostgreSQL and SQLite all of it is one transaction. MySQL commits each DDL statement
  implicitly, so MySQL statements are written to be safe to run again (IF NOT EXISTS,
  INSERT IGNORE) and a migration interrupted half-way completes on the next start.
- A database whose version is above `CURRENT_VERSION` is refused (SchemaTooNew): an older
  pyserver never writes a schema it does not know.
- Migrations are append-only: a released one is never edited; a change adds the next.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from pyserver.apps.drivers import Driver, Session
from pyserver.apps.errors import SchemaTooNew

log = logging.getLogger("pyserver.apps")


@dataclass(frozen=True)
class Migration:
    version: int
    summary: str
    statements: Mapping[str, Sequence[str]]
    """Per dialect ("sqlite", "postgresql", "mysql"), the statements to run in order."""


_V1_SQLITE = (
    """CREATE TABLE IF NOT EXISTS pyserver_apps (
    id TEXT NOT NULL PRIMARY KEY,
    "key" TEXT NOT NULL UNIQUE,
    secret TEXT NOT NULL,
    previous_secret TEXT,
    previous_secret_expires_at REAL,
    enabled INTEGER NOT NULL DEFAULT 1,
    options TEXT NOT NULL DEFAULT '{}',
    revision INTEGER NOT NULL,
    updated_at REAL NOT NULL
)""",
    "CREATE INDEX IF NOT EXISTS pyserver_apps_revision ON pyserver_apps (revision)",
    """CREATE TABLE IF NOT EXISTS pyserver_app_removals (
    id TEXT NOT NULL PRIMARY KEY,
    revision INTEGER NOT NULL
)""",
    "CREATE INDEX IF NOT EXISTS pyserver_app_removals_revision ON pyserver_app_removals (revision)",
    """CREATE TABLE IF NOT EXISTS pyserver_app_revision (
    id INTEGER NOT NULL PRIMARY KEY,
    revision INTEGER NOT NULL
)""",
    "INSERT INTO pyserver_app_revision (id, revision) VALUES (1, 0) ON CONFLICT DO NOTHING",
)

_V1_POSTGRESQL = (
    """CREATE TABLE IF NOT EXISTS pyserver_apps (
    id TEXT NOT NULL PRIMARY KEY,
    "key" TEXT NOT NULL UNIQUE,
    secret TEXT NOT NULL,
    previous_secret TEXT,
    previous_secret_expires_at DOUBLE PRECISION,
    enabled BOOLEAN NOT NULL DEFAULT TRUE,
    options JSONB NOT NULL DEFAULT '{}',
    revision BIGINT NOT NULL,
    updated_at DOUBLE PRECISION NOT NULL
)""",
    "CREATE INDEX IF NOT EXISTS pyserver_apps_revision ON pyserver_apps (revision)",
    """CREATE TABLE IF NOT EXISTS pyserver_app_removals (
    id TEXT NOT NULL PRIMARY KEY,
    revision BIGINT NOT NULL
)""",
    "CREATE INDEX IF NOT EXISTS pyserver_app_removals_revision ON pyserver_app_removals (revision)",
    """CREATE TABLE IF NOT EXISTS pyserver_app_revision (
    id INTEGER NOT NULL PRIMARY KEY,
    revision BIGINT NOT NULL
)""",
    "INSERT INTO pyserver_app_revision (id, revision) VALUES (1, 0) ON CONFLICT DO NOTHING",
)

# VARBINARY for id and key: compared byte for byte (MySQL's text collations ignore case, and
# MariaDB's ignore trailing spaces), so `App-Key` and `app-key` are two keys, as elsewhere.
_V1_MYSQL = (
    """CREATE TABLE IF NOT EXISTS pyserver_apps (
    id VARBINARY(255) NOT NULL PRIMARY KEY,
    "key" VARBINARY(255) NOT NULL,
    secret VARCHAR(255) CHARACTER SET utf8mb4 NOT NULL,
    previous_secret VARCHAR(255) CHARACTER SET utf8mb4 NULL,
    previous_secret_expires_at DOUBLE NULL,
    enabled BOOLEAN NOT NULL DEFAULT TRUE,
    options JSON NOT NULL,
    revision BIGINT NOT NULL,
    updated_at DOUBLE NOT NULL,
    UNIQUE KEY pyserver_apps_key ("key"),
    KEY pyserver_apps_revision (revision)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4""",
    """CREATE TABLE IF NOT EXISTS pyserver_app_removals (
    id VARBINARY(255) NOT NULL PRIMARY KEY,
    revision BIGINT NOT NULL,
    KEY pyserver_app_removals_revision (revision)
) ENGINE = InnoDB""",
    """CREATE TABLE IF NOT EXISTS pyserver_app_revision (
    id INTEGER NOT NULL PRIMARY KEY,
    revision BIGINT NOT NULL
) ENGINE = InnoDB""",
    "INSERT IGNORE INTO pyserver_app_revision (id, revision) VALUES (1, 0)",
)

MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        1,
        "apps, removals and the change counter",
        {"sqlite": _V1_SQLITE, "postgresql": _V1_POSTGRESQL, "mysql": _V1_MYSQL},
    ),
)
CURRENT_VERSION = MIGRATIONS[-1].version

_VERSION_TABLE = (
    "CREATE TABLE IF NOT EXISTS pyserver_schema_version ("
    "id INTEGER NOT NULL PRIMARY KEY, version INTEGER NOT NULL)"
)


async def schema_version(session: Session) -> int:
    """The database's schema version; 0 when it has none yet."""
    rows = await session.fetch("SELECT version FROM pyserver_schema_version WHERE id = 1")
    return int(rows[0][0]) if rows else 0


async def ensure_schema(
    driver: Driver, migrations: Sequence[Migration] = MIGRATIONS
) -> tuple[int, int]:
    """Create or migrate the schema to the last of `migrations`; (version before, after)."""
    target = migrations[-1].version
    async with driver.schema_lock() as session:
        await session.execute(_VERSION_TABLE)
        before = await schema_version(session)
        if before > target:
            raise SchemaTooNew(
                f"app store {driver.description} has schema version {before}, newer than "
                f"this pyserver knows ({target}): upgrade pyserver"
            )
        version = before
        for migration in migrations:
            if migration.version <= version:
                continue
            for statement in migration.statements[driver.dialect]:
                await session.execute(statement)
            if version == 0:
                await session.execute(
                    "INSERT INTO pyserver_schema_version (id, version) VALUES (1, ?)",
                    migration.version,
                )
            else:
                await session.execute(
                    "UPDATE pyserver_schema_version SET version = ? WHERE id = 1",
                    migration.version,
                )
            version = migration.version
    if before == 0:
        log.info("app store: created the schema (version %d) in %s", version, driver.description)
    elif before != version:
        log.info(
            "app store: migrated the schema of %s from version %d to %d",
            driver.description,
            before,
            version,
        )
    return before, version
