"""Descriptor limits (issue 14 item 4): a full worker leaves connections to the others, and a
process alone at its limit tells the extra clients 4100 instead of letting them fail.

The limits are lowered for the server's processes only, by `tests/fdlimit/sitecustomize.py`
(`TEST_NOFILE_LIMIT`, soft and hard), as a host with a hard cap would have them.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import time
from collections.abc import Iterator

import pytest

from pyserver.cluster.redis_connect import CLUSTER_POOL_SIZE, POOL_SIZE
from pyserver.server.capacity import RESERVED_BASE
from tests.integration.conftest import MAIN, WS_QUERY, PusherSocket, redis_env
from tests.integration.httpapi import request
from tests.integration.rawws import Closed, RawWebSocket
from tests.integration.serverproc import ROOT, ServerProcess
from tests.redisproc import RedisProcess

FDLIMIT = str(ROOT / "tests" / "fdlimit")
APP = f"""
[[apps]]
id = "{MAIN.id}"
key = "{MAIN.key}"
secret = "{MAIN.secret}"
"""
_UPGRADE = (
    f"GET /app/{MAIN.key}{WS_QUERY} HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nUpgrade: websocket\r\n"
    "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
    "Sec-WebSocket-Version: 13\r\n\r\n"
).encode()
_CAPACITY = re.compile(r"descriptors: limit ([\d,]+) per process, capacity ([\d,]+)")


def _env(limits: str, **extra: str) -> dict[str, str]:
    path = os.environ.get("PYTHONPATH", "")
    return {
        "PYTHONPATH": FDLIMIT + (os.pathsep + path if path else ""),
        "TEST_NOFILE_LIMIT": limits,
        **extra,
    }


def _capacities(proc: ServerProcess, count: int) -> dict[int, int]:
    """Capacity by descriptor limit, from each process's start-up line."""
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        found = _CAPACITY.findall(proc.output())
        if len(found) >= count:
            return {int(a.replace(",", "")): int(b.replace(",", "")) for a, b in found}
        time.sleep(0.1)
    raise AssertionError("no capacity line:\n" + proc.output())


def _connected_per_worker(proc: ServerProcess, workers: int) -> list[int]:
    """Each worker's open WebSocket connections, from its own metrics listener (the shared
    port would answer only from workers that accept)."""
    ports = [int(p) for p in re.findall(r"metrics at http://127\.0\.0\.1:(\d+)/", proc.output())]
    assert len(ports) == workers, proc.output()
    counts = []
    for port in ports:
        _, text, _ = request(port, "GET", "/metrics")
        match = re.search(rf'connected\{{app_id="{MAIN.id}"\}} (\d+)', str(text))
        assert match, text
        counts.append(int(match.group(1)))
    return counts


def _wait_for(proc: ServerProcess, text: str, timeout: float = 5) -> None:
    deadline = time.monotonic() + timeout
    while text not in proc.output():
        assert time.monotonic() < deadline, f"{text!r} not logged:\n{proc.output()}"
        time.sleep(0.05)


@pytest.fixture(scope="module")
def redis() -> Iterator[RedisProcess]:
    proc = RedisProcess()
    yield proc
    proc.stop()


def test_a_full_worker_leaves_new_connections_to_the_other(redis: RedisProcess) -> None:
    """Worker 0 (a few hundred descriptors) fills up while worker 1 is stopped; once worker 1
    runs again, every further connection goes to it: none fails, none is told 4100."""
    env = _env(
        "260,700",
        PYSERVER_ADAPTER="redis",
        PYSERVER_REDIS_URL=redis.url,
        PYSERVER_REDIS_PREFIX=f"capacity-{os.getpid()}",
    )
    proc = ServerProcess(APP, env=env, args=["--workers", "2"])
    clients: list[PusherSocket] = []
    try:
        capacity = _capacities(proc, 2)
        small, large = capacity[260], capacity[700]
        pids = re.search(r"2 workers on \S+ \(pids (\d+), (\d+)\)", proc.output())
        assert pids, proc.output()
        second = int(pids.group(2))
        _connected_per_worker(proc, 2)  # both are up
        os.kill(second, signal.SIGSTOP)
        try:
            clients = [PusherSocket(proc.port) for _ in range(small)]
            _wait_for(proc, f"at this process's capacity of {small}: accepting stops while")
        finally:
            os.kill(second, signal.SIGCONT)
        more = 120
        failures = []
        for i in range(more):
            try:
                clients.append(PusherSocket(proc.port))
            except (OSError, Closed, AssertionError) as exc:
                failures.append(f"{i}: {exc!r}")
        assert failures == [], f"{len(failures)} failed, first: {failures[:3]}"
        assert small + more < small + large
        assert sorted(_connected_per_worker(proc, 2)) == sorted([small, more])
        assert "told 4100" not in proc.output()
    finally:
        for client in clients:
            client.close()
        assert proc.stop() == 0


def test_a_process_alone_at_its_limit_tells_the_extra_clients_4100() -> None:
    proc = ServerProcess(APP, env=_env("200"))
    clients: list[PusherSocket] = []
    try:
        capacity = _capacities(proc, 1)[200]
        assert 40 < capacity < 200
        clients = [PusherSocket(proc.port) for _ in range(capacity)]
        for _ in range(5):
            raw = RawWebSocket(proc.port, f"/app/{MAIN.key}{WS_QUERY}")
            message = raw.recv()
            assert message["event"] == "pusher:error"
            assert message["data"]["code"] == 4100
            closed = raw.expect_close()
            assert (closed.code, closed.reason) == (4100, "Over capacity")
            raw.close()
        # A burst: more waiting at once than the overflow band holds. Those past it wait in
        # the listen queue until the first ones were told 4100 and closed, then get it too.
        burst = [socket.create_connection(("127.0.0.1", proc.port), timeout=10) for _ in range(30)]
        for sock in burst:
            sock.sendall(_UPGRADE % proc.port)
        for sock in burst:
            received = b""
            with contextlib.suppress(TimeoutError):
                while chunk := sock.recv(4096):
                    received += chunk
            sock.close()
            assert b" 101 " in received.split(b"\r\n", 1)[0], received
            assert received.endswith(b"\x88\x0f\x10\x04Over capacity"), received
        for client in clients[:10]:
            client.close()
        time.sleep(0.5)
        clients = clients[10:] + [PusherSocket(proc.port) for _ in range(10)]
        _wait_for(proc, f"at this process's capacity of {capacity}: extra connections are told")
        _wait_for(proc, "extra connections are told 4100 (over capacity) and closed")
        assert "accept failed" not in proc.output()
    finally:
        for client in clients:
            client.close()
        assert proc.stop() == 0


_KEPT = re.compile(r"kept back: \d+ open at start, (\d+) for Redis, webhooks and spare")


@pytest.mark.parametrize("kind", ["local", "redis", "cluster"])
def test_the_budget_keeps_back_what_the_redis_link_may_hold(kind: str) -> None:
    """Nothing for Redis with the local adapter; a single server's pool; on the three-master
    Redis Cluster, per shard a pool and one connection for each subscriber: the bus and the
    console feed's watch announcements (`console.cluster_feed`)."""
    env = {} if kind == "local" else {"PYSERVER_ADAPTER": "redis", **redis_env(kind)}
    proc = ServerProcess(APP, env={**env, "PYSERVER_REDIS_PREFIX": f"kept-{os.getpid()}"})
    try:
        _wait_for(proc, "kept back:", timeout=20)
        found = _KEPT.search(proc.output())
        assert found, proc.output()
        expected = {"local": 0, "redis": POOL_SIZE, "cluster": 3 * (CLUSTER_POOL_SIZE + 2)}
        assert int(found.group(1)) == RESERVED_BASE + expected[kind]
    finally:
        assert proc.stop() == 0
