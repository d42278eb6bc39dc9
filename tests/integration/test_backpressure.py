"""Issue 5 item 2: a client that stops reading is closed once its buffer passes the cap,
while everyone else keeps getting every message."""

from __future__ import annotations

import socket
import time
import urllib.request

from tests.integration.conftest import PusherSocket, sdk
from tests.integration.serverproc import ServerProcess

CONFIG = """
write_buffer_cap = 65536

[[apps]]
id = "1001"
key = "app-key"
secret = "app-secret"
"""


def test_a_reader_that_stops_reading_is_closed_and_others_are_served(uid) -> None:
    proc = ServerProcess(CONFIG)
    try:
        slow = PusherSocket(proc.port)
        slow.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        slow.subscribe(f"flood-{uid}")
        fast = PusherSocket(proc.port)
        fast.subscribe(f"flood-{uid}")
        client = sdk(proc.port)
        blob = "x" * 9000
        # ~9 MB: beyond what the kernel's socket buffers absorb, so bytes pile up in the
        # server for the slow reader until they pass the 64 KB cap
        for start in range(0, 1000, 10):
            client.trigger_batch(
                [
                    {"channel": f"flood-{uid}", "name": "chunk", "data": {"i": i, "blob": blob}}
                    for i in range(start, start + 10)
                ]
            )
            for _ in range(10):
                assert fast.recv()["event"] == "chunk"
        # the server dropped the slow reader by itself (it has not read a byte); what the
        # kernel already holds for it drains on its own, outside the server's memory
        deadline = time.monotonic() + 15
        while _disconnections(proc) < 1 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert _disconnections(proc) == 1
        fast.send_json({"event": "pusher:ping"})
        assert fast.recv()["event"] == "pusher:pong"
    finally:
        proc.stop()


def _disconnections(proc: ServerProcess) -> float:
    port = proc.metrics_port()
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read()
    for line in text.decode().splitlines():
        if line.startswith('pyserver_new_disconnections_total{app_id="1001"}'):
            return float(line.rpartition(" ")[2])
    raise AssertionError("no disconnection counter")
