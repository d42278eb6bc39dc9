"""Issue 15 item 4: the console's Apps endpoints (`pyserver/console/apps_admin.py`), in
process, on a real SQLite store in a temporary file and on the read-only `config` store:
who may call them, every operation of `pyserver apps`, secrets only when asked, and a clear
error (never a crash) for each kind of bad input."""

from __future__ import annotations

import asyncio
import base64
import inspect
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import orjson
import pytest

from pyserver.apps import AppStore, store_for_url
from pyserver.apps.errors import (
    DriverMissing,
    DuplicateApp,
    InvalidApp,
    ReadOnlyStore,
    StoreUnavailable,
    UnknownApp,
)
from pyserver.channels.app import App
from pyserver.cluster.local import LocalAdapter
from pyserver.config import AppConfig
from pyserver.console.apps_admin import ROUTES, store_error
from pyserver.console.console import Console
from pyserver.http import Request

TOKEN = "operator-token"
BEARER = {"authorization": f"Bearer {TOKEN}"}
CONFIGURED = [
    AppConfig(id="1001", key="key-1001", secret="secret-1001"),
    AppConfig(id="1002", key="key-1002", secret="secret-1002", name="Second"),
]


def basic(app_id: str, secret: str) -> dict[str, str]:
    value = base64.b64encode(f"{app_id}:{secret}".encode()).decode()
    return {"authorization": f"Basic {value}"}


APP_LOGIN = basic("1001", "secret-1001")


def make_console(configs: list[AppConfig] = CONFIGURED) -> Console:
    adapter = LocalAdapter()
    apps = {config.id: App(config, adapter) for config in configs}
    return Console(apps, TOKEN, 0.0)


async def call(
    console: Console,
    method: str,
    path: str,
    body: Any = None,
    headers: dict[str, str] = BEARER,
) -> tuple[int, Any]:
    """One request through the console, as the HTTP API hands it over: (status, JSON)."""
    target, _, query = path.partition("?")
    params = dict(part.split("=", 1) for part in query.split("&") if part)
    raw = body if isinstance(body, bytes) else b"" if body is None else orjson.dumps(body)
    answer = console.handle(Request(method, target, params, dict(headers), raw))
    if inspect.isawaitable(answer):
        answer = await answer
    assert answer.content_type == "application/json"
    return answer.status, orjson.loads(answer.body)


Scenario = Callable[[Console, AppStore, list[str]], Awaitable[None]]


def with_sqlite(tmp_path: Path, scenario: Scenario) -> None:
    """Run `scenario` with a console managing a fresh, open SQLite store; the third argument
    collects the ids the console reported as changed (the server's `applied` hook)."""

    async def main() -> None:
        store = store_for_url(f"sqlite:///{tmp_path / 'apps.db'}")
        await store.open()
        applied: list[str] = []

        async def apply(app_id: str) -> None:
            applied.append(app_id)

        console = make_console()
        console.apps_admin.attach(store, 120.0, apply)
        try:
            await scenario(console, store, applied)
        finally:
            await store.close()

    asyncio.run(main())


# --- who may call them ---------------------------------------------------------------------


def test_only_the_console_token_opens_the_apps_endpoints() -> None:
    async def main() -> None:
        console = make_console()
        routes = [("GET", "/console/api/apps"), ("GET", "/console/api/apps/show?id=1001")]
        routes += [
            ("POST", "/console/api/apps" + path) for path, m in ROUTES.items() if m == "POST"
        ]
        for method, path in routes:
            body = {"id": "1001"}
            status, answer = await call(console, method, path, body, APP_LOGIN)
            assert status == 403 and "console token" in answer["error"], path
            status, answer = await call(console, method, path, body, basic("1002", "secret-1002"))
            assert status == 403, path
            for refused in ({}, {"authorization": "Bearer wrong"}, basic("1001", "nope")):
                assert (await call(console, method, path, body, refused))[0] == 401, path
        # The state tells the page which login it has: the Apps tab shows for the operator only.
        status, state = await call(console, "GET", "/console/api/state", None, APP_LOGIN)
        assert status == 200 and state["operator"] is False and state["apps"] == ["1001"]
        status, state = await call(console, "GET", "/console/api/state")
        assert status == 200 and state["operator"] is True and state["apps"] == ["1001", "1002"]
        # An app login's own console keeps working.
        status, _ = await call(
            console, "POST", "/console/api/trigger", {"channel": "c", "event": "e"}, APP_LOGIN
        )
        assert status == 200

    asyncio.run(main())


def test_without_a_token_nobody_manages_apps() -> None:
    async def main() -> None:
        adapter = LocalAdapter()
        console = Console({"1001": App(CONFIGURED[0], adapter)}, None, 0.0)
        assert (await call(console, "GET", "/console/api/apps", None, {}))[0] == 401
        assert (
            await call(console, "GET", "/console/api/apps", None, {"authorization": "Bearer "})
        )[0] == 401
        assert (await call(console, "GET", "/console/api/apps", None, APP_LOGIN))[0] == 403

    asyncio.run(main())


# --- the config store: read-only -------------------------------------------------------------


def test_the_config_store_is_listed_read_only_and_says_why() -> None:
    async def main() -> None:
        console = make_console()
        status, listing = await call(console, "GET", "/console/api/apps")
        assert status == 200
        assert listing["read_only"] is True and listing["store"] == "config"
        assert 'app_store = "config" is read-only' in listing["reason"]
        assert [a["id"] for a in listing["apps"]] == ["1001", "1002"]
        assert listing["apps"][1]["settings"]["name"] == "Second"
        assert "secret" not in orjson.dumps(listing).decode()
        assert listing["options"]["max_connections"] == 0
        assert listing["options"]["client_events"] is True

        status, shown = await call(console, "GET", "/console/api/apps/show?id=1002")
        assert status == 200 and "secret" not in shown
        status, shown = await call(console, "GET", "/console/api/apps/show?id=1002&secrets=1")
        assert status == 200 and shown["secret"] == "secret-1002"

        for route, body in (
            ("add", {"id": "9", "key": "k9", "secret": "s9"}),
            ("set", {"id": "1001", "options": {"name": "x"}}),
            ("disable", {"id": "1001"}),
            ("enable", {"id": "1001"}),
            ("remove", {"id": "1001"}),
            ("rotate-secret", {"id": "1001"}),
        ):
            status, answer = await call(console, "POST", f"/console/api/apps/{route}", body)
            assert status == 409 and "read-only" in answer["error"], route
        assert (await call(console, "GET", "/console/api/apps/show?id=nope"))[0] == 404

    asyncio.run(main())


# --- a database store: every operation --------------------------------------------------------


def test_every_operation_of_the_cli_on_a_sqlite_store(tmp_path: Path) -> None:
    async def scenario(console: Console, store: AppStore, applied: list[str]) -> None:
        status, listing = await call(console, "GET", "/console/api/apps")
        assert status == 200 and listing["read_only"] is False and "reason" not in listing
        assert listing["apps"] == [] and listing["store"].startswith("sqlite:///")

        # add: option values given as text are read like the CLI's flags.
        body = {
            "id": "shop",
            "key": "shop-key",
            "secret": "shop-secret",
            "options": {
                "name": "Shop",
                "max_connections": "10",
                "client_events": "false",
                "allowed_origins": '["https://shop.example.com"]',
                "webhooks": [{"url": "https://example.com/hook"}],
            },
        }
        status, added = await call(console, "POST", "/console/api/apps/add", body)
        assert status == 200, added
        assert added["id"] == "shop" and added["key"] == "shop-key" and "secret" not in added
        stored = await store.get("shop")
        assert stored is not None and stored.config.secret == "shop-secret"
        assert stored.config.max_connections == 10 and stored.config.client_events is False
        assert list(stored.config.allowed_origins) == ["https://shop.example.com"]
        assert stored.config.webhooks[0].url == "https://example.com/hook"
        assert applied == ["shop"]

        status, listing = await call(console, "GET", "/console/api/apps")
        assert [a["id"] for a in listing["apps"]] == ["shop"]
        assert "shop-secret" not in orjson.dumps(listing).decode()

        # show: the secret only when asked.
        status, shown = await call(console, "GET", "/console/api/apps/show?id=shop")
        assert status == 200 and "secret" not in shown and shown["options"]["name"] == "Shop"
        status, shown = await call(console, "GET", "/console/api/apps/show?id=shop&secrets=1")
        assert shown["secret"] == "shop-secret"

        # set: the key and options; reset returns an option to its default.
        body = {"id": "shop", "options": {"key": "shop-key-2", "max_connections": "20"}}
        status, changed = await call(console, "POST", "/console/api/apps/set", body)
        assert status == 200 and changed["key"] == "shop-key-2"
        assert changed["settings"]["max_connections"] == 20
        status, changed = await call(
            console, "POST", "/console/api/apps/set", {"id": "shop", "reset": ["max-connections"]}
        )
        assert status == 200 and changed["settings"]["max_connections"] == 0
        assert "max_connections" not in changed["options"] and changed["options"]["name"] == "Shop"

        # disable, enable.
        status, changed = await call(console, "POST", "/console/api/apps/disable", {"id": "shop"})
        assert status == 200 and changed["enabled"] is False
        assert (await store.get("shop")).config.enabled is False  # type: ignore[union-attr]
        status, changed = await call(console, "POST", "/console/api/apps/enable", {"id": "shop"})
        assert status == 200 and changed["enabled"] is True

        # rotate-secret: a random one by default, with the configured grace period.
        status, rotated = await call(
            console, "POST", "/console/api/apps/rotate-secret", {"id": "shop"}
        )
        assert status == 200 and len(rotated["secret"]) == 32
        assert rotated["previous_secret_expires_at"] and "previous_secret" not in rotated
        app = await store.get("shop")
        assert app is not None and app.config.secret == rotated["secret"]
        assert app.previous_secret == "shop-secret"
        assert app.previous_secret_expires_at == pytest.approx(app.updated_at + 120.0)
        # A given secret and grace 0: the old one is invalid at once.
        body = {"id": "shop", "secret": "chosen-secret", "grace": 0}
        status, rotated = await call(console, "POST", "/console/api/apps/rotate-secret", body)
        assert status == 200 and rotated["secret"] == "chosen-secret"
        assert "previous_secret_expires_at" not in rotated
        status, shown = await call(console, "GET", "/console/api/apps/show?id=shop&secrets=1")
        assert shown["secret"] == "chosen-secret"

        # remove.
        status, answer = await call(console, "POST", "/console/api/apps/remove", {"id": "shop"})
        assert (status, answer) == (200, {"removed": "shop"})
        assert await store.get("shop") is None
        assert (await call(console, "GET", "/console/api/apps/show?id=shop"))[0] == 404
        assert applied == ["shop"] * 8

    with_sqlite(tmp_path, scenario)


def test_bad_input_gets_a_clear_error_and_changes_nothing(tmp_path: Path) -> None:
    async def scenario(console: Console, store: AppStore, applied: list[str]) -> None:
        await store.add(AppConfig(id="a", key="key-a", secret="secret-a"))
        before = await store.cursor()

        async def post(route: str, body: Any) -> tuple[int, str]:
            status, answer = await call(console, "POST", f"/console/api/apps/{route}", body)
            assert set(answer) == {"error", "status"} and answer["status"] == status
            return status, answer["error"]

        add = {"id": "b", "key": "key-b", "secret": "secret-b"}
        refused = [
            ("add", b"not json", 400, "JSON object"),
            ("add", [1], 400, "JSON object"),
            ("add", {"key": "k", "secret": "s"}, 400, "'id' is required"),
            ("add", {**add, "id": 5}, 400, "'id' is required"),
            ("add", {**add, "secret": ""}, 400, "'secret' is required"),
            ("add", {**add, "key": "key-a"}, 409, "already used by app 'a'"),
            ("add", {**add, "id": "a"}, 409, "already exists"),
            ("add", {**add, "options": {"max_conections": 5}}, 400, "did you mean"),
            ("add", {**add, "options": {"max_connections": "-1"}}, 400, "max_connections"),
            ("add", {**add, "options": {"client_events": "maybe"}}, 400, "client_events"),
            ("add", {**add, "options": {"webhooks": "[{]"}}, 400, "webhooks"),
            ("add", {**add, "options": ["name"]}, 400, "'options' must be an object"),
            ("add", {**add, "options": {"secret": "x"}}, 400, "field of its own"),
            ("add", {**add, "id": "x" * 300}, 400, "id: at most 255 bytes"),
            ("add", {**add, "options": {"name": "my\nshop"}}, 400, "an app name is 1 to 255"),
            ("set", {"id": "a"}, 400, "at least one option"),
            ("set", {"id": "a", "options": {"secret": "x"}}, 400, "rotate-secret"),
            ("set", {"id": "a", "options": {"id": "b"}}, 400, "id cannot change"),
            ("set", {"id": "a", "options": {"nme": "x"}}, 400, "did you mean 'name'"),
            ("set", {"id": "a", "reset": "name"}, 400, "list of option names"),
            ("set", {"id": "a", "reset": ["key"]}, 400, "no default"),
            ("set", {"id": "nope", "options": {"name": "x"}}, 404, "no app with id 'nope'"),
            ("disable", {"id": "nope"}, 404, "no app with id"),
            ("enable", {}, 400, "'id' is required"),
            ("remove", {"id": "nope"}, 404, "no app with id"),
            ("rotate-secret", {"id": "nope"}, 404, "no app with id"),
            ("rotate-secret", {"id": "a", "grace": "soon"}, 400, "'grace'"),
            ("rotate-secret", {"id": "a", "grace": True}, 400, "'grace'"),
            ("rotate-secret", {"id": "a", "grace": -1}, 400, "grace: seconds, from 0 to 86400"),
            ("rotate-secret", {"id": "a", "grace": 1e300}, 400, "grace: seconds, from 0"),
            ("rotate-secret", b'{"id": "a", "grace": 1%s}' % (b"0" * 30), 400, "grace: seconds"),
            ("rotate-secret", {"id": "a", "secret": 5}, 400, "'secret' must be text"),
            ("rotate-secret", {"id": "a", "secret": "secret-a"}, 400, "is the current one"),
        ]
        for route, body, status, message in refused:
            got = await post(route, body)
            assert got[0] == status and message in got[1], (route, body, got)
            assert "secret-a" not in got[1]
        assert await store.cursor() == before and applied == []
        assert [a.id for a in await store.list_apps()] == ["a"]

        assert (await call(console, "GET", "/console/api/apps/add"))[0] == 405
        assert (await call(console, "POST", "/console/api/apps", {}))[0] == 405
        assert (await call(console, "GET", "/console/api/apps/nope"))[0] == 404
        assert (await call(console, "GET", "/console/api/apps/show"))[0] == 404

    with_sqlite(tmp_path, scenario)


def test_a_failed_apply_keeps_the_change(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    async def scenario(console: Console, store: AppStore, applied: list[str]) -> None:
        async def broken(app_id: str) -> None:
            raise RuntimeError("the bus is away")

        console.apps_admin.applied = broken
        body = {"id": "a", "key": "key-a", "secret": "secret-a"}
        with caplog.at_level(logging.ERROR, "pyserver.console"):
            status, _ = await call(console, "POST", "/console/api/apps/add", body)
        assert status == 200 and await store.get("a") is not None
        assert "app a was changed but not applied at once" in caplog.text

    with_sqlite(tmp_path, scenario)


def test_store_errors_map_to_statuses_once() -> None:
    assert store_error(UnknownApp("x")).status == 404
    assert store_error(DuplicateApp.of_id("x")).status == 409
    assert store_error(ReadOnlyStore()).status == 409
    assert store_error(InvalidApp("name: bad")).status == 400
    assert store_error(StoreUnavailable("sqlite:///x: gone")).status == 503
    assert store_error(DriverMissing("install it")).status == 503


def test_a_database_gone_bad_is_a_503_with_the_stores_message(tmp_path: Path) -> None:
    async def scenario(console: Console, store: AppStore, applied: list[str]) -> None:
        await store.add(AppConfig(id="a", key="key-a", secret="secret-a"))
        for path in tmp_path.iterdir():  # the file (and its journal) overwritten under it
            path.write_bytes(b"\xff" * max(path.stat().st_size, 100))
        status, answer = await call(console, "GET", "/console/api/apps")
        assert status == 503 and "is unavailable" in answer["error"]
        body = {"id": "b", "key": "key-b", "secret": "secret-b"}
        status, answer = await call(console, "POST", "/console/api/apps/add", body)
        assert status == 503 and "secret-b" not in answer["error"] and applied == []

    with_sqlite(tmp_path, scenario)


def test_an_operator_signs_in_with_no_app_served() -> None:
    async def main() -> None:
        console = make_console([])
        status, state = await call(console, "GET", "/console/api/state")
        assert status == 200 and state["apps"] == [] and state["app"] == ""
        assert state["operator"] is True and state["channels"] == []
        assert (await call(console, "GET", "/console/api/stats"))[0] == 404

    asyncio.run(main())


def test_while_the_store_is_not_open_every_route_says_why(tmp_path: Path) -> None:
    async def scenario(console: Console, store: AppStore, applied: list[str]) -> None:
        reason: list[str | None] = ["app store sqlite:///x is unavailable: it is away"]
        console.apps_admin.unusable = lambda: reason[0]
        for method, path in (("GET", ""), ("GET", "/show?id=a"), ("POST", "/remove")):
            status, answer = await call(console, method, "/console/api/apps" + path, {"id": "a"})
            assert (status, answer["error"]) == (503, reason[0])
        reason[0] = None
        assert (await call(console, "GET", "/console/api/apps"))[0] == 200

    with_sqlite(tmp_path, scenario)


def test_the_longest_rotation_grace_is_the_settings_longest() -> None:
    from pyserver.apps.sql import MAX_GRACE
    from pyserver.config import Settings

    limits = Settings.model_fields["secret_rotation_grace"].metadata
    assert [getattr(m, "le", None) for m in limits if getattr(m, "le", None)] == [MAX_GRACE]


def test_an_expiry_that_is_no_date_is_shown_as_a_number(tmp_path: Path) -> None:
    async def scenario(console: Console, store: AppStore, applied: list[str]) -> None:
        await store.add(AppConfig(id="a", key="key-a", secret="secret-a"))
        await store.rotate_secret("a", "secret-b", 60)
        sql = store.driver  # type: ignore[attr-defined]
        await sql.execute("UPDATE pyserver_apps SET previous_secret_expires_at = 1e300")
        status, listing = await call(console, "GET", "/console/api/apps")
        assert status == 200 and listing["apps"][0]["previous_secret_expires_at"] == "1e+300"

    with_sqlite(tmp_path, scenario)
