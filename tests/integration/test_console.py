"""Issue 7 item 7: the live debug console, through its JSON API and in real headless
Chromium (Debian's chromium driven by playwright-core, `tests/js/console_screenshot.mjs`),
with screenshots kept in test-artifacts/console.png and console-filtered.png."""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.integration.conftest import PusherSocket, sdk
from tests.integration.httpapi import request
from tests.integration.serverproc import ROOT, ServerProcess
from tests.integration.webhook_receiver import WebhookReceiver

TOKEN = "t0ken-for-the-console"
CONFIG = """
console_token = "{token}"

[[apps]]
id = "1001"
key = "app-key"
secret = "app-secret"

[[apps.webhooks]]
url = "{hook}"
event_types = ["channel_occupied"]

[[apps]]
id = "1002"
key = "other-key"
secret = "other-secret"
"""
BEARER = {"Authorization": f"Bearer {TOKEN}"}


def basic(app_id: str, secret: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{app_id}:{secret}".encode()).decode()}


APP = basic("1001", "app-secret")


@pytest.fixture(scope="module")
def receiver() -> Iterator[WebhookReceiver]:
    r = WebhookReceiver()
    yield r
    r.close()


@pytest.fixture(scope="module")
def console_server(receiver: WebhookReceiver) -> Iterator[ServerProcess]:
    proc = ServerProcess(CONFIG.format(token=TOKEN, hook=receiver.url("/hooks")))
    yield proc
    proc.stop()


def _state(port: int, headers: dict[str, str], query: str = "") -> tuple[int, Any]:
    status, body, _ = request(port, "GET", "/console/api/state" + query, headers=headers)
    return status, body


def _trigger(port: int, body: Any, headers: dict[str, str] = APP) -> tuple[int, Any]:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    status, value, _ = request(port, "POST", "/console/api/trigger", raw, headers=headers)
    return status, value


def _events_until(port: int, predicate: Any, timeout: float = 5.0) -> list[dict[str, Any]]:
    """The console's events for app 1001, polled until one satisfies `predicate`."""
    deadline = time.monotonic() + timeout
    while True:
        events = _state(port, APP)[1]["events"]
        if any(predicate(e) for e in events) or time.monotonic() > deadline:
            return events
        time.sleep(0.05)


def test_page_is_served(console_server) -> None:
    status, body, response = request(console_server.port, "GET", "/console")
    assert status == 200 and b"debug console" in body
    assert response.getheader("Content-Type").startswith("text/html")
    assert response.getheader("Cache-Control") == "no-store"
    assert "script-src 'sha256-" in response.getheader("Content-Security-Policy")
    assert request(console_server.port, "POST", "/console")[0] == 405


def test_credentials_are_required(console_server) -> None:
    port = console_server.port
    for headers in (
        {},
        basic("1001", "wrong"),
        basic("1001", ""),
        basic("9999", "app-secret"),
        basic("1002", "app-secret"),  # another app's secret
        {"Authorization": "Bearer nope"},
        {"Authorization": "Basic !!not-base64!!"},
        {"Authorization": "Basic \xe9\xe9"},  # not ASCII: b64decode raises ValueError
        {"Authorization": "app-secret"},
    ):
        status, body = _state(port, headers)
        assert status == 401 and "error" in body, headers
    assert _trigger(port, {"channel": "c", "event": "e"}, {})[0] == 401
    status, body = _state(port, APP)
    assert status == 200 and body["apps"] == ["1001"] and body["app"] == "1001"
    assert _state(port, APP, "?app=1002")[0] == 404  # an app login sees only its app
    status, body = _state(port, BEARER)
    assert status == 200 and body["apps"] == ["1001", "1002"]
    status, other = _state(port, BEARER, "?app=1002")
    assert status == 200 and other["app"] == "1002"
    text = json.dumps([body, other])
    assert "app-secret" not in text and "other-secret" not in text and TOKEN not in text
    assert request(port, "GET", "/console/api/nope", headers=APP)[0] == 404
    assert request(port, "POST", "/console/api/state", headers=APP)[0] == 405


def test_live_state_events_and_trigger(console_server, receiver, uid) -> None:
    port = console_server.port
    room = f"presence-room-{uid}"
    watcher = PusherSocket(port)
    watcher.signed_subscribe(room, "alice", {"name": "Alice"})
    other = PusherSocket(port)
    other.signed_subscribe(room, "bob")
    watcher.recv_event("pusher_internal:member_added")
    public = PusherSocket(port)
    public.subscribe(f"news-{uid}")
    sdk(port).trigger(room, "from-api", {"n": 1})
    other.send_json({"event": "client-typing", "channel": room, "data": {"typing": True}})
    watcher.recv_event("client-typing")

    status, state = _state(port, APP)
    assert status == 200 and state["connections"] >= 3
    listed = {c["name"]: c for c in state["channels"]}
    assert (
        listed[room]["local_subscribers"] == listed[room]["subscribers"] == 2
        and listed[room]["type"] == "presence"
    )
    assert listed[room]["members"] == {"alice": {"name": "Alice"}, "bob": None}
    assert listed[f"news-{uid}"] == {
        "name": f"news-{uid}",
        "type": "public",
        "subscribers": 1,
        "local_subscribers": 1,
    }
    assert state["channel_total"] >= 2 and state["last_seq"] >= state["events"][-1]["seq"]

    # The channel filter narrows the channel list on the server.
    narrowed = _state(port, APP, f"?channel=NEWS-{uid}")[1]
    assert [c["name"] for c in narrowed["channels"]] == [f"news-{uid}"]
    assert narrowed["channel_total"] == 1 and narrowed["channel_count"] >= 2

    mine = [e for e in state["events"] if uid in e["channel"]]
    kinds = {(e["kind"], e["event"]) for e in mine}
    assert {
        ("api", "from-api"),
        ("client", "client-typing"),
        ("presence", "member_added"),
        ("channel", "occupied"),
        ("subscribe", "subscriptions"),
    } <= kinds
    client = next(e for e in mine if e["kind"] == "client")
    assert client["data"] == '{"typing":true}' and client["user_id"] == "bob"
    assert client["socket_id"] == other.socket_id
    api = next(e for e in mine if e["kind"] == "api")
    assert json.loads(api["data"]) == {"n": 1}
    assert {e["user_id"] for e in mine if e["event"] == "member_added"} == {"alice", "bob"}
    seqs = [e["seq"] for e in state["events"]]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)

    # `since` returns only newer events (webhook deliveries may be recorded meanwhile).
    last = state["events"][-1]["seq"]
    assert all(e["seq"] > last for e in _state(port, APP, f"?since={last}")[1]["events"])
    assert _state(port, APP, f"?since={seqs[0] - 1}")[1]["events"][0]["seq"] == seqs[0]
    assert _state(port, APP, "?since=x")[0] == 400

    # Webhook deliveries are recorded too, with the channels they are about.
    receiver.wait_for(lambda e: e.get("channel") == room, path="/hooks")
    events = _events_until(port, lambda e: e["kind"] == "webhook" and room in e["channel"])
    hook = next(e for e in events if e["kind"] == "webhook" and room in e["channel"])
    assert (hook["event"], hook["outcome"]) == ("channel_occupied", "delivered")
    assert hook["url"].endswith("/hooks") and room in hook["data"]

    # The trigger form's endpoint publishes like the HTTP API.
    status, body = _trigger(port, {"channel": room, "event": "from-console", "data": '{"x":1}'})
    assert (status, body) == (200, {"ok": True})
    assert watcher.recv_event("from-console")["data"] == '{"x":1}'
    assert other.recv_event("from-console")["data"] == '{"x":1}'
    after = _state(port, APP, f"?since={last}")[1]["events"]
    assert ("api", room, "from-console") in {(e["kind"], e["channel"], e["event"]) for e in after}
    # With the token, pick the app in the body.
    status, _ = _trigger(
        port, {"app": "1001", "channel": room, "event": "e2", "data": "{}"}, BEARER
    )
    assert status == 200 and watcher.recv_event("e2")["data"] == "{}"
    assert _trigger(port, {"app": "1002", "channel": room, "event": "e", "data": "{}"})[0] == 404

    # Refused: bad channel or event names, a body that is not an object, oversized data.
    assert _trigger(port, {"channel": "bad name", "event": "e", "data": ""})[0] == 400
    assert _trigger(port, {"channel": "", "event": "e", "data": ""})[0] == 400
    assert _trigger(port, {"channel": "x" * 201, "event": "e", "data": ""})[0] == 400
    assert _trigger(port, {"channel": "c", "event": "", "data": ""})[0] == 400
    assert _trigger(port, b"not json")[0] == 400
    assert _trigger(port, [1, 2])[0] == 400
    status, body = _trigger(port, {"channel": "c", "event": "e", "data": "x" * 20_000})
    assert status == 413 and "error" in body
    for sock in (watcher, other, public):
        sock.close()


def test_console_in_headless_chromium(console_server, uid) -> None:
    assert shutil.which("chromium"), "chromium is missing: scripts/test.sh installs it"
    port = console_server.port
    subscriber = PusherSocket(port)
    channel = f"browser-{uid}"
    subscriber.subscribe(channel)
    members = [PusherSocket(port), PusherSocket(port)]
    members[0].signed_subscribe(f"presence-lobby-{uid}", "carol", {"name": "Carol"})
    members[1].signed_subscribe(f"presence-lobby-{uid}", "dave", {"name": "Dave"})
    sdk(port).trigger(f"presence-lobby-{uid}", "score", {"carol": 3, "dave": 5})
    members[0].send_json(
        {"event": "client-wave", "channel": f"presence-lobby-{uid}", "data": {"to": "dave"}}
    )
    out = ROOT / "test-artifacts" / "console.png"
    filtered = ROOT / "test-artifacts" / "console-filtered.png"
    out.unlink(missing_ok=True)
    filtered.unlink(missing_ok=True)
    result = subprocess.run(
        [
            "node",
            str(ROOT / "tests" / "js" / "console_screenshot.mjs"),
            f"http://127.0.0.1:{port}/console",
            "1001",
            "app-secret",
            channel,
            str(out),
            "--member=dave",
            f"--token={TOKEN}",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT / "tests" / "js",
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    assert json.loads(result.stdout.strip().splitlines()[-1])["apps"] == 2
    received = subscriber.recv_event("from-console", timeout=5)
    assert json.loads(received["data"]) == {"hello": "browser"}
    assert out.stat().st_size > 20_000, "the screenshot looks empty"
    assert filtered.stat().st_size > 10_000, "the filtered screenshot looks empty"
    for sock in (subscriber, *members):
        sock.close()


def test_feed_is_a_bounded_numbered_ring() -> None:
    """Recording keeps the arguments as given; formatting waits for `since`."""
    from pyserver.console.feed import PREVIEW, EventFeed

    feed = EventFeed(per_app=3)
    for n in range(5):
        feed.client_event("a", "private-c", f"client-{n}", "x" * 600, "1.2", None)
    feed.api_event("b", "c", "e", "{}")
    served = feed.since("a", 0)
    assert [e["event"] for e in served] == ["client-2", "client-3", "client-4"]
    assert [e["seq"] for e in served] == [3, 4, 5] and feed.last_seq == 6
    assert len(served[0]["data"]) == PREVIEW and served[0]["socket_id"] == "1.2"
    assert "user_id" not in served[0]
    assert [e["event"] for e in feed.since("a", 4)] == ["client-4"]
    assert feed.since("a", 5) == [] and feed.since("nobody", 0) == []
    assert [e["seq"] for e in feed.since("b", 0)] == [6]
    feed.webhook_attempt("a", "http://h/x", b"not json", "HTTP 500")
    hook = feed.since("a", 5)[0]
    assert (hook["event"], hook["outcome"], hook["channel"]) == ("webhook", "HTTP 500", "")
