"""permessage-deflate, opt-in (issue 5 item 1): off by default; when on, offered by a real
client (the `websockets` library) it is agreed without context takeover, messages flow both
ways compressed, and clients that do not offer it on the same server get plain frames."""

from __future__ import annotations

import json

import pytest
from websockets.sync.client import connect

from tests.integration.conftest import WS_QUERY, sdk
from tests.integration.serverproc import ServerProcess

CONFIG = '[[apps]]\nid = "1001"\nkey = "app-key"\nsecret = "app-secret"\n'


def _open(port: int, compression: str | None):
    return connect(
        f"ws://127.0.0.1:{port}/app/app-key{WS_QUERY}", compression=compression, open_timeout=5
    )


@pytest.fixture(scope="module")
def compressing_server():
    proc = ServerProcess(CONFIG, env={"PYSERVER_WEBSOCKET_COMPRESSION": "true"})
    yield proc
    proc.stop()


def test_off_by_default() -> None:
    proc = ServerProcess(CONFIG)
    try:
        with _open(proc.port, "deflate") as ws:
            assert "Sec-WebSocket-Extensions" not in ws.response.headers
            assert json.loads(ws.recv(5))["event"] == "pusher:connection_established"
    finally:
        proc.stop()


def test_agreed_and_used_both_ways(compressing_server, uid) -> None:
    port = compressing_server.port
    with _open(port, "deflate") as deflating, _open(port, None) as plain:
        extension = deflating.response.headers["Sec-WebSocket-Extensions"]
        assert extension.startswith("permessage-deflate")
        assert "server_no_context_takeover" in extension
        assert "Sec-WebSocket-Extensions" not in plain.response.headers
        for ws in (deflating, plain):
            assert json.loads(ws.recv(5))["event"] == "pusher:connection_established"
            ws.send(json.dumps({"event": "pusher:subscribe", "data": {"channel": f"z-{uid}"}}))
            assert json.loads(ws.recv(5))["event"] == "pusher_internal:subscription_succeeded"
        payload = {"text": "compressible " * 200}
        sdk(port).trigger(f"z-{uid}", "big", payload)
        for ws in (deflating, plain):
            message = json.loads(ws.recv(5))
            assert message["event"] == "big" and json.loads(message["data"]) == payload
        # a compressed client message (the library compresses what it sends)
        deflating.send(json.dumps({"event": "pusher:ping", "data": {"pad": "x" * 5000}}))
        assert json.loads(deflating.recv(5))["event"] == "pusher:pong"
