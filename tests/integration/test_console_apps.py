"""Issue 15 item 4: the console's Apps page against a real server with a SQLite app store
(a temporary file), over HTTP and in real headless Chromium (`tests/js/apps_page.mjs`,
with a real pusher-js client and the Node SDK next to the page); and read-only with
`app_store = "config"`. The screenshot is kept in test-artifacts/console-apps.png.

`app_store_refresh` is long here, so what happens "at once" is the console's change being
applied by the server that answered, never the periodic refresh."""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.conftest import WS_QUERY, AppCreds, PusherSocket, sdk
from tests.integration.httpapi import request
from tests.integration.rawws import RawWebSocket
from tests.integration.serverproc import ROOT, ServerProcess

TOKEN = "t0ken-for-the-apps-page"
SEEDED = AppCreds("1001", "seeded-key", "seeded-secret")
CONFIG = """
console_token = "{token}"
app_store = "{store}"
app_store_refresh = 600
secret_rotation_grace = 30

[[apps]]
id = "{app.id}"
key = "{app.key}"
secret = "{app.secret}"
"""
BEARER = {"Authorization": f"Bearer {TOKEN}"}


def basic(app: AppCreds) -> dict[str, str]:
    return {
        "Authorization": "Basic " + base64.b64encode(f"{app.id}:{app.secret}".encode()).decode()
    }


def _server(store: str) -> ServerProcess:
    return ServerProcess(CONFIG.format(token=TOKEN, store=store, app=SEEDED))


@pytest.fixture(scope="module")
def store_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    path = tmp_path_factory.mktemp("apps") / "apps.db"
    proc = _server(f"sqlite:///{path}")  # the [[apps]] seed the new store
    yield proc
    proc.stop()


def _call(
    port: int, method: str, path: str, body: Any = None, headers: dict[str, str] = BEARER
) -> tuple[int, Any]:
    raw = b"" if body is None else json.dumps(body).encode()
    status, value, _ = request(port, method, path, raw, headers=headers)
    return status, value


def _page(port: int, out: Path, *flags: str) -> dict[str, Any]:
    assert shutil.which("chromium"), "chromium is missing: scripts/test.sh installs it"
    out.unlink(missing_ok=True)
    result = subprocess.run(
        [
            "node",
            str(ROOT / "tests" / "js" / "apps_page.mjs"),
            f"http://127.0.0.1:{port}/console",
            TOKEN,
            SEEDED.id,
            SEEDED.secret,
            str(out),
            *flags,
        ],
        capture_output=True,
        text=True,
        timeout=150,
        cwd=ROOT / "tests" / "js",
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    answer: dict[str, Any] = json.loads(result.stdout.strip().splitlines()[-1])
    assert answer["ok"] is True
    return answer


def test_an_app_login_keeps_its_console_and_gets_403_from_the_apps_endpoints(
    store_server: ServerProcess,
) -> None:
    port = store_server.port
    app = basic(SEEDED)
    status, state = _call(port, "GET", "/console/api/state", None, app)
    assert status == 200 and state["apps"] == [SEEDED.id] and state["operator"] is False
    for method, path in [
        ("GET", "/console/api/apps"),
        ("GET", f"/console/api/apps/show?id={SEEDED.id}&secrets=1"),
        ("POST", "/console/api/apps/add"),
        ("POST", "/console/api/apps/set"),
        ("POST", "/console/api/apps/disable"),
        ("POST", "/console/api/apps/enable"),
        ("POST", "/console/api/apps/remove"),
        ("POST", "/console/api/apps/rotate-secret"),
    ]:
        status, answer = _call(port, method, path, {"id": SEEDED.id}, app)
        assert status == 403 and "console token" in answer["error"], path
        assert SEEDED.secret not in json.dumps(answer)
        assert _call(port, method, path, {"id": SEEDED.id}, {})[0] == 401, path
    status, state = _call(port, "GET", "/console/api/state")
    assert status == 200 and state["operator"] is True
    # Nothing was changed by the refused requests.
    status, shown = _call(port, "GET", f"/console/api/apps/show?id={SEEDED.id}&secrets=1")
    assert status == 200 and shown["enabled"] is True and shown["secret"] == SEEDED.secret


def test_changes_over_http_apply_at_once(store_server: ServerProcess, uid: str) -> None:
    port = store_server.port
    app = AppCreds(uid.replace("-", ""), f"http-key-{uid}", f"http-secret-{uid}")
    status, listing = _call(port, "GET", "/console/api/apps")
    assert status == 200 and listing["read_only"] is False
    assert listing["store"].startswith("sqlite:///") and SEEDED.id in [
        a["id"] for a in listing["apps"]
    ]

    body = {"id": app.id, "key": app.key, "secret": app.secret, "options": {"name": "HTTP"}}
    status, added = _call(port, "POST", "/console/api/apps/add", body)
    assert status == 200 and added["id"] == app.id and "secret" not in added
    sock = PusherSocket(port, app)  # at once, not after app_store_refresh
    assert sock.subscribe(f"news-{uid}")["event"] == "pusher_internal:subscription_succeeded"
    sdk(port, app).trigger(f"news-{uid}", "hello", {"n": 1})
    assert json.loads(sock.recv_event("hello")["data"]) == {"n": 1}

    status, answer = _call(
        port,
        "POST",
        "/console/api/apps/set",
        {"id": app.id, "options": {"max_connections": "nope"}},
    )
    assert status == 400 and "max_connections" in answer["error"]

    status, _ = _call(port, "POST", "/console/api/apps/disable", {"id": app.id})
    assert status == 200
    assert sock.expect_close().code == 4003
    refused = RawWebSocket(port, f"/app/{app.key}{WS_QUERY}")
    assert refused.expect_close().code == 4003

    status, _ = _call(port, "POST", "/console/api/apps/enable", {"id": app.id})
    assert status == 200
    PusherSocket(port, app).close()

    status, rotated = _call(port, "POST", "/console/api/apps/rotate-secret", {"id": app.id})
    assert status == 200 and len(rotated["secret"]) == 32
    new = AppCreds(app.id, app.key, rotated["secret"])
    assert sdk(port, new).trigger(f"news-{uid}", "e", {}) is not None  # signed with the new one
    assert sdk(port, app).trigger(f"news-{uid}", "e", {}) is not None  # the old: grace period

    status, _ = _call(port, "POST", "/console/api/apps/remove", {"id": app.id})
    assert status == 200
    assert RawWebSocket(port, f"/app/{app.key}{WS_QUERY}").expect_close().code == 4001
    assert _call(port, "GET", f"/console/api/apps/show?id={app.id}")[0] == 404


def test_the_apps_page_in_headless_chromium(store_server: ServerProcess) -> None:
    out = ROOT / "test-artifacts" / "console-apps.png"
    result = _page(store_server.port, out)
    assert result["app_login_status"] == 403
    assert result["close_code"] == 4003
    assert len(result["new_secret"]) == 32 and "valid until" in result["rotation_note"]
    assert result["trigger_new_secret"] == 200 and result["trigger_made_up_secret"] == 401
    assert "already used by app" in result["duplicate"]
    assert "did you mean" in result["unknown_option"]
    assert "max_connections" in result["bad_value"]
    shown = _call(store_server.port, "GET", f"/console/api/apps/show?id={result['id']}")
    assert shown[0] == 404  # removed in the page
    assert out.stat().st_size > 20_000, "the screenshot looks empty"


def test_with_the_config_store_the_page_is_read_only_and_says_why() -> None:
    proc = _server("config")
    try:
        status, listing = _call(proc.port, "GET", "/console/api/apps")
        assert status == 200 and listing["read_only"] is True
        assert [a["id"] for a in listing["apps"]] == [SEEDED.id]
        status, answer = _call(proc.port, "POST", "/console/api/apps/disable", {"id": SEEDED.id})
        assert status == 409 and "read-only" in answer["error"]
        PusherSocket(proc.port, SEEDED).close()  # still served
        result = _page(proc.port, ROOT / "test-artifacts" / "console-apps-config.png", "--readonly")
        assert 'app_store = "config" is read-only' in result["notice"]
    finally:
        proc.stop()


def test_a_store_away_at_start_answers_503_until_it_opens(tmp_path: Path) -> None:
    folder = tmp_path / "not-yet"  # SQLite cannot open a file in a missing directory
    config = CONFIG.format(token=TOKEN, store=f"sqlite:///{folder / 'apps.db'}", app=SEEDED)
    proc = ServerProcess(config.replace("app_store_refresh = 600", "app_store_refresh = 0.2"))
    try:
        status, answer = _call(proc.port, "GET", "/console/api/apps")
        assert status == 503 and "not-yet" in answer["error"], answer
        body = {"id": "2002", "key": "k2002", "secret": "s2002"}
        assert _call(proc.port, "POST", "/console/api/apps/add", body)[0] == 503
        status, state = _call(proc.port, "GET", "/console/api/state")
        assert status == 200 and state["operator"] is True  # the operator still signs in
        folder.mkdir()
        deadline = time.monotonic() + 10
        while (status := _call(proc.port, "GET", "/console/api/apps")[0]) != 200:
            assert time.monotonic() < deadline, status
            time.sleep(0.1)
        status, listing = _call(proc.port, "GET", "/console/api/apps")
        assert [a["id"] for a in listing["apps"]] == [SEEDED.id]  # seeded when it opened
        assert _call(proc.port, "POST", "/console/api/apps/add", body)[0] == 200
        PusherSocket(proc.port, AppCreds("2002", "k2002", "s2002")).close()
    finally:
        proc.stop()


def test_on_an_empty_store_the_operator_adds_the_first_app_in_the_page(tmp_path: Path) -> None:
    config = f'console_token = "{TOKEN}"\napp_store = "sqlite:///{tmp_path / "apps.db"}"\n'
    proc = ServerProcess(config + "app_store_refresh = 600\n")  # no [[apps]]: nothing seeded
    try:
        status, state = _call(proc.port, "GET", "/console/api/state")
        assert status == 200 and state["apps"] == [] and state["operator"] is True
        result = _page(proc.port, ROOT / "test-artifacts" / "console-apps-empty.png", "--empty")
        PusherSocket(proc.port, AppCreds(result["id"], result["key"], "")).close()
    finally:
        proc.stop()
