"""The app store on a SQL database (SQLite, PostgreSQL, MySQL/MariaDB), written once.

Invariants (beyond `AppStore`'s):
- Every write is one transaction that first increments the change counter
  (`pyserver_app_revision`), which takes its row lock: writers from every node and every
  `pyserver apps` run are serialised, commit in revision order, and their uniqueness checks
  cannot race. A write that fails rolls back, counter included.
- Reads run outside transactions, one statement each: `get_by_key` is one query, and
  `changes(cursor)` is one query when nothing changed (three otherwise: the counter, the
  removals, then the rows, in that order, so every removal or row committed after the
  counter was read comes again in the next call).
"""

from __future__ import annotations

import dataclasses
import logging
import secrets
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from pyserver.apps.drivers import Driver, Session, UniqueViolation
from pyserver.apps.errors import DuplicateApp, InvalidApp, UnknownApp
from pyserver.apps.records import (
    MAX_COLUMN_BYTES,
    ChangeSet,
    Row,
    StoredApp,
    apply_changes,
    dump_options,
    explicit_options,
    parse_row,
    revalidate,
)
from pyserver.apps.schema import ensure_schema
from pyserver.apps.store import AppStore
from pyserver.config import AppConfig

log = logging.getLogger("pyserver.apps")

MAX_GRACE = 86_400.0
"""The longest grace period of a rotation, in seconds: a day, as `secret_rotation_grace`
allows (a longer one would also be a time past what the clock functions can show)."""

_SELECT = (
    'SELECT id, "key", secret, enabled, options, revision, updated_at, previous_secret, '
    "previous_secret_expires_at FROM pyserver_apps"
)


def generate_secret() -> str:
    """A new random secret: 32 hex digits (128 bits)."""
    return secrets.token_hex(16)


class SqlAppStore(AppStore):
    def __init__(self, driver: Driver, clock: Callable[[], float] = time.time) -> None:
        self.driver = driver
        self.description = driver.description
        self.clock = clock
        """Where write times and secret expiries come from (tests move it)."""

    @property
    def queries(self) -> int:
        return self.driver.queries

    async def open(self) -> None:
        await self.driver.connect()
        try:
            await ensure_schema(self.driver)
        except BaseException:
            await self.driver.close()
            raise

    async def close(self) -> None:
        await self.driver.close()

    # --- reads -------------------------------------------------------------------------------

    async def _select(self, where: str = "", *args: Any) -> list[Row]:
        async with self.driver.session() as session:
            return await _rows(session, where, *args)

    async def list_apps(self) -> list[StoredApp]:
        return _parsed(await self._select("ORDER BY id"))

    async def get(self, app_id: str) -> StoredApp | None:
        found = _parsed(await self._select("WHERE id = ?", app_id))
        return found[0] if found else None

    async def get_by_key(self, key: str) -> StoredApp | None:
        found = _parsed(await self._select('WHERE "key" = ?', key))
        return found[0] if found else None

    async def cursor(self) -> int:
        async with self.driver.session() as session:
            return await _counter(session)

    async def changes(self, since: int | None) -> ChangeSet:
        async with self.driver.session() as session:
            cursor = await _counter(session)
            if since == cursor:
                return ChangeSet(cursor=cursor, full=False)
            if since is None or since > cursor:  # a first read, or a recreated database
                rows = await _rows(session, "ORDER BY id")
                apps = _parsed(rows)
                return ChangeSet(
                    cursor=cursor, full=True, apps=tuple(apps), skipped=_ids_missing(rows, apps)
                )
            removed = await session.fetch(
                "SELECT id FROM pyserver_app_removals WHERE revision > ? ORDER BY id", since
            )
            rows = await _rows(session, "WHERE revision > ? ORDER BY id", since)
        apps = _parsed(rows)
        return ChangeSet(
            cursor=cursor,
            full=False,
            apps=tuple(apps),
            removed=tuple(str(row[0]) for row in removed),
            skipped=_ids_missing(rows, apps),
        )

    # --- writes ------------------------------------------------------------------------------

    async def add(self, app: AppConfig) -> StoredApp:
        app = revalidate(app)
        try:
            async with self.driver.transaction() as session:
                revision = await _next_revision(session)
                await _refuse_duplicates(session, app.id, app.key)
                return await self._insert(session, app, revision)
        except UniqueViolation:  # a row written by hand, without taking the counter's lock
            raise DuplicateApp(
                f"the id {app.id!r} or the key {app.key!r} is already used"
            ) from None

    async def _insert(self, session: Session, app: AppConfig, revision: int) -> StoredApp:
        now = self.clock()
        options = explicit_options(app)
        await session.execute(
            'INSERT INTO pyserver_apps (id, "key", secret, enabled, options, revision, '
            "updated_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
            app.id,
            app.key,
            app.secret,
            app.enabled,
            dump_options(options),
            revision,
            now,
        )
        await session.execute("DELETE FROM pyserver_app_removals WHERE id = ?", app.id)
        return StoredApp(config=app, options=options, revision=revision, updated_at=now)

    async def update(
        self, app_id: str, changes: Mapping[str, Any], reset: Sequence[str] = ()
    ) -> StoredApp:
        try:
            async with self.driver.transaction() as session:
                revision = await _next_revision(session)
                row = await _row(session, app_id)
                config, options = apply_changes(row, changes, reset)
                if config.key != row.key:
                    await _refuse_duplicates(session, None, config.key)
                now = self.clock()
                await session.execute(
                    'UPDATE pyserver_apps SET "key" = ?, enabled = ?, options = ?, revision = ?, '
                    "updated_at = ? WHERE id = ?",
                    config.key,
                    config.enabled,
                    dump_options(options),
                    revision,
                    now,
                    app_id,
                )
                return StoredApp(
                    config=config,
                    options=options,
                    revision=revision,
                    updated_at=now,
                    previous_secret=row.previous_secret,
                    previous_secret_expires_at=row.previous_secret_expires_at,
                )
        except UniqueViolation:
            raise DuplicateApp(f"the key {changes.get('key')!r} is already used") from None

    async def remove(self, app_id: str) -> None:
        async with self.driver.transaction() as session:
            revision = await _next_revision(session)
            if not await session.execute("DELETE FROM pyserver_apps WHERE id = ?", app_id):
                raise UnknownApp(app_id)
            await session.execute("DELETE FROM pyserver_app_removals WHERE id = ?", app_id)
            await session.execute(
                "INSERT INTO pyserver_app_removals (id, revision) VALUES (?, ?)", app_id, revision
            )

    async def rotate_secret(
        self, app_id: str, new_secret: str | None, grace: float
    ) -> tuple[StoredApp, str]:
        secret = generate_secret() if new_secret is None else new_secret
        if not secret or len(secret.encode()) > MAX_COLUMN_BYTES:
            raise InvalidApp(f"secret: from 1 to {MAX_COLUMN_BYTES} bytes")
        if not 0 <= grace <= MAX_GRACE:  # NaN too
            raise InvalidApp(f"grace: seconds, from 0 to {MAX_GRACE:g}")
        async with self.driver.transaction() as session:
            revision = await _next_revision(session)
            row = await _row(session, app_id)
            if secret == row.secret:
                raise InvalidApp("secret: the new secret is the current one")
            now = self.clock()
            previous, expires = (row.secret, now + grace) if grace > 0 else (None, None)
            await session.execute(
                "UPDATE pyserver_apps SET secret = ?, previous_secret = ?, "
                "previous_secret_expires_at = ?, revision = ?, updated_at = ? WHERE id = ?",
                secret,
                previous,
                expires,
                revision,
                now,
                app_id,
            )
        rotated = dataclasses.replace(
            row,
            secret=secret,
            previous_secret=previous,
            previous_secret_expires_at=expires,
            revision=revision,
            updated_at=now,
        )
        stored = parse_row(rotated)
        if stored is None:  # logged by parse_row; the rotation itself is done
            raise InvalidApp(
                f"the secret of {app_id!r} was rotated, but its other options no longer "
                "validate: fix them with `pyserver apps set`"
            )
        return stored, secret

    async def seed(self, apps: Sequence[AppConfig]) -> int:
        if not apps:
            return 0
        valid = [revalidate(app) for app in apps]
        try:
            async with self.driver.transaction() as session:
                revision = await _next_revision(session)
                count = await session.fetch("SELECT COUNT(*) FROM pyserver_apps")
                if revision != 1 or int(count[0][0]) > 0:
                    raise _NotEmpty  # rolls the counter back
                for app in valid:
                    await self._insert(session, app, revision)
        except _NotEmpty:
            return 0
        log.info(
            "app store: seeded %s with the %d app(s) of the configuration, as it had never had "
            "an app (this happens once; from now on manage apps with `pyserver apps`)",
            self.description,
            len(valid),
        )
        return len(valid)


class _NotEmpty(Exception):
    """The store has, or once had, apps: seeding is not for it."""


async def _counter(session: Session) -> int:
    rows = await session.fetch("SELECT revision FROM pyserver_app_revision WHERE id = 1")
    return int(rows[0][0])


async def _next_revision(session: Session) -> int:
    """Increment the change counter, taking its row lock until the transaction ends."""
    await session.execute("UPDATE pyserver_app_revision SET revision = revision + 1 WHERE id = 1")
    return await _counter(session)


async def _rows(session: Session, where: str, *args: Any) -> list[Row]:
    return [Row(*values) for values in await session.fetch(f"{_SELECT} {where}", *args)]


async def _row(session: Session, app_id: str) -> Row:
    rows = await _rows(session, "WHERE id = ?", app_id)
    if not rows:
        raise UnknownApp(app_id)
    return rows[0]


async def _refuse_duplicates(session: Session, app_id: str | None, key: str) -> None:
    rows = await session.fetch(
        'SELECT id, "key" FROM pyserver_apps WHERE id = ? OR "key" = ?', app_id, key
    )
    for other_id, other_key in rows:
        if app_id is not None and other_id == app_id:
            raise DuplicateApp.of_id(app_id)
        if other_key == key:
            raise DuplicateApp.of_key(key, str(other_id))


def _parsed(rows: Sequence[Row]) -> list[StoredApp]:
    """The rows that validate, by id in code point order (whatever the database's collation)."""
    apps = [app for app in map(parse_row, rows) if app is not None]
    apps.sort(key=lambda app: app.id)
    return apps


def _ids_missing(rows: Sequence[Row], apps: Sequence[StoredApp]) -> tuple[str, ...]:
    valid = {app.id for app in apps}
    return tuple(row.id for row in rows if row.id not in valid)
