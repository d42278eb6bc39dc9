"""The apps a running node serves, in memory, kept current from its app store.

`AppDirectory` is the node's copy of its store. The connection path and the HTTP API read it
as plain dictionaries (the listener's `by_id` / `by_key`, filled through `AppListener`); they
never await the store. The directory fills them at start, then:

- every `refresh` seconds (`app_store_refresh`) asks the store for the changes since its
  cursor (one query when nothing changed) and hands them to the listener;
- `refresh_now()` does the same at once: on a change announced on the Redis bus, after a
  change made on this node (`changed()`, which also announces it to the other nodes);
- `missed_key(key)` / `missed_id(app_id)`: a connection or an API call named an app the
  directory does not know. Its answer does not wait (4001 / 404); the key is looked up in
  the background, once, so that an app added a moment ago works on the client's next try
  without waiting for the refresh. Lookups are rate-limited (`MISS_LOOKUPS_PER_SECOND`, a
  burst of `MISS_BURST`, at most `MISS_PENDING` waiting) and a key looked up once is not
  looked up again (new apps arrive through the refresh anyway), so a flood of random keys
  costs the database a bounded number of queries.

Invariants:
- The listener sees every app at most once per change, removals before additions, and only
  apps that validate (the store skips and logs the others). A full change set (the first
  load, a recreated database) removes every app it does not list.
- While the store fails (`StoreUnavailable`), the apps already known keep being served,
  `healthy` is False and `problem` says why (for `/ready`); the refresh keeps trying and the
  first success sets `healthy` again. A store that could not be opened at start is opened
  by the refresh loop when it can be.
- No work on the connection path: `missed_key` / `missed_id` only note the name and
  schedule a background task.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Protocol

from pyserver.apps.errors import AppStoreError, StoreUnavailable
from pyserver.apps.records import ChangeSet, StoredApp
from pyserver.apps.store import AppStore
from pyserver.config import AppConfig

log = logging.getLogger("pyserver.apps")

MISS_LOOKUPS_PER_SECOND = 10.0
"""Background lookups of unknown keys or ids, per second at most, per node."""
MISS_BURST = 20
"""Lookups allowed at once after a quiet period."""
MISS_PENDING = 100
"""Unknown names waiting for a lookup at most; more are not looked up (the refresh finds
any app added meanwhile)."""
MISS_MEMORY = 100_000
"""Names already looked up that are remembered (forgotten all at once past this)."""


class AppListener(Protocol):
    """Who applies the directory's changes (the server: its run-time apps)."""

    def app_changed(self, app: StoredApp) -> None:
        """An app is new or changed (enabled or not): serve it as it is now."""

    def app_removed(self, app_id: str) -> None:
        """An app is gone: treat it as unknown."""


class AppDirectory:
    def __init__(
        self,
        store: AppStore,
        listener: AppListener,
        refresh: float,
        seed: Sequence[AppConfig] = (),
        announce: Callable[[int], Awaitable[None]] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store = store
        self.listener = listener
        self.refresh_seconds = refresh
        self.seed = tuple(seed)
        self.announce = announce
        """Tells the other nodes that the store changed (the Redis bus), or None."""
        self.clock = clock
        self.apps: dict[str, StoredApp] = {}
        """id → the app as last read from the store."""
        self.cursor: int | None = None
        self.opened = False
        self.healthy = False
        self.problem: str | None = "the app store has not been read yet"
        self.refreshes = 0
        """Successful refreshes (tests and the health answer)."""
        self.lookups = 0
        """Background lookups of unknown names sent to the store."""
        self._looked_up: set[tuple[str, str]] = set()
        self._pending: dict[tuple[str, str], None] = {}
        self._tokens = float(MISS_BURST)
        self._tokens_at = clock()
        self._lock = asyncio.Lock()
        self._wake = asyncio.Event()
        self._loop_task: asyncio.Task[None] | None = None
        self._miss_task: asyncio.Task[None] | None = None
        self._closing = False

    # --- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        """Open the store and load every app. A store out of reach is logged and retried by
        the refresh loop (the node starts, serving no app, `/ready` 503); any other store
        error (bad URL, missing driver, newer schema) is raised."""
        try:
            await self._open()
            await self.refresh_now()
        except StoreUnavailable as exc:
            self._unhealthy(exc)
        if not self.store.read_only:
            self._loop_task = asyncio.create_task(self._loop(), name="app store refresh")

    async def close(self) -> None:
        self._closing = True
        for task in (self._loop_task, self._miss_task):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._loop_task = self._miss_task = None
        if self.opened:
            self.opened = False
            await self.store.close()

    async def _open(self) -> None:
        if self.opened:
            return
        await self.store.open()
        try:
            await self.store.seed(self.seed)
        except BaseException:
            await self.store.close()
            raise
        self.opened = True

    # --- refreshing ------------------------------------------------------------------------

    async def _loop(self) -> None:
        while True:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.refresh_seconds)
            self._wake.clear()
            try:
                await self.refresh_now()
            except StoreUnavailable:
                pass  # logged by refresh_now; served from memory meanwhile
            except AppStoreError as exc:  # e.g. a newer pyserver migrated the schema
                self._unhealthy(exc)
            except Exception:  # a bug applying a change: keep refreshing, say it loudly
                log.exception("app store: applying a change failed")

    def refresh_soon(self) -> None:
        """Refresh now, in the background (an announcement from another node)."""
        self._wake.set()

    async def refresh_now(self) -> ChangeSet:
        """Read what changed in the store and apply it; raises StoreUnavailable (after
        marking the directory unhealthy) when the store cannot be read."""
        async with self._lock:
            try:
                await self._open()
                changes = await self.store.changes(self.cursor)
            except StoreUnavailable as exc:
                self._unhealthy(exc)
                raise
            self._apply(changes)
            self.cursor = changes.cursor
            self.refreshes += 1
            if not self.healthy:
                if self.problem is not None and self.refreshes > 1:
                    log.warning("app store %s is reachable again", self.store.description)
                self.healthy = True
                self.problem = None
            return changes

    async def changed(self) -> None:
        """A change was written to the store from this node (the console): apply it here at
        once and announce it to the other nodes."""
        changes = await self.refresh_now()
        if self.announce is not None:
            try:
                await self.announce(changes.cursor)
            except Exception as exc:  # the refresh gets it to the other nodes anyway
                log.warning(
                    "app store: could not announce a change to the other nodes (%s); they "
                    "see it within app_store_refresh (%s s)",
                    exc,
                    self.refresh_seconds,
                )

    def _unhealthy(self, exc: AppStoreError) -> None:
        problem = str(exc)
        if self.healthy or self.problem != problem:
            log.error(
                "%s; serving the %d app(s) known, retrying every %s s",
                problem,
                len(self.apps),
                self.refresh_seconds,
            )
        self.healthy = False
        self.problem = problem

    def _apply(self, changes: ChangeSet) -> None:
        if changes.full:
            listed = {app.id for app in changes.apps}
            for app_id in [app_id for app_id in self.apps if app_id not in listed]:
                self._remove(app_id)
        for app_id in changes.removed:
            self._remove(app_id)
        for app in changes.apps:
            self._put(app)

    def _put(self, app: StoredApp) -> None:
        if self.apps.get(app.id) == app:
            return
        self.apps[app.id] = app
        self.listener.app_changed(app)

    def _remove(self, app_id: str) -> None:
        if self.apps.pop(app_id, None) is not None:
            self.listener.app_removed(app_id)

    # --- unknown names -----------------------------------------------------------------------

    def missed_key(self, key: str) -> None:
        """A connection named an unknown key: look it up in the background (rate-limited)."""
        self._missed("key", key)

    def missed_id(self, app_id: str) -> None:
        """An API call named an unknown app id: look it up in the background."""
        self._missed("id", app_id)

    def _missed(self, kind: str, name: str) -> None:
        if self.store.read_only or self._closing or not self.opened:
            return
        entry = (kind, name)
        if entry in self._looked_up or entry in self._pending:
            return
        if len(self._pending) >= MISS_PENDING:
            return
        self._pending[entry] = None
        if self._miss_task is None or self._miss_task.done():
            self._miss_task = asyncio.get_running_loop().create_task(
                self._look_up_missed(), name="app store lookups"
            )

    async def _look_up_missed(self) -> None:
        while self._pending:
            wait = self._take_token()
            if wait > 0:
                await asyncio.sleep(wait)
                continue
            entry = next(iter(self._pending))
            del self._pending[entry]
            if len(self._looked_up) >= MISS_MEMORY:
                self._looked_up.clear()
            self._looked_up.add(entry)
            kind, name = entry
            self.lookups += 1
            try:
                if kind == "key":
                    found = await self.store.get_by_key(name)
                else:
                    found = await self.store.get(name)
            except StoreUnavailable as exc:
                self._unhealthy(exc)
                self._pending.clear()
                return
            except AppStoreError as exc:
                log.warning("app store: lookup of an unknown app %s failed: %s", kind, exc)
                continue
            except Exception:
                log.exception("app store: lookup of an unknown app %s failed", kind)
                continue
            if found is not None and found.id not in self.apps:
                log.info("app store: app %s found on a first connection or call", found.id)
                self._put(found)

    def _take_token(self) -> float:
        """0 when a lookup may go now (and spends it), else the seconds to wait."""
        now = self.clock()
        self._tokens = min(
            float(MISS_BURST), self._tokens + (now - self._tokens_at) * MISS_LOOKUPS_PER_SECOND
        )
        self._tokens_at = now
        if self._tokens >= 1:
            self._tokens -= 1
            return 0.0
        return (1 - self._tokens) / MISS_LOOKUPS_PER_SECOND

    # --- health ------------------------------------------------------------------------------

    def describe(self) -> dict[str, object]:
        """The directory's state for the health answer."""
        return {
            "store": self.store.description,
            "healthy": self.healthy,
            "problem": self.problem,
            "apps": len(self.apps),
            "cursor": self.cursor,
            "queries": self.store.queries,
            "lookups": self.lookups,
        }
