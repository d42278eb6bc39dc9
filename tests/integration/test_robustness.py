"""Issue item 7: bad input costs at most its own connection, never the process or others."""

from __future__ import annotations

import json
import socket
import time

import pytest

from tests.integration.httpapi import request
from tests.integration.rawws import OP_BINARY, OP_TEXT
from tests.integration.serverproc import ServerProcess

BAD_FRAMES = [
    "not json",
    "[1,2,3]",
    '"a string"',
    '{"event":"pusher:unsubscribe"}',
    '{"event":"pusher:subscribe","data":"x"}',
    '{"event":"pusher:subscribe","data":{"channel":123}}',
    '{"event":"pusher:subscribe"}',
    '{"event":"pusher:signin","data":{}}',
    '{"event":42}',
    '{"event":"pusher:whatever","data":{}}',
    '{"event":"client-x","data":{}}',
    '{"event":"client-x","channel":"private-nope","data":{"big":' + "1" * 400 + "}}",
]


@pytest.mark.parametrize("frame", BAD_FRAMES)
def test_bad_frames_get_pusher_error_and_connection_stays(connect, uid, py_sdk, frame) -> None:
    s, bystander = connect(), connect()
    bystander.subscribe(f"by-{uid}")
    s.send_text(frame)
    error = s.recv()
    assert error["event"] == "pusher:error"
    assert isinstance(error["data"]["message"], str) and error["data"]["message"]
    s.send_json({"event": "pusher:ping"})
    assert s.recv()["event"] == "pusher:pong"
    py_sdk.trigger(f"by-{uid}", "still-here", {})
    assert bystander.recv()["event"] == "still-here"


def test_binary_frame_gets_an_error(connect) -> None:
    s = connect()
    s.send_frame(OP_BINARY, b"\x00\x01")
    assert "Binary" in s.recv()["data"]["message"]
    s.send_json({"event": "pusher:ping"})
    assert s.recv()["event"] == "pusher:pong"


def test_invalid_utf8_text_gets_an_error(connect) -> None:
    s = connect()
    s.send_frame(OP_TEXT, b'{"event":"\xff"}')
    assert s.recv()["event"] == "pusher:error"


def test_huge_frame_closes_only_that_connection_with_1009(connect, uid, py_sdk) -> None:
    s, bystander = connect(), connect()
    bystander.subscribe(f"by-{uid}")
    s.send_text(json.dumps({"event": "client-x", "channel": "private-a", "data": "x" * 70_000}))
    assert s.expect_close().code == 1009
    py_sdk.trigger(f"by-{uid}", "ok", {})
    assert bystander.recv()["event"] == "ok"


def test_unmasked_frame_is_a_protocol_error(connect) -> None:
    s = connect()
    s.send_frame(OP_TEXT, b'{"event":"pusher:ping"}', mask=False)
    assert s.expect_close().code == 1002


def test_fragmented_message_is_reassembled(connect) -> None:
    s = connect()
    s.send_frame(OP_TEXT, b'{"event":"pusher', fin=False)
    s.send_frame(0, b':ping"}', fin=True)
    assert s.recv()["event"] == "pusher:pong"


@pytest.mark.parametrize(("sent", "answer"), [(1000, 1000), (1001, 1001), (3000, 3000)])
def test_client_close_is_answered(connect, sent: int, answer: int) -> None:
    s = connect()
    s.send_frame(8, sent.to_bytes(2, "big") + b"bye")
    assert s.expect_close().code == answer


@pytest.mark.parametrize("code", [0, 999, 1005, 1006, 1015, 2999, 5000])
def test_a_close_code_no_peer_may_send_is_a_protocol_error(connect, code: int) -> None:
    s = connect()
    s.send_frame(8, code.to_bytes(2, "big"))
    assert s.expect_close().code == 1002


def test_reserved_control_opcodes_and_endless_fragments_close_the_connection(connect) -> None:
    s = connect()
    s.send_frame(0xB, b"")
    assert s.expect_close().code == 1002
    s = connect()
    # empty continuations: no bytes, but memory for each (sent in one write, as an attack would)
    endless = [s.frame(1, b"", fin=False)] + [s.frame(0, b"", fin=False)] * 1_100
    s.sock.sendall(b"".join(endless))
    assert s.expect_close().code == 1009


def test_abrupt_disconnects_and_garbage_do_not_hurt_the_server(
    server, connect, uid, py_sdk
) -> None:
    for payload in (
        b"GET /app/app-key?protocol=7 HTTP/1.1\r\nUpgrade: websocket\r\n",
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",  # a TLS hello
        b"POST /apps/1001/events HTTP/1.1\r\nContent-Length: 100\r\n\r\n{",
    ):
        with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
            sock.sendall(payload)
    s = connect()
    s.subscribe(f"after-{uid}")
    py_sdk.trigger(f"after-{uid}", "alive", {})
    assert s.recv()["event"] == "alive"


def test_http_heads_are_bounded_and_silent_http_connections_closed() -> None:
    proc = ServerProcess(env={"PYSERVER_HTTP_IDLE_TIMEOUT": "1", "PYSERVER_ACTIVITY_TIMEOUT": "2"})
    try:
        with socket.create_connection(("127.0.0.1", proc.port), timeout=5) as sock:
            sock.sendall(b"GET /up HTTP/1.1\r\nX-Endless: ")
            for _ in range(20):  # a header that never ends
                sock.sendall(b"a" * 8192)
            assert sock.recv(1024).startswith(b"HTTP/1.1 431")
        with socket.create_connection(("127.0.0.1", proc.port), timeout=5) as idle:
            idle.sendall(b"GET /up HTTP/1.1\r\nHost: x\r\n\r\n")
            assert idle.recv(1024).startswith(b"HTTP/1.1 200")
            started = time.monotonic()
            assert idle.recv(1024) == b"", "an idle keep-alive connection is closed"
            assert time.monotonic() - started < 4
        with socket.create_connection(("127.0.0.1", proc.port), timeout=5) as half:
            half.sendall(b"GET /up HTTP/1.1\r\nHost:")  # and then nothing
            assert half.recv(1024) == b""
    finally:
        assert proc.stop() == 0


def _rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as status:
        line = next(line for line in status if line.startswith("VmRSS:"))
    return int(line.split()[1]) / 1024


def test_pipelined_requests_from_a_client_that_does_not_read_stay_bounded() -> None:
    proc = ServerProcess()
    try:
        before = _rss_mb(proc.proc.pid)
        with socket.create_connection(("127.0.0.1", proc.port), timeout=5) as sock:
            sock.setblocking(False)
            burst = b"GET /up HTTP/1.1\r\nHost: x\r\n\r\n" * 1000
            deadline = time.monotonic() + 3
            while time.monotonic() < deadline:
                try:
                    sock.send(burst)
                except BlockingIOError:
                    time.sleep(0.05)
            # the server stopped reading once its answers were not read: they no longer
            # pile up in its memory (about 40 MB here before)
            assert _rss_mb(proc.proc.pid) - before < 16
            assert request(proc.port, "GET", "/up")[0] == 200, "other clients are served"
    finally:
        assert proc.stop() == 0
