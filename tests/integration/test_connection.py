"""Issue item 3: the WebSocket endpoint, handshake checks, ping/pong and liveness."""

from __future__ import annotations

import json
import re
import time

import pytest

from tests.integration.conftest import MAIN, WS_QUERY, PusherSocket
from tests.integration.httpapi import request
from tests.integration.rawws import OP_PING, OP_PONG, RawWebSocket
from tests.integration.serverproc import ServerProcess


def test_connection_established_shape(server: ServerProcess) -> None:
    ws = RawWebSocket(server.port, f"/app/{MAIN.key}{WS_QUERY}")
    message = ws.recv()
    assert message["event"] == "pusher:connection_established"
    assert isinstance(message["data"], str), "data must be a JSON string (Java client casts it)"
    data = json.loads(message["data"])
    assert re.fullmatch(r"\d+\.\d+", data["socket_id"])
    assert data["activity_timeout"] and 0 < data["activity_timeout"] <= 50
    ws.close()


def test_socket_ids_differ(connect) -> None:
    assert len({connect().socket_id for _ in range(5)}) == 5


@pytest.mark.parametrize(
    ("path", "code"),
    [
        (f"/app/no-such-key{WS_QUERY}", 4001),
        (f"/app/disabled-key{WS_QUERY}", 4003),
        ("/app/app-key?client=js&version=8.4.0", 4008),
        ("/app/app-key?protocol=3&client=js", 4007),
        ("/app/app-key?protocol=x", 4006),
        ("/app/app-key?protocol=%C2%B2", 4006),  # a digit to str.isdigit, not to int()
        ("/app/app-key?protocol=" + "7" * 5000, 4006),
        (f"/ws/app/app-key{WS_QUERY}", 4005),  # a wrong wsPath: pusher-js stops retrying
        (f"/app/{WS_QUERY}", 4001),
    ],
)
def test_refused_connections_get_error_then_close_code(
    server: ServerProcess, path: str, code: int
) -> None:
    ws = RawWebSocket(server.port, path)
    error = ws.recv()
    assert error["event"] == "pusher:error" and error["data"]["code"] == code
    assert ws.expect_close().code == code


@pytest.mark.parametrize(
    ("origin", "allowed"),
    [
        ("https://app.example.com", True),
        ("http://localhost:3000", True),
        (None, True),  # not a browser
        ("https://evil.example", False),
        ("http://localhost:3001", False),
    ],
)
def test_allowed_origins(server: ServerProcess, origin: str | None, allowed: bool) -> None:
    headers = {"Origin": origin} if origin else {}
    ws = RawWebSocket(server.port, f"/app/origin-key{WS_QUERY}", headers=headers)
    first = ws.recv()
    if allowed:
        assert first["event"] == "pusher:connection_established"
        ws.close()
    else:
        assert first["event"] == "pusher:error" and first["data"]["code"] == 4009
        assert origin in first["data"]["message"]
        assert ws.expect_close().code == 4009


def test_connection_quota_closes_with_4004(server: ServerProcess) -> None:
    from tests.integration.conftest import SMALL

    sockets = [PusherSocket(server.port, SMALL) for _ in range(3)]
    ws = RawWebSocket(server.port, f"/app/{SMALL.key}{WS_QUERY}")
    assert ws.expect_close().code == 4004
    for s in sockets:
        s.close()


def test_pusher_ping_with_and_without_data(connect) -> None:
    s = connect()
    s.send_json({"event": "pusher:ping", "data": {}})
    assert s.recv() == {"event": "pusher:pong", "data": {}}
    s.send_json({"event": "pusher:ping"})
    assert s.recv() == {"event": "pusher:pong", "data": {}}


def test_websocket_ping_frame_is_answered_with_same_payload(connect) -> None:
    s = connect()
    s.send_frame(OP_PING, b"hello")
    assert s.recv_frame() == (OP_PONG, b"hello")


def test_plain_http_paths_other_than_the_api_are_404(server: ServerProcess) -> None:
    status, answer, _ = request(server.port, "GET", "/nope")
    assert status == 404 and "error" in answer


@pytest.fixture(scope="module")
def fast_server():
    proc = ServerProcess(env={"PYSERVER_ACTIVITY_TIMEOUT": "1", "PYSERVER_PONG_TIMEOUT": "1"})
    yield proc
    proc.stop()


def test_idle_client_is_pinged_then_closed_with_4201(fast_server: ServerProcess) -> None:
    ws = RawWebSocket(fast_server.port, f"/app/app-key{WS_QUERY}")
    ws.recv()
    started = time.monotonic()
    opcode, _ = ws.recv_frame(timeout=5)
    assert opcode == OP_PING, "the server pings an idle client"
    closed = ws.expect_close(timeout=5)
    assert closed.code == 4201
    assert 1.0 <= time.monotonic() - started <= 6


def test_client_that_answers_pings_stays_connected(fast_server: ServerProcess) -> None:
    ws = RawWebSocket(fast_server.port, f"/app/app-key{WS_QUERY}")
    ws.recv()
    deadline = time.monotonic() + 4
    while time.monotonic() < deadline:
        try:
            opcode, payload = ws.recv_frame(timeout=0.5)
        except TimeoutError:
            continue
        assert opcode == OP_PING
        ws.send_frame(OP_PONG, payload)
    ws.send_json({"event": "pusher:ping"})
    assert ws.recv()["event"] == "pusher:pong"
