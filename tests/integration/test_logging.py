"""`--log-level debug` tells what each connection did, tagged with its socket id; the
default level says none of it."""

from __future__ import annotations

import json
import time

from tests.integration.conftest import AppCreds
from tests.integration.httpapi import signed_post
from tests.integration.rawws import OP_CLOSE, RawWebSocket
from tests.integration.serverproc import ServerProcess

DEFAULT = AppCreds("app-id", "app-key", "app-secret")


def _session(port: int) -> str:
    """Connect, subscribe (once well, once refused), trigger, close; return the socket id."""
    ws = RawWebSocket(port, "/app/app-key?protocol=7")
    established = ws.recv_event("pusher:connection_established")
    socket_id = str(json.loads(established["data"])["socket_id"])
    ws.send_json({"event": "pusher:subscribe", "data": {"channel": "news"}})
    ws.recv_event("pusher_internal:subscription_succeeded")
    bad = {"channel": "private-x", "auth": "app-key:" + "0" * 64}
    ws.send_json({"event": "pusher:subscribe", "data": bad})
    ws.recv_event("pusher:subscription_error")
    status, _ = signed_post(
        port, "/apps/app-id/events", {"name": "e", "channel": "news", "data": "{}"}, DEFAULT
    )
    assert status == 200
    ws.recv_event("e")
    refused = RawWebSocket(port, "/app/no-such-key?protocol=7")
    assert refused.expect_close().code == 4001
    ws.send_frame(OP_CLOSE, (1000).to_bytes(2, "big"))
    assert ws.expect_close().code == 1000
    return socket_id


def _wait_for(server: ServerProcess, text: str) -> None:
    deadline = time.monotonic() + 5
    while text not in server.output() and time.monotonic() < deadline:
        time.sleep(0.05)


def test_debug_logs_handshakes_subscribes_api_calls_and_closes() -> None:
    server = ServerProcess(args=["--log-level", "debug"])
    try:
        socket_id = _session(server.port)
        _wait_for(server, f"socket {socket_id}: closing with 1000")
    finally:
        server.stop()
    log = server.output()
    tag = f"socket {socket_id}: "
    for line in (
        tag + "handshake accepted: app app-id",
        tag + "subscribe news",
        tag + "subscribed to news",
        tag + "subscribe private-x",
        tag + "error - (SubscriptionAuthError)",
        "POST /apps/app-id/events -> 200",
        "handshake refused with 4001 (AppNotFound)",
        tag + "closing with 1000",
    ):
        assert line in log, f"{line!r} missing from:\n{log}"


def test_the_default_level_logs_none_of_it() -> None:
    server = ServerProcess()
    try:
        socket_id = _session(server.port)
        time.sleep(0.2)
    finally:
        server.stop()
    log = server.output()
    assert f"socket {socket_id}" not in log
    assert "handshake" not in log and "-> 200" not in log
