"""Issue 7 item 7: the live debug console, through its JSON API and in real headless
Chromium (Debian's chromium driven by playwright-core), with a screenshot kept in
test-artifacts/console.png."""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
import time

import pytest

from tests.integration.conftest import PusherSocket, sdk
from tests.integration.httpapi import request
from tests.integration.serverproc import ROOT, ServerProcess

CONFIG = """
console_token = "t0ken"

[[apps]]
id = "1001"
key = "app-key"
secret = "app-secret"

[[apps]]
id = "1002"
key = "other-key"
secret = "other-secret"
"""


def basic(app_id: str, secret: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{app_id}:{secret}".encode()).decode()}


@pytest.fixture(scope="module")
def console_server():
    proc = ServerProcess(CONFIG)
    yield proc
    proc.stop()


def _state(port: int, headers: dict[str, str], query: str = "") -> tuple[int, dict]:
    status, body, _ = request(port, "GET", "/console/api/state" + query, headers=headers)
    return status, body


def test_page_is_served(console_server) -> None:
    status, body, response = request(console_server.port, "GET", "/console")
    assert status == 200 and b"debug console" in body
    assert response.getheader("Content-Type").startswith("text/html")


def test_credentials_are_required(console_server) -> None:
    assert _state(console_server.port, {})[0] == 401
    assert _state(console_server.port, basic("1001", "wrong"))[0] == 401
    assert _state(console_server.port, {"Authorization": "Bearer nope"})[0] == 401
    status, body = _state(console_server.port, basic("1001", "app-secret"))
    assert status == 200 and body["apps"] == ["1001"]
    status, body = _state(console_server.port, {"Authorization": "Bearer t0ken"})
    assert status == 200 and body["apps"] == ["1001", "1002"]
    assert _state(console_server.port, basic("1001", "app-secret"), "?app=1002")[0] == 404
    assert "app-secret" not in json.dumps(body)


def test_live_state_events_and_trigger(console_server, uid) -> None:
    port = console_server.port
    auth = basic("1001", "app-secret")
    watcher = PusherSocket(port)
    watcher.signed_subscribe(f"presence-room-{uid}", "alice")
    other = PusherSocket(port)
    other.signed_subscribe(f"presence-room-{uid}", "bob")
    watcher.recv_event("pusher_internal:member_added")
    sdk(port).trigger(f"presence-room-{uid}", "from-api", {"n": 1})
    other.send_json({"event": "client-typing", "channel": f"presence-room-{uid}", "data": {}})
    watcher.recv_event("client-typing")
    status, state = _state(port, auth)
    assert status == 200 and state["connections"] >= 2
    room = next(c for c in state["channels"] if c["name"] == f"presence-room-{uid}")
    assert room["local_subscribers"] == 2 and set(room["members"]) == {"alice", "bob"}
    kinds = {(e["kind"], e["event"]) for e in state["events"] if uid in e["channel"]}
    assert {
        ("api", "from-api"),
        ("client", "client-typing"),
        ("presence", "member_added"),
        ("channel", "occupied"),
    } <= kinds
    last = max(e["seq"] for e in state["events"])
    assert _state(port, auth, f"?since={last}")[1]["events"] == []
    status, body, _ = request(
        port,
        "POST",
        "/console/api/trigger",
        json.dumps(
            {"channel": f"presence-room-{uid}", "event": "from-console", "data": '{"x":1}'}
        ).encode(),
        headers=auth,
    )
    assert (status, body) == (200, {"ok": True})
    assert watcher.recv_event("from-console")["data"] == '{"x":1}'
    bad = json.dumps({"channel": "bad name", "event": "e", "data": ""}).encode()
    assert request(port, "POST", "/console/api/trigger", bad, headers=auth)[0] == 400
    big = json.dumps({"channel": "c", "event": "e", "data": "x" * 20_000}).encode()
    assert request(port, "POST", "/console/api/trigger", big, headers=auth)[0] == 413
    watcher.close()
    other.close()


def test_console_in_headless_chromium(console_server, uid) -> None:
    assert shutil.which("chromium"), "chromium is missing: scripts/test.sh installs it"
    subscriber = PusherSocket(console_server.port)
    channel = f"browser-{uid}"
    subscriber.subscribe(channel)
    out = ROOT / "test-artifacts" / "console.png"
    out.unlink(missing_ok=True)
    started = time.monotonic()
    result = subprocess.run(
        [
            "node",
            str(ROOT / "tests" / "js" / "console_screenshot.mjs"),
            f"http://127.0.0.1:{console_server.port}/console",
            "1001",
            "app-secret",
            channel,
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT / "tests" / "js",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    received = subscriber.recv_event("from-console", timeout=5)
    assert json.loads(received["data"]) == {"hello": "browser"}
    assert out.stat().st_size > 20_000, "the screenshot looks empty"
    assert time.monotonic() - started < 120
    subscriber.close()
