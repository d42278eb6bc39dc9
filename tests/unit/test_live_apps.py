"""What a change from the app store does to the apps running on a node (server.live_apps)."""

from __future__ import annotations

from typing import Any

from pyserver.apps.records import StoredApp
from pyserver.channels.observer import Observers
from pyserver.cluster.local import LocalAdapter
from pyserver.config import AppConfig
from pyserver.server.live_apps import LiveApps
from tests.unit.fakes import FakeClient


class Reported(FakeClient):
    def __init__(self, socket_id: str) -> None:
        super().__init__(socket_id)
        self.errors: list[Any] = []

    def report(self, error: object) -> None:
        self.errors.append(error)


def stored(app_id: str, key: str, **options: Any) -> StoredApp:
    return StoredApp(config=AppConfig(id=app_id, key=key, secret=f"s-{app_id}", **options))


def test_add_change_disable_remove_and_add_again() -> None:
    changes: list[int] = []
    live = LiveApps(LocalAdapter(0), Observers(), lambda: changes.append(1))
    live.app_changed(stored("1", "k1"))
    app = live.by_id["1"]
    assert live.by_key["k1"] is app and changes == [1]
    live.app_changed(stored("1", "k1"))  # the same again: nothing to do
    assert changes == [1]

    client = Reported("1.1")
    app.connected(client)
    live.app_changed(stored("1", "k1", max_connections=5))
    assert app.config.max_connections == 5 and client.errors == []

    live.app_changed(stored("1", "k1", enabled=False))
    assert [e.code for e in client.errors] == [4003]
    assert live.by_key["k1"] is app  # still known: a handshake gets 4003, an API call 403

    live.app_removed("1")
    assert [e.code for e in client.errors] == [4003, 4001]
    assert "1" not in live.by_id and "k1" not in live.by_key

    live.app_changed(stored("1", "k1-new"))
    assert live.by_id["1"] is app  # the same App: leaves still in flight complete on it
    assert live.by_key == {"k1-new": app}


def test_two_apps_swap_their_keys_in_one_change_set() -> None:
    live = LiveApps(LocalAdapter(0), Observers())
    live.app_changed(stored("1", "a"))
    live.app_changed(stored("2", "b"))
    one, two = live.by_id["1"], live.by_id["2"]
    live.app_changed(stored("1", "b"))
    live.app_changed(stored("2", "a"))
    assert live.by_key == {"a": two, "b": one}


def test_a_rotation_offers_the_previous_secret_until_it_expires() -> None:
    live = LiveApps(LocalAdapter(0), Observers())
    app = StoredApp(
        config=AppConfig(id="1", key="k", secret="new"),
        previous_secret="old",
        previous_secret_expires_at=4_000_000_000.0,
    )
    live.app_changed(app)
    assert live.by_id["1"].previous_secret() == "old"
    live.app_changed(
        StoredApp(
            config=app.config, previous_secret="old", previous_secret_expires_at=1_000_000_000.0
        )
    )
    assert live.by_id["1"].previous_secret() is None
