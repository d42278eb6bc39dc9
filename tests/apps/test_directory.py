"""The app directory on a real store (SQLite, PostgreSQL, MariaDB): what it hands its listener
after changes, and how many queries unknown names cost."""

from __future__ import annotations

import asyncio
from typing import Any

from pyserver.apps import store_for_url
from pyserver.apps.directory import MISS_BURST, AppDirectory
from pyserver.apps.records import StoredApp
from pyserver.config import AppConfig


class Recorder:
    def __init__(self) -> None:
        self.events: list[tuple[str, Any]] = []

    def app_changed(self, app: StoredApp) -> None:
        self.events.append(("changed", (app.id, app.config.enabled, app.config.key)))

    def app_removed(self, app_id: str) -> None:
        self.events.append(("removed", app_id))


def _app(n: int) -> AppConfig:
    return AppConfig(id=f"d{n}", key=f"dkey{n}", secret=f"dsecret{n}")


def test_refreshes_hand_over_additions_changes_and_removals(store_url: str) -> None:
    async def main() -> None:
        writer = store_for_url(store_url)
        await writer.open()
        listener = Recorder()
        directory = AppDirectory(store_for_url(store_url), listener, refresh=3600, seed=[_app(1)])
        await directory.start()
        try:
            assert listener.events == [("changed", ("d1", True, "dkey1"))]
            assert directory.healthy and directory.problem is None
            listener.events.clear()
            await writer.add(_app(2))
            await writer.set_enabled("d1", False)
            await directory.refresh_now()
            assert listener.events == [
                ("changed", ("d1", False, "dkey1")),
                ("changed", ("d2", True, "dkey2")),
            ]
            listener.events.clear()
            queries = directory.store.queries
            await directory.refresh_now()  # nothing changed: one query, nothing handed over
            assert listener.events == [] and directory.store.queries == queries + 1
            await writer.remove("d1")
            await directory.refresh_now()
            assert listener.events == [("removed", "d1")]
        finally:
            await directory.close()
            await writer.close()

    asyncio.run(main())


def test_unknown_names_are_looked_up_once_and_at_a_bounded_rate(store_url: str) -> None:
    async def main() -> None:
        writer = store_for_url(store_url)
        await writer.open()
        now = [0.0]
        listener = Recorder()
        directory = AppDirectory(
            store_for_url(store_url), listener, refresh=3600, clock=lambda: now[0]
        )
        await directory.start()
        try:
            await writer.add(_app(3))  # added after the start: known only by a lookup
            before = directory.store.queries
            for n in range(1_000):
                directory.missed_key(f"random-{n}")
            directory.missed_key("dkey3")
            directory.missed_key("random-1")  # already waiting: not twice
            await asyncio.sleep(0.5)  # the clock stands still: only the burst goes out
            assert directory.lookups == MISS_BURST
            assert directory.store.queries - before == MISS_BURST
            assert listener.events == []
            await directory.close()  # what still waits is dropped with the directory
            directory = AppDirectory(store_for_url(store_url), listener, refresh=3600)
            await directory.start()
            listener.events.clear()
            directory.missed_key("no-such-key")
            directory.missed_key("no-such-key")
            await writer.add(_app(4))
            directory.missed_key("dkey4")
            directory.missed_id("d4")  # found by the key already: its lookup finds it known
            for _ in range(100):
                if directory.lookups == 3:
                    break
                await asyncio.sleep(0.01)
            assert directory.lookups == 3
            assert listener.events == [("changed", ("d4", True, "dkey4"))]
            directory.missed_key("no-such-key")  # looked up once already
            await asyncio.sleep(0.05)
            assert directory.lookups == 3
        finally:
            await directory.close()
            await writer.close()

    asyncio.run(main())
