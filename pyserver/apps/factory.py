"""From the `app_store` setting to an open store: the URL forms, the driver, the seeding.

URL forms (docs/apps.md):
- `config`: the `[[apps]]` of the configuration, read-only.
- `sqlite:///relative/path.db`, `sqlite:////absolute/path.db` (SQLAlchemy's convention:
  the path is what follows the third slash).
- `postgresql://user:password@host:5432/database` (also `postgres://`; asyncpg reads the
  rest, e.g. `?sslmode=require`).
- `mysql://user:password@host:3306/database` (also `mariadb://`; `?unix_socket=/path`).

Invariants:
- A store is made without I/O; `open_app_store` connects, creates or migrates the schema and
  seeds it. A URL whose driver is not installed fails at once with DriverMissing, which names
  the extra to install.
- Seeding takes the configuration's apps unless they are only the built-in default app
  (`app-id`/`app-key`/`app-secret`), whose well-known secret must never reach a database.
"""

from __future__ import annotations

from collections.abc import Sequence
from urllib.parse import urlsplit

from pyserver.apps.drivers import MysqlDriver, PostgresDriver, SqliteDriver
from pyserver.apps.errors import InvalidStoreUrl
from pyserver.apps.sql import SqlAppStore
from pyserver.apps.store import AppStore, ConfigStore
from pyserver.config import AppConfig, Settings

BUILT_IN_APP = AppConfig(id="app-id", key="app-key", secret="app-secret")


def store_for_url(url: str, config_apps: Sequence[AppConfig] = ()) -> AppStore:
    """The store `url` names, not yet open; `config_apps` are what `config` serves."""
    if url == "config":
        return ConfigStore(config_apps)
    scheme = urlsplit(url).scheme
    if scheme == "sqlite":
        prefix = "sqlite:///"
        path = url[len(prefix) :] if url.startswith(prefix) else ""
        if not path or "?" in path:
            raise InvalidStoreUrl(
                f"app_store {url}: use sqlite:///relative/path.db or sqlite:////absolute/path.db"
            )
        return SqlAppStore(SqliteDriver(path))
    if scheme in ("postgresql", "postgres"):
        return SqlAppStore(PostgresDriver(url))
    if scheme in ("mysql", "mariadb"):
        return SqlAppStore(MysqlDriver(url))
    raise InvalidStoreUrl(
        'app_store: use "config" or a sqlite:///, postgresql:// or mysql:// URL '
        f"(got {scheme or url!r})"
    )


def store_for(settings: Settings) -> AppStore:
    return store_for_url(settings.app_store, settings.apps)


def seed_apps(settings: Settings) -> list[AppConfig]:
    """The apps that may seed an empty database store: the configured ones, unless the
    configuration has only the built-in default app."""
    if settings.apps == [BUILT_IN_APP]:
        return []
    return list(settings.apps)


async def open_app_store(settings: Settings) -> AppStore:
    """The configured store, open, its schema current and, if it never had an app, seeded."""
    store = store_for(settings)
    await store.open()
    try:
        await store.seed(seed_apps(settings))
    except BaseException:
        await store.close()
        raise
    return store
