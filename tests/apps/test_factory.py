"""Issue 15 item 1: choosing a store from `app_store`, the read-only `config` store, the
seeding rule, and the clear errors of a store that cannot be used (no database needed)."""

from __future__ import annotations

import asyncio
import re
import sys
from pathlib import Path

import pytest

from pyserver.apps import store_for_url
from pyserver.apps.errors import (
    DriverMissing,
    InvalidStoreUrl,
    ReadOnlyStore,
    StoreUnavailable,
)
from pyserver.apps.factory import seed_apps
from pyserver.apps.sql import SqlAppStore
from pyserver.apps.store import ConfigStore
from pyserver.config import AppConfig, ConfigError, Settings, load_settings
from tests.redisproc import free_port


def test_each_url_form_picks_its_store() -> None:
    assert isinstance(store_for_url("config"), ConfigStore)
    for url, dialect in (
        ("sqlite:///apps.db", "sqlite"),
        ("sqlite:////var/lib/pyserver/apps.db", "sqlite"),
        ("postgresql://u:p@127.0.0.1/db", "postgresql"),
        ("postgres://u:p@127.0.0.1/db", "postgresql"),
        ("mysql://u:p@127.0.0.1/db", "mysql"),
        ("mariadb://u:p@127.0.0.1:3307/db?unix_socket=/run/mysqld.sock", "mysql"),
    ):
        store = store_for_url(url)
        assert isinstance(store, SqlAppStore) and store.driver.dialect == dialect, url
    assert store_for_url("sqlite:///apps.db").description == "sqlite:///apps.db"
    assert store_for_url("sqlite:////abs/apps.db").description == "sqlite:////abs/apps.db"


def test_a_url_that_names_no_store_is_refused_clearly() -> None:
    for url, message in (
        ("sqlite://apps.db", "use sqlite:///relative/path.db or sqlite:////absolute/path.db"),
        ("mysql://u:p@127.0.0.1", "name the database"),
        ("mysql://u:p@127.0.0.1/db?ssl=1", "unknown parameter ssl"),
        ("redis://127.0.0.1", 'use "config" or a sqlite:///, postgresql:// or mysql:// URL'),
    ):
        with pytest.raises(InvalidStoreUrl, match=message):
            store_for_url(url)


def test_the_setting_accepts_only_known_stores() -> None:
    assert Settings(app_store="postgresql://h/db").app_store == "postgresql://h/db"
    with pytest.raises(ValueError, match='use "config" or a URL starting with sqlite://'):
        Settings(app_store="redis://h")
    with pytest.raises(ConfigError, match="app_store_refresh: Input should be greater than 0"):
        load_settings(app_store_refresh=0)


@pytest.mark.parametrize(
    ("url", "module", "extra"),
    [
        ("postgresql://h/db", "asyncpg", "pip install 'pyserver[postgres]'"),
        ("mysql://h/db", "aiomysql", "pip install 'pyserver[mysql]'"),
    ],
)
def test_a_missing_driver_names_the_extra_to_install(
    url: str, module: str, extra: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, module, None)  # what `import` sees when not installed
    with pytest.raises(
        DriverMissing,
        match=re.escape(f"needs the {module} driver: {extra}"),
    ) as caught:
        store_for_url(url)
    assert caught.value.exit_status == 3


def test_an_unreachable_database_is_reported_without_its_password(tmp_path: Path) -> None:
    port = free_port()  # nothing listens there

    async def open_store(url: str) -> None:
        await store_for_url(url).open()

    for url in (
        f"postgresql://user:hunter2@127.0.0.1:{port}/db",
        f"mysql://user:hunter2@127.0.0.1:{port}/db",
        f"sqlite:///{tmp_path}/missing-directory/apps.db",
    ):
        with pytest.raises(StoreUnavailable, match="is unavailable") as caught:
            asyncio.run(open_store(url))
        assert "hunter2" not in str(caught.value)
        assert caught.value.exit_status == 3


def test_the_config_store_serves_the_configured_apps_and_refuses_changes() -> None:
    apps = [
        AppConfig(id="2", key="k2", secret="s2", max_connections=3),
        AppConfig(id="1", key="k1", secret="s1"),
    ]
    store = store_for_url("config", apps)

    async def scenario() -> None:
        async with store:
            assert [a.id for a in await store.list_apps()] == ["1", "2"]
            found = await store.get_by_key("k2")
            assert found is not None and found.options == {"max_connections": 3}
            assert (await store.get("1")) is not None and (await store.get("3")) is None
            full = await store.changes(None)
            assert full.full and len(full.apps) == 2 and full.cursor == 0
            assert (await store.changes(full.cursor)).apps == ()
            for write in (
                store.add(apps[0]),
                store.update("1", {"max_connections": 1}),
                store.set_enabled("1", False),
                store.remove("1"),
                store.rotate_secret("1", None, 300),
            ):
                with pytest.raises(ReadOnlyStore, match='app_store = "config" is read-only'):
                    await write
            assert await store.seed(apps) == 0

    asyncio.run(scenario())


def test_the_built_in_default_app_never_seeds_a_database() -> None:
    assert seed_apps(Settings()) == []
    custom = Settings(app_key="mine", app_secret="long-random-secret")
    assert [a.key for a in seed_apps(custom)] == ["mine"]
    listed = Settings(apps=[AppConfig(id="1", key="k", secret="s")])
    assert [a.id for a in seed_apps(listed)] == ["1"]
