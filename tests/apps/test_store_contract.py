"""Issue 15 item 1: the `AppStore` contract, run on every database store (SQLite in a temp
file, a real PostgreSQL, a real MariaDB), so the three behave the same."""

from __future__ import annotations

import asyncio
import logging
import re
import secrets
from typing import Any

import pytest

from pyserver.apps import AppStore, store_for_url
from pyserver.apps.errors import (
    DuplicateApp,
    InvalidApp,
    SchemaTooNew,
    StoreUnavailable,
    UnknownApp,
)
from pyserver.apps.schema import CURRENT_VERSION, MIGRATIONS, Migration, ensure_schema
from pyserver.apps.sql import SqlAppStore
from pyserver.config import AppConfig, HistoryRule, WebhookTarget
from tests.apps.conftest import database_server, with_store


def app(app_id: str = "1", key: str | None = None, **options: Any) -> AppConfig:
    return AppConfig(id=app_id, key=key or f"key-{app_id}", secret=f"secret-{app_id}", **options)


def sql(store: AppStore) -> SqlAppStore:
    assert isinstance(store, SqlAppStore)
    return store


async def execute(store: AppStore, statement: str, *args: Any) -> None:
    """A statement written by hand, as an operator with a SQL client would."""
    async with sql(store).driver.transaction() as session:
        await session.execute(statement, *args)


def test_a_new_store_has_the_current_schema_and_no_apps(store_url: str) -> None:
    async def scenario(store: AppStore) -> None:
        assert await store.list_apps() == []
        assert await store.cursor() == 0
        async with sql(store).driver.session() as session:
            rows = await session.fetch("SELECT version FROM pyserver_schema_version")
        assert rows == [(CURRENT_VERSION,)]

    with_store(store_url, scenario)


def test_added_apps_come_back_with_every_option(store_url: str) -> None:
    hook = WebhookTarget(url="https://example.com/hook", event_types=("channel_occupied",))

    async def scenario(store: AppStore) -> None:
        first = await store.add(
            app(
                "2",
                name="Shop",
                max_connections=10,
                client_events=False,
                allowed_origins=("https://*.example.com",),
                webhooks=(hook,),
            )
        )
        await store.add(app("1", enabled=False))
        assert first.revision == 1 and first.updated_at > 0
        listed = await store.list_apps()
        assert [a.id for a in listed] == ["1", "2"]
        got = await store.get("2")
        assert got is not None and got.config == first.config
        assert got.config.webhooks == (hook,)
        assert got.config.allowed_origins == ("https://*.example.com",)
        # only what was set is stored, so later defaults reach the options left alone
        assert set(got.options) == {
            "name",
            "max_connections",
            "client_events",
            "allowed_origins",
            "webhooks",
        }
        assert got.options["webhooks"] == [
            {"url": "https://example.com/hook", "event_types": ["channel_occupied"]}
        ]
        by_key = await store.get_by_key("key-1")
        assert by_key is not None and by_key.id == "1" and by_key.config.enabled is False
        assert await store.get("3") is None and await store.get_by_key("nope") is None

    with_store(store_url, scenario)


def test_ids_and_keys_match_exactly(store_url: str) -> None:
    # MySQL's text collations ignore case and MariaDB's trailing spaces; a key must not
    async def scenario(store: AppStore) -> None:
        await store.add(app("a", key="Key"))
        await store.add(app("A", key="key"))
        await store.add(app("a ", key="key "))
        await store.add(app("ü", key="kéy"))
        for key, app_id in (("Key", "a"), ("key", "A"), ("key ", "a "), ("kéy", "ü")):
            found = await store.get_by_key(key)
            assert found is not None and found.id == app_id
        assert await store.get_by_key("KEY") is None
        assert await store.get_by_key("key  ") is None
        assert [a.id for a in await store.list_apps()] == sorted(["a", "A", "a ", "ü"])

    with_store(store_url, scenario)


def test_a_duplicate_id_or_key_is_refused_and_changes_nothing(store_url: str) -> None:
    async def scenario(store: AppStore) -> None:
        await store.add(app("1", key="k1"))
        await store.add(app("2", key="k2"))
        cursor = await store.cursor()
        with pytest.raises(DuplicateApp, match="an app with id '1' already exists"):
            await store.add(app("1", key="other"))
        with pytest.raises(DuplicateApp, match="the key 'k1' is already used by app '1'"):
            await store.add(app("3", key="k1"))
        with pytest.raises(DuplicateApp, match="the key 'k2' is already used by app '2'"):
            await store.update("1", {"key": "k2"})
        assert await store.cursor() == cursor
        assert [a.config.key for a in await store.list_apps()] == ["k1", "k2"]

    with_store(store_url, scenario)


def test_unknown_options_and_invalid_values_are_refused(store_url: str) -> None:
    async def scenario(store: AppStore) -> None:
        await store.add(app("1"))
        cursor = await store.cursor()
        refused = {
            "unknown option 'max_conections' (did you mean 'max_connections'?)": {
                "max_conections": 3
            },
            "max_connections: Input should be greater than or equal to 0": {"max_connections": -1},
            "webhooks.0.url: String should match pattern": {"webhooks": [{"url": "ftp://x"}]},
            "client_events: Input should be a valid boolean": {"client_events": "maybe"},
            "an app's id cannot change": {"id": "2"},
            "the secret changes with rotate-secret": {"secret": "x"},
        }
        for message, changes in refused.items():
            with pytest.raises(InvalidApp, match=re.escape(message)):
                await store.update("1", changes)
        with pytest.raises(InvalidApp, match="key: at most 255 bytes"):
            await store.add(app("2", key="k" * 256))
        with pytest.raises(InvalidApp, match="has no default"):
            await store.update("1", {}, reset=["key"])
        with pytest.raises(UnknownApp, match="no app with id '9'"):
            await store.update("9", {"max_connections": 1})
        assert await store.cursor() == cursor
        unchanged = await store.get("1")
        assert unchanged is not None and unchanged.options == {}

    with_store(store_url, scenario)


def test_update_changes_only_what_it_names(store_url: str) -> None:
    async def scenario(store: AppStore) -> None:
        await store.add(app("1", max_connections=5, cache_ttl=60, name="Shop"))
        updated = await store.update(
            "1", {"key": "new-key", "client_events": False, "cache_ttl": "90"}, reset=["name"]
        )
        assert updated.config.key == "new-key" and updated.config.cache_ttl == 90
        assert updated.config.max_connections == 5 and updated.config.name is None
        assert updated.options == {"max_connections": 5, "cache_ttl": 90, "client_events": False}
        assert await store.get_by_key("key-1") is None
        again = await store.get_by_key("new-key")
        assert again is not None and again.config == updated.config
        assert again.config.secret == "secret-1"

    with_store(store_url, scenario)


def test_disable_and_enable(store_url: str) -> None:
    async def scenario(store: AppStore) -> None:
        await store.add(app("1"))
        assert (await store.set_enabled("1", False)).config.enabled is False
        got = await store.get("1")
        assert got is not None and got.config.enabled is False
        assert (await store.set_enabled("1", True)).config.enabled is True
        with pytest.raises(UnknownApp):
            await store.set_enabled("2", False)

    with_store(store_url, scenario)


def test_a_removed_app_is_gone_and_its_id_and_key_can_be_reused(store_url: str) -> None:
    async def scenario(store: AppStore) -> None:
        await store.add(app("1", key="k", max_connections=3))
        await store.remove("1")
        assert await store.get("1") is None and await store.get_by_key("k") is None
        with pytest.raises(UnknownApp):
            await store.remove("1")
        again = await store.add(app("1", key="k"))
        assert again.options == {}
        assert [a.id for a in await store.list_apps()] == ["1"]

    with_store(store_url, scenario)


def test_rotating_a_secret_keeps_the_old_one_for_the_grace_period(store_url: str) -> None:
    async def scenario(store: AppStore) -> None:
        now = 1_000_000.0
        sql(store).clock = lambda: now
        await store.add(app("1"))
        rotated, new = await store.rotate_secret("1", None, grace=300)
        assert len(new) == 32 and new != "secret-1" and rotated.config.secret == new
        assert rotated.previous_secret == "secret-1"
        assert rotated.previous_secret_expires_at == now + 300
        stored = await store.get("1")
        assert stored is not None
        assert stored.secrets(now + 299) == (new, "secret-1")
        assert stored.secrets(now + 300) == (new,)
        # a second rotation keeps only the secret it replaces
        twice, newest = await store.rotate_secret("1", "chosen-secret", grace=60)
        assert newest == "chosen-secret"
        assert twice.secrets(now + 1) == ("chosen-secret", new)
        # no grace: the old secret is invalid at once
        none, _ = await store.rotate_secret("1", "third", grace=0)
        assert none.previous_secret is None and none.secrets(now) == ("third",)
        with pytest.raises(InvalidApp, match="the new secret is the current one"):
            await store.rotate_secret("1", "third", grace=0)
        with pytest.raises(InvalidApp, match="secret: from 1 to 255 bytes"):
            await store.rotate_secret("1", "", grace=0)
        with pytest.raises(UnknownApp):
            await store.rotate_secret("2", None, grace=0)
        assert (await store.get("1")) == none

    with_store(store_url, scenario)


def test_the_change_cursor_tells_what_changed_since(store_url: str) -> None:
    async def scenario(store: AppStore) -> None:
        await store.add(app("1"))
        await store.add(app("2"))
        snapshot = await store.changes(None)
        assert snapshot.full and [a.id for a in snapshot.apps] == ["1", "2"]
        assert snapshot.cursor == 2

        before = store.queries
        nothing = await store.changes(snapshot.cursor)
        assert nothing == type(nothing)(cursor=2, full=False)
        assert store.queries - before == 1  # the refresh every few seconds is one query

        await store.update("2", {"max_connections": 7})
        await store.add(app("3"))
        await store.remove("1")
        changed = await store.changes(snapshot.cursor)
        assert not changed.full and changed.cursor == 5
        assert [(a.id, a.revision) for a in changed.apps] == [("2", 3), ("3", 4)]
        assert changed.apps[0].config.max_connections == 7
        assert changed.removed == ("1",)

        # removed, then added again: only the app, no removal
        await store.remove("3")
        await store.add(app("3", key="other"))
        latest = await store.changes(changed.cursor)
        assert [a.config.key for a in latest.apps] == ["other"] and latest.removed == ()

        # a cursor the store never gave (a recreated database): everything, to replace
        assert (await store.changes(10_000)).full

    with_store(store_url, scenario)


def test_a_lookup_by_key_is_one_query(store_url: str) -> None:
    async def scenario(store: AppStore) -> None:
        await store.add(app("1"))
        before = store.queries
        for _ in range(20):
            assert await store.get_by_key(secrets.token_hex(8)) is None
        assert await store.get_by_key("key-1") is not None
        assert store.queries - before == 21

    with_store(store_url, scenario)


def test_the_configuration_seeds_a_store_once(
    store_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    async def scenario(store: AppStore) -> None:
        caplog.set_level(logging.INFO, "pyserver.apps")
        assert await store.seed([app("1", max_connections=4), app("2")]) == 2
        assert "seeded" in caplog.text and "happens once" in caplog.text
        seeded = await store.get("1")
        assert seeded is not None and seeded.options == {"max_connections": 4}
        assert await store.seed([app("3")]) == 0
        await store.remove("1")
        await store.remove("2")
        assert await store.seed([app("3")]) == 0  # empty again, but it had apps once
        assert await store.list_apps() == []

    with_store(store_url, scenario)


def test_a_store_with_an_added_app_is_not_seeded(store_url: str) -> None:
    async def scenario(store: AppStore) -> None:
        await store.add(app("9"))
        assert await store.seed([app("1")]) == 0
        assert [a.id for a in await store.list_apps()] == ["9"]

    with_store(store_url, scenario)


def test_a_row_that_no_longer_validates_is_skipped_with_an_error_log(
    store_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    async def scenario(store: AppStore) -> None:
        await store.add(app("good"))
        await store.add(app("bad"))
        await store.add(app("newer"))
        cursor = await store.cursor()
        # edited by hand, or written by a newer pyserver with an option this one lacks
        await execute(
            store,
            "UPDATE pyserver_apps SET options = ? WHERE id = ?",
            '{"max_connections": -5}',
            "bad",
        )
        await execute(
            store,
            "UPDATE pyserver_apps SET options = ?, revision = 4 WHERE id = ?",
            '{"colour": "blue"}',
            "newer",
        )
        with caplog.at_level(logging.ERROR, "pyserver.apps"):
            listed = await store.list_apps()
        assert [a.id for a in listed] == ["good"]
        assert "app 'bad' is skipped" in caplog.text and "max_connections" in caplog.text
        assert "app 'newer' is skipped" in caplog.text and "colour" in caplog.text
        assert await store.get("bad") is None
        await execute(store, "UPDATE pyserver_app_revision SET revision = 4")
        changes = await store.changes(cursor)
        assert changes.skipped == ("newer",) and changes.apps == ()
        # `set` repairs a row: the value, or the option this pyserver does not know
        fixed = await store.update("bad", {"max_connections": 5})
        assert fixed.config.max_connections == 5
        repaired = await store.update("newer", {}, reset=["colour"])
        assert repaired.options == {}
        # unreadable options are never overwritten: they may still hold what the operator wants
        await execute(store, "UPDATE pyserver_apps SET options = ? WHERE id = ?", "[1]", "good")
        with pytest.raises(InvalidApp, match="the options of app 'good' are not a JSON object"):
            await store.update("good", {"max_connections": 5})
        await execute(store, "UPDATE pyserver_apps SET options = ? WHERE id = ?", "{}", "good")
        assert [a.id for a in await store.list_apps()] == ["bad", "good", "newer"]

    with_store(store_url, scenario)


def test_a_bad_app_name_is_refused_and_a_row_holding_one_is_skipped(
    store_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    async def scenario(store: AppStore) -> None:
        await store.add(app("1", name="shop"))
        with pytest.raises(InvalidApp, match="an app name is 1 to 255 printable characters"):
            await store.update("1", {"name": "my\nshop"})
        kept = await store.get("1")
        assert kept is not None and kept.config.name == "shop"
        await execute(  # edited by hand
            store, "UPDATE pyserver_apps SET options = ? WHERE id = ?", '{"name": "a\\tb"}', "1"
        )
        with caplog.at_level(logging.ERROR, "pyserver.apps"):
            assert await store.list_apps() == []
        assert "app '1' is skipped" in caplog.text and "an app name is" in caplog.text
        fixed = await store.update("1", {"name": "shop-2"})
        assert fixed.config.name == "shop-2"

    with_store(store_url, scenario)


def test_migrations_bring_an_old_schema_to_the_current_one(store_url: str) -> None:
    # A later version adds a column; the data of version 1 must survive the migration.
    v2 = Migration(
        2,
        "a note per app",
        {
            "sqlite": ("ALTER TABLE pyserver_apps ADD COLUMN note TEXT",),
            "postgresql": ("ALTER TABLE pyserver_apps ADD COLUMN note TEXT",),
            "mysql": ("ALTER TABLE pyserver_apps ADD COLUMN IF NOT EXISTS note TEXT",),
        },
    )

    async def scenario() -> None:
        store = sql(store_for_url(store_url))
        await store.driver.connect()
        try:
            assert await ensure_schema(store.driver, MIGRATIONS[:1]) == (0, 1)
            await store.add(app("1", max_connections=2))
            assert await ensure_schema(store.driver, [*MIGRATIONS[:1], v2]) == (1, 2)
            assert await ensure_schema(store.driver, [*MIGRATIONS[:1], v2]) == (2, 2)
            async with store.driver.session() as session:
                assert await session.fetch("SELECT id, note FROM pyserver_apps") == [("1", None)]
                assert await session.fetch("SELECT version FROM pyserver_schema_version") == [(2,)]
            kept = await store.get("1")
            assert kept is not None and kept.config.max_connections == 2
            with pytest.raises(SchemaTooNew, match="schema version 2, newer than this pyserver"):
                await ensure_schema(store.driver, MIGRATIONS[:1])
        finally:
            await store.close()

    asyncio.run(scenario())


def test_nodes_opening_a_new_store_together_create_the_schema_once(store_url: str) -> None:
    async def scenario() -> list[int]:
        stores = [store_for_url(store_url) for _ in range(4)]
        await asyncio.gather(*(store.open() for store in stores))
        try:
            await stores[0].add(app("1"))
            return [len(await store.list_apps()) for store in stores]
        finally:
            await asyncio.gather(*(store.close() for store in stores))

    assert asyncio.run(scenario()) == [1, 1, 1, 1]


def test_concurrent_writers_get_distinct_revisions_in_commit_order(store_url: str) -> None:
    # two nodes (two connection pools) writing at once; a reader must miss no change
    async def scenario() -> None:
        nodes = [store_for_url(store_url) for _ in range(2)]
        for node in nodes:
            await node.open()
        try:
            reader = nodes[0]
            seen: dict[str, int] = {}
            cursor = None

            async def read() -> None:
                nonlocal cursor
                changes = await reader.changes(cursor)
                for stored in changes.apps:
                    seen[stored.id] = stored.revision
                cursor = changes.cursor

            async def write(node: AppStore, prefix: str) -> None:
                for i in range(15):
                    await node.add(app(f"{prefix}{i}"))
                    await read()

            await asyncio.gather(write(nodes[0], "a"), write(nodes[1], "b"))
            await read()
            assert len(seen) == 30
            assert sorted(seen.values()) == list(range(1, 31))
            assert cursor == 30
        finally:
            for node in nodes:
                await node.close()

    asyncio.run(scenario())


@pytest.mark.parametrize("store_kind", ["postgresql", "mariadb"])
def test_a_database_that_goes_away_fails_clearly_and_is_used_again_when_back(
    store_url: str, store_kind: str
) -> None:
    # what the server's refresh will rely on: no hang, one error type, reconnection
    server = database_server(store_kind)

    async def scenario(store: AppStore) -> None:
        await store.add(app("1"))
        server.stop()
        try:
            for _ in range(2):
                with pytest.raises(StoreUnavailable, match="is unavailable"):
                    await asyncio.wait_for(store.changes(0), 30)
        finally:
            server.start()
        changes = await store.changes(0)
        assert [a.id for a in changes.apps] == ["1"]
        assert await store.get_by_key("key-1") is not None

    with_store(store_url, scenario)


def every_option_changed() -> dict[str, Any]:
    """A value other than the default for every AppConfig option, so that a new option
    that a store would drop fails the round trip below."""
    special: dict[str, Any] = {
        "name": "Every-option",
        "allowed_origins": ("https://*.example.com", "http://localhost:3000"),
        "history": (
            HistoryRule(channels="chat-*", limit=50, ttl=600, rewind=5, recovery_window=60),
            HistoryRule(channels="feed-*", limit=10, ttl=60, client_events=True),
        ),
        "webhooks": (
            WebhookTarget(
                url="https://example.com/hook",
                event_types=("member_added", "user_online"),
                channel_prefix="presence-",
                headers={"Authorization": "Bearer x"},
            ),
        ),
    }
    values: dict[str, Any] = {}
    for name, field in AppConfig.model_fields.items():
        if name in ("id", "key", "secret"):
            continue
        default = field.get_default(call_default_factory=True)
        if name in special:
            values[name] = special[name]
        elif isinstance(default, bool):
            values[name] = not default
        elif isinstance(default, int | float):
            values[name] = default + 1
        assert name in values and values[name] != default, f"give {name} a value in this test"
    return values


def test_every_option_of_an_app_survives_the_store(store_url: str) -> None:
    original = app("1", **every_option_changed())

    async def scenario(store: AppStore) -> None:
        await store.add(original)
        stored = await store.get("1")
        assert stored is not None and stored.config == original
        assert set(stored.options) == set(AppConfig.model_fields) - {
            "id",
            "key",
            "secret",
            "enabled",
        }
        assert stored.config.enabled is False

    with_store(store_url, scenario)


def test_many_nodes_opening_one_new_sqlite_file_at_once_all_open(tmp_path) -> None:
    """Switching a new SQLite file to WAL can be refused with "database is locked" at once,
    without waiting for `busy_timeout`, when other connections open it at the same moment
    (about 2 % of openings of 4 nodes here, before the retry): every node must still open."""

    async def scenario(path: str) -> None:
        stores = [store_for_url(f"sqlite:///{path}") for _ in range(6)]
        try:
            await asyncio.gather(*(store.open() for store in stores))
        finally:
            await asyncio.gather(*(store.close() for store in stores), return_exceptions=True)

    for round_ in range(150):
        asyncio.run(scenario(str(tmp_path / f"apps-{round_}.db")))
