"""The `AppStore` interface, and the read-only store of the configuration's `[[apps]]`.

An app store is where a node reads its apps and where `pyserver apps` changes them. The
running server never awaits a store on the connection path: it keeps an in-memory directory
of the apps, filled with `changes(None)` at start-up and kept current with `changes(cursor)`
every `app_store_refresh` seconds (and when a change is announced on the bus).

Invariants of every store:
- Every method raises only `pyserver.apps.errors.AppStoreError` subclasses.
- Writes are validated by `AppConfig` before anything is written (`records.validate_app`);
  reads skip, with an error log line, an app whose row no longer validates.
- Every write advances the store's change cursor (a revision counter); `changes(since)`
  returns everything written after `since`, including removals, and costs one query when
  nothing changed. Cursors only grow, and writes become visible in cursor order.
- An app's id never changes; ids and keys are unique; a removed app's id and key may be
  reused by a later `add`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from types import TracebackType
from typing import Any

from pyserver.apps.errors import ReadOnlyStore
from pyserver.apps.records import ChangeSet, StoredApp, explicit_options
from pyserver.config import AppConfig


class AppStore(ABC):
    """Where apps are kept. Open it (`await store.open()` or `async with store`) before use."""

    description: str = ""
    """The store for log lines and messages: its URL without a password."""
    read_only: bool = False

    @property
    def queries(self) -> int:
        """Statements sent to the database since the store was made (for tests and metrics)."""
        return 0

    @abstractmethod
    async def open(self) -> None:
        """Connect, and create or migrate the schema; raises StoreUnavailable or SchemaTooNew."""

    @abstractmethod
    async def close(self) -> None:
        """Release connections; the store cannot be used afterwards."""

    async def __aenter__(self) -> AppStore:
        await self.open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    # --- reads -------------------------------------------------------------------------------

    @abstractmethod
    async def list_apps(self) -> list[StoredApp]:
        """Every app that validates, ordered by id."""

    @abstractmethod
    async def get(self, app_id: str) -> StoredApp | None:
        """The app with this id, or None (also when its row no longer validates)."""

    @abstractmethod
    async def get_by_key(self, key: str) -> StoredApp | None:
        """The app with this key, or None; one query on a database store."""

    @abstractmethod
    async def cursor(self) -> int:
        """The store's change counter now."""

    @abstractmethod
    async def changes(self, since: int | None) -> ChangeSet:
        """What was written after cursor `since`; everything (`full`) when `since` is None or
        is no cursor of this store (e.g. the database was recreated). Apply `removed` first,
        then `apps`, then remember `cursor`."""

    # --- writes ------------------------------------------------------------------------------

    @abstractmethod
    async def add(self, app: AppConfig) -> StoredApp:
        """Store a new app; DuplicateApp when its id or key is taken."""

    @abstractmethod
    async def update(
        self, app_id: str, changes: Mapping[str, Any], reset: Sequence[str] = ()
    ) -> StoredApp:
        """Set some fields (the key, `enabled` or options) and return options in `reset` to
        their defaults; the others keep their values. InvalidApp for an unknown option, a
        value AppConfig refuses, the id or the secret; DuplicateApp for a key in use."""

    async def set_enabled(self, app_id: str, enabled: bool) -> StoredApp:
        return await self.update(app_id, {"enabled": enabled})

    @abstractmethod
    async def remove(self, app_id: str) -> None:
        """Delete the app; UnknownApp when there is none."""

    @abstractmethod
    async def rotate_secret(
        self, app_id: str, new_secret: str | None, grace: float
    ) -> tuple[StoredApp, str]:
        """Replace the secret (with `new_secret`, or a random one) and keep the old one valid
        for `grace` seconds (0: not at all); a second rotation within the grace period drops
        the oldest. Returns the app and its new secret."""

    @abstractmethod
    async def seed(self, apps: Sequence[AppConfig]) -> int:
        """Add `apps` when the store has never had an app (once in its life, even if all its
        apps are removed later); returns how many were added."""


class ConfigStore(AppStore):
    """The apps of the configuration (`app_store = "config"`): read-only, never changes."""

    description = "config"
    read_only = True

    def __init__(self, apps: Sequence[AppConfig]) -> None:
        self._apps = {
            app.id: StoredApp(config=app, options=explicit_options(app))
            for app in sorted(apps, key=lambda app: app.id)
        }

    async def open(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def list_apps(self) -> list[StoredApp]:
        return list(self._apps.values())

    async def get(self, app_id: str) -> StoredApp | None:
        return self._apps.get(app_id)

    async def get_by_key(self, key: str) -> StoredApp | None:
        return next((app for app in self._apps.values() if app.config.key == key), None)

    async def cursor(self) -> int:
        return 0

    async def changes(self, since: int | None) -> ChangeSet:
        if since == 0:
            return ChangeSet(cursor=0, full=False)
        return ChangeSet(cursor=0, full=True, apps=tuple(self._apps.values()))

    async def add(self, app: AppConfig) -> StoredApp:
        raise ReadOnlyStore()

    async def update(
        self, app_id: str, changes: Mapping[str, Any], reset: Sequence[str] = ()
    ) -> StoredApp:
        raise ReadOnlyStore()

    async def remove(self, app_id: str) -> None:
        raise ReadOnlyStore()

    async def rotate_secret(
        self, app_id: str, new_secret: str | None, grace: float
    ) -> tuple[StoredApp, str]:
        raise ReadOnlyStore()

    async def seed(self, apps: Sequence[AppConfig]) -> int:
        return 0
