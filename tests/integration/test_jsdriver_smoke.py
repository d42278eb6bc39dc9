"""Smoke tests for the JS driver itself, against tiny stand-in servers (not pyserver).

A minimal Pusher-speaking WebSocket server (just enough protocol for a subscribe and one event)
proves that real pusher-js 8.x and 7.x clients run under the driver; a plain HTTP server proves
that the Node ``pusher`` SDK signs and sends REST calls through the ``sdk`` command.
"""

from __future__ import annotations

import http.server
import json
import threading
import urllib.parse
from collections.abc import Iterator
from typing import Any

import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.server import Server, ServerConnection, serve

from tests.integration.jsdriver import JsDriver, JsDriverError


def _fake_pusher_handler(conn: ServerConnection) -> None:
    """Speaks just enough of the Pusher protocol: handshake, ping, subscribe + one event."""
    assert conn.request is not None
    if urllib.parse.urlsplit(conn.request.path).path != "/app/app-key":
        conn.close(4001, "unknown app")
        return
    established = {"socket_id": "1.2", "activity_timeout": 30}
    conn.send(
        json.dumps({"event": "pusher:connection_established", "data": json.dumps(established)})
    )
    try:
        for raw in conn:
            msg = json.loads(raw)
            event = msg.get("event")
            if event == "pusher:ping":
                conn.send(json.dumps({"event": "pusher:pong", "data": "{}"}))
            elif event == "pusher:subscribe":
                channel = msg["data"]["channel"]
                conn.send(
                    json.dumps(
                        {
                            "event": "pusher_internal:subscription_succeeded",
                            "channel": channel,
                            "data": "{}",
                        }
                    )
                )
                conn.send(json.dumps({"event": "hello", "channel": channel, "data": '{"a":1}'}))
    except ConnectionClosed:
        pass


@pytest.fixture(scope="module")
def ws_port() -> Iterator[int]:
    server: Server = serve(_fake_pusher_handler, "127.0.0.1", 0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.socket.getsockname()[1]
    finally:
        server.shutdown()
        thread.join(timeout=5)


class _RecordingHandler(http.server.BaseHTTPRequestHandler):
    requests: list[dict[str, Any]] = []

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length).decode()
        url = urllib.parse.urlsplit(self.path)
        self.requests.append(
            {"path": url.path, "query": urllib.parse.parse_qs(url.query), "body": body}
        )
        payload = b"{}"
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, format: str, *args: Any) -> None:  # keep pytest output quiet
        pass


@pytest.fixture(scope="module")
def http_server() -> Iterator[tuple[int, list[dict[str, Any]]]]:
    requests: list[dict[str, Any]] = []
    handler = type("Handler", (_RecordingHandler,), {"requests": requests})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1], requests
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@pytest.fixture(scope="module")
def js() -> Iterator[JsDriver]:
    with JsDriver() as driver:
        yield driver


@pytest.mark.parametrize("version", ["8", "7"])
def test_pusher_js_subscribe_and_receive(js: JsDriver, ws_port: int, version: str) -> None:
    client = f"smoke-v{version}"
    connected = js.connect(client, ws_port, version=version)
    assert connected == {"socket_id": "1.2"}

    sub = js.subscribe(client, "my-channel")
    assert sub["succeeded"] is True

    (entry,) = js.wait(client, type="channel", channel="my-channel", event="hello")
    assert entry["data"] == {"a": 1}

    states = [e["current"] for e in js.events(client) if e["type"] == "state"]
    assert states[:2] == ["connecting", "connected"]
    assert js.call("state", client=client)["state"] == "connected"

    js.call("disconnect", client=client)
    assert js.call("state", client=client)["state"] == "disconnected"


def test_failures_raise(js: JsDriver, ws_port: int) -> None:
    # The stand-in server closes unknown app keys with 4001, which pusher-js treats as refused.
    with pytest.raises(JsDriverError, match="refused"):
        js.connect("smoke-bad-key", ws_port, key="other-key")
    errors = [e for e in js.events("smoke-bad-key") if e["type"] == "conn_error"]
    assert errors, js.events("smoke-bad-key")

    js.connect("smoke-wait", ws_port)
    with pytest.raises(JsDriverError, match="wait timed out"):
        js.wait("smoke-wait", timeout_ms=200, event="never")
    with pytest.raises(JsDriverError, match="unknown client"):
        js.events("nobody")


def test_sdk_trigger_signs_request(
    js: JsDriver, http_server: tuple[int, list[dict[str, Any]]]
) -> None:
    port, requests = http_server
    result = js.sdk("trigger", "my-channel", "my-event", {"x": 1}, port=port)
    assert result == {"status": 200, "body": {}}

    (request,) = requests
    assert request["path"] == "/apps/app-id/events"
    assert "auth_signature" in request["query"]
    assert request["query"]["auth_key"] == ["app-key"]
    body = json.loads(request["body"])
    assert body["name"] == "my-event"
    assert body["channels"] == ["my-channel"]
    assert json.loads(body["data"]) == {"x": 1}
