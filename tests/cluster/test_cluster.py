"""Scale-out cases beyond the shared scenarios (which run over two Redis nodes in
tests/integration): one user on two nodes, webhooks once per cluster, a node killed with
SIGKILL, Redis restarting mid-run, and `--workers 2` on one host."""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Iterator

import pytest

from tests.integration.conftest import MAIN, WS_QUERY, PusherSocket, redis_env, sdk
from tests.integration.httpapi import request
from tests.integration.rawws import RawWebSocket
from tests.integration.serverproc import ServerProcess
from tests.integration.webhook_receiver import WebhookReceiver
from tests.redisproc import RedisProcess, free_port

APP = f"""
webhook_delay = 0.5

[[apps]]
id = "{MAIN.id}"
key = "{MAIN.key}"
secret = "{MAIN.secret}"
"""


def _env(redis: RedisProcess, prefix: str, **extra: str) -> dict[str, str]:
    return {
        "PYSERVER_ADAPTER": "redis",
        "PYSERVER_REDIS_URL": redis.url,
        "PYSERVER_REDIS_PREFIX": prefix,
        **extra,
    }


@pytest.fixture(scope="module")
def redis() -> Iterator[RedisProcess]:
    proc = RedisProcess()
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def receiver() -> Iterator[WebhookReceiver]:
    r = WebhookReceiver()
    yield r
    r.close()


def _with_hooks(receiver: WebhookReceiver) -> str:
    return (
        APP
        + f"""
[[apps.webhooks]]
url = "{receiver.url("/cluster")}"
"""
    )


@pytest.fixture
def two_nodes(redis, receiver, uid) -> Iterator[tuple[ServerProcess, ServerProcess]]:
    env = _env(redis, f"two-{uid}", PYSERVER_REDIS_HEARTBEAT="0.5", PYSERVER_REDIS_DEAD_AFTER="2")
    nodes = (
        ServerProcess(_with_hooks(receiver), env=env),
        ServerProcess(_with_hooks(receiver), env=env),
    )
    yield nodes
    for node in nodes:
        node.stop()


def _events(receiver: WebhookReceiver, channel: str) -> list[dict]:
    return [e for _, e in receiver.events("/cluster") if e.get("channel") == channel]


def _member_events(sock: PusherSocket, event: str, user_id: str, seconds: float = 1.0) -> int:
    """How many `event`s about `user_id` arrive within `seconds` (others are skipped: a
    join racing on two nodes may repeat an earlier member, see docs/scaling.md)."""
    count = 0
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        try:
            message = sock.recv(left)
        except TimeoutError:
            break
        if message["event"] == event and json.loads(message["data"])["user_id"] == user_id:
            count += 1
    return count


def test_same_user_on_both_nodes_is_one_member(two_nodes, receiver, uid) -> None:
    a, b = two_nodes
    channel = f"presence-both-{uid}"
    watcher_a, watcher_b = PusherSocket(a.port), PusherSocket(b.port)
    watcher_a.signed_subscribe(channel, "w-a")
    watcher_b.signed_subscribe(channel, "w-b")
    watcher_a.recv_event("pusher_internal:member_added")
    tab_a, tab_b = PusherSocket(a.port), PusherSocket(b.port)
    tab_a.signed_subscribe(channel, "u", {"tab": "first"})
    presence = json.loads(tab_b.signed_subscribe(channel, "u", {"tab": "second"})["data"])
    assert presence["presence"]["count"] == 3
    assert presence["presence"]["hash"]["u"] == {"tab": "first"}, "first user_info kept"
    for watcher in (watcher_a, watcher_b):
        # once per user, not per tab or node
        assert _member_events(watcher, "pusher_internal:member_added", "u") == 1
    tab_a.close()
    assert _member_events(watcher_a, "pusher_internal:member_removed", "u", 0.5) == 0
    assert sdk(b.port).channel_info(channel, ["user_count"])["user_count"] == 3
    tab_b.close()
    for watcher in (watcher_a, watcher_b):
        assert _member_events(watcher, "pusher_internal:member_removed", "u") == 1
    time.sleep(1.0)
    names = [e["name"] for e in _events(receiver, channel) if e.get("user_id") == "u"]
    assert names == ["member_added", "member_removed"]
    watcher_a.close()
    watcher_b.close()


def test_occupied_and_vacated_once_per_cluster(two_nodes, receiver, uid) -> None:
    a, b = two_nodes
    channel = f"shared-{uid}"
    on_a, on_b = PusherSocket(a.port), PusherSocket(b.port)
    on_a.subscribe(channel)
    on_b.subscribe(channel)
    assert sdk(a.port).channel_info(channel, ["subscription_count"])["subscription_count"] == 2
    on_a.close()
    time.sleep(0.8)
    assert [e["name"] for e in _events(receiver, channel)] == ["channel_occupied"]
    on_b.close()
    receiver.wait_for(
        lambda e: e == {"name": "channel_vacated", "channel": channel}, path="/cluster"
    )
    time.sleep(0.5)
    assert [e["name"] for e in _events(receiver, channel)] == [
        "channel_occupied",
        "channel_vacated",
    ]


def test_a_killed_node_is_cleaned_up_by_the_others(two_nodes, receiver, uid) -> None:
    a, b = two_nodes
    channel = f"presence-dead-{uid}"
    watcher = PusherSocket(a.port)
    watcher.signed_subscribe(channel, "watcher")
    doomed = PusherSocket(b.port)
    doomed.signed_subscribe(channel, "doomed")
    watcher.recv_event("pusher_internal:member_added")
    only_on_b = f"only-b-{uid}"
    PusherSocket(b.port).subscribe(only_on_b)
    killed_at = time.monotonic()
    b.proc.send_signal(signal.SIGKILL)
    removed = watcher.recv_event("pusher_internal:member_removed", timeout=30)
    assert json.loads(removed["data"]) == {"user_id": "doomed"}
    assert time.monotonic() - killed_at < 30
    assert sdk(a.port).channel_info(channel, ["user_count"])["user_count"] == 1
    assert sdk(a.port).channel_info(only_on_b) == {"occupied": False}
    receiver.wait_for(
        lambda e: e == {"name": "channel_vacated", "channel": only_on_b}, path="/cluster"
    )
    receiver.wait_for(
        lambda e: e == {"name": "member_removed", "channel": channel, "user_id": "doomed"},
        path="/cluster",
    )
    time.sleep(1.0)
    assert len([e for e in _events(receiver, channel) if e["name"] == "member_removed"]) == 1
    watcher.close()


def test_redis_restart_mid_run(uid) -> None:
    redis = RedisProcess(free_port())
    env = _env(redis, f"restart-{uid}")
    a, b = ServerProcess(APP, env=env), ServerProcess(APP, env=env)
    try:
        client = PusherSocket(a.port)
        client.subscribe(f"r-{uid}")
        sdk(b.port).trigger(f"r-{uid}", "before", {})
        assert client.recv()["event"] == "before"
        _burst_of_subscribes(a.port, f"warm-{uid}")  # the pool now holds many connections
        redis.stop()
        # node A keeps serving its own clients without Redis ...
        sdk(a.port).trigger(f"r-{uid}", "during", {})
        assert client.recv()["event"] == "during"
        deadline = time.monotonic() + 10
        while request(a.port, "GET", "/ready")[0] != 503 and time.monotonic() < deadline:
            time.sleep(0.1)
        status, health, _ = request(a.port, "GET", "/ready")
        assert status == 503 and health["adapter_healthy"] is False
        assert "unreachable" in a.output()
        # ... and once Redis is back it re-publishes its state and rejoins the cluster
        redis.start()
        deadline = time.monotonic() + 20
        while request(a.port, "GET", "/ready")[0] != 200 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert request(a.port, "GET", "/ready")[0] == 200
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            info = sdk(b.port).channel_info(f"r-{uid}", ["subscription_count"])
            if info.get("subscription_count") == 1 and request(b.port, "GET", "/ready")[0] == 200:
                break
            time.sleep(0.2)
        assert info == {"occupied": True, "subscription_count": 1}
        sdk(b.port).trigger(f"r-{uid}", "after", {})
        assert client.recv(timeout=10)["event"] == "after"
        # connections pooled before the restart are stale: using them is retried on a new
        # connection, not taken for another outage (which flapped, and let the other nodes
        # declare a live node dead)
        _burst_of_subscribes(a.port, f"again-{uid}")
        assert a.output().count("is unreachable") == 1, a.output()
        assert a.output().count("Redis is back") == 1, a.output()
        client.close()
    finally:
        a.stop()
        b.stop()
        redis.stop()


def _burst_of_subscribes(port: int, prefix: str, n: int = 40) -> None:
    """`n` subscribes in flight at once (so as many Redis calls), then all closed."""
    sockets = [PusherSocket(port) for _ in range(n)]
    for i, s in enumerate(sockets):
        s.send_json({"event": "pusher:subscribe", "data": {"channel": f"{prefix}-{i}"}})
    for s in sockets:
        assert s.recv(timeout=10)["event"] == "pusher_internal:subscription_succeeded"
        s.close()


def _connections_per_worker(port: int, attempts: int = 40) -> dict[str, int]:
    """Each worker's connection count, as its own `/up` says; stops once two have answered.

    The workers share one accept queue, so which one answers a request is up to the
    scheduler: a short run of requests can all land on the same worker."""
    nodes: dict[str, int] = {}
    for _ in range(attempts):
        _, health, _ = request(port, "GET", "/up")
        nodes[health["node"]] = health["connections"]
        if len(nodes) == 2:
            break
    return nodes


def test_two_workers_share_the_port_and_deliver_to_all(redis, uid) -> None:
    proc = ServerProcess(APP, env=_env(redis, f"workers-{uid}"), args=["--workers", "2"])
    try:
        deadline = time.monotonic() + 20
        while proc.output().count("listening on") < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert proc.output().count("listening on") == 2, proc.output()
        clients: list[PusherSocket] = []
        nodes: dict[str, int] = {}
        deadline = time.monotonic() + 30
        # Connect until both workers hold some of the clients (bounded: 96 clients, 30 s).
        while len(clients) < 96 and time.monotonic() < deadline:
            for _ in range(8):
                clients.append(PusherSocket(proc.port))
                clients[-1].subscribe(f"w-{uid}")
            nodes = _connections_per_worker(proc.port)
            if len(nodes) == 2 and all(nodes.values()):
                break
        assert len(nodes) == 2, f"both workers answer: {nodes}"
        assert sum(nodes.values()) == len(clients) and all(nodes.values()), nodes
        sdk(proc.port).trigger(f"w-{uid}", "to-all", {"n": 1})
        for client in clients:
            assert client.recv()["event"] == "to-all"
            client.close()
    finally:
        assert proc.stop() == 0


def test_the_supervisor_restarts_a_killed_worker_and_stops_at_once_on_sigterm(redis, uid) -> None:
    """The supervisor sleeps until a signal: a worker's SIGCHLD wakes it to restart the
    worker (which serves again), and SIGTERM ends it as soon as the workers have gone."""
    import os
    import re

    proc = ServerProcess(APP, env=_env(redis, f"restart-w-{uid}"), args=["--workers", "2"])
    try:
        deadline = time.monotonic() + 20
        while proc.output().count("listening on") < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
        found = re.search(r"workers on \S+ \(pids (\d+), (\d+)\)", proc.output())
        assert found, proc.output()
        victim = int(found.group(1))
        os.kill(victim, signal.SIGKILL)
        started = time.monotonic()
        while proc.output().count("listening on") < 3 and time.monotonic() - started < 20:
            time.sleep(0.05)
        assert f"(pid {victim}) exited with -9; restarting it" in proc.output(), proc.output()
        assert proc.output().count("listening on") == 3, "the new worker listens"
        client = PusherSocket(proc.port)  # the pair serves again
        client.subscribe(f"restart-w-{uid}")
        client.close()
        started = time.monotonic()
        assert proc.stop(timeout=15) == 0
        assert time.monotonic() - started < 8, "the supervisor left once its workers had"
    finally:
        proc.stop()


@pytest.fixture(params=["redis", "cluster"])
def burst_nodes(request, redis, receiver, uid) -> Iterator[tuple[ServerProcess, ServerProcess]]:
    """Two nodes on one Redis server, or on a three-master Redis Cluster (whose client
    fails at once when its pool is empty, instead of waiting)."""
    env = _env(redis, f"burst-{uid}", PYSERVER_REDIS_HEARTBEAT="0.5")
    if request.param == "cluster":
        env.update(redis_env("cluster"))
    nodes = (
        ServerProcess(_with_hooks(receiver), env=env),
        ServerProcess(_with_hooks(receiver), env=env),
    )
    yield nodes
    for node in nodes:
        node.stop()


def test_a_burst_of_subscriptions_waits_for_redis_and_leaves_no_ghosts(
    burst_nodes, receiver, uid
) -> None:
    """Hundreds of subscribes and leaves at once must wait for a Redis connection, not be
    mistaken for an outage: an outage would drop the leaves and strand occupied channels."""
    a, b = burst_nodes
    prefix = f"burst-{uid}-"
    clients = [PusherSocket(a.port) for _ in range(320)]
    for i, client in enumerate(clients):  # all sent before any answer is read: one burst
        client.send_json({"event": "pusher:subscribe", "data": {"channel": f"{prefix}{i}"}})
    for client in clients:
        assert client.recv_event("pusher_internal:subscription_succeeded", timeout=10)
    occupied = sdk(b.port).channels_info(prefix_filter=prefix)["channels"]
    assert len(occupied) == len(clients)
    for client in clients:
        client.close()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        occupied = sdk(b.port).channels_info(prefix_filter=prefix)["channels"]
        if not occupied:
            break
        time.sleep(0.2)
    assert occupied == {}, f"{len(occupied)} channels still occupied with nobody in them"

    def vacated() -> int:
        events = receiver.events("/cluster")
        return sum(
            e["name"] == "channel_vacated" and e["channel"].startswith(prefix) for _, e in events
        )

    deadline = time.monotonic() + 10
    while vacated() < len(clients) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert vacated() == len(clients), "one channel_vacated per channel"
    output = a.output() + b.output()
    assert "unreachable" not in output and "command failed" not in output, output[-3000:]


def test_max_connections_counts_the_whole_cluster(redis, uid) -> None:
    config = '[[apps]]\nid = "1"\nkey = "capped-key"\nsecret = "s"\nmax_connections = 3\n'
    env = _env(redis, f"cap-{uid}", PYSERVER_REDIS_HEARTBEAT="0.3", PYSERVER_REDIS_DEAD_AFTER="2")
    a, b = ServerProcess(config, env=env), ServerProcess(config, env=env)
    try:
        path = f"/app/capped-key{WS_QUERY}"
        on_a = [RawWebSocket(a.port, path) for _ in range(2)]
        assert all(ws.recv()["event"] == "pusher:connection_established" for ws in on_a)
        time.sleep(1.0)  # both nodes have reported and summed at least once
        third = RawWebSocket(b.port, path)
        assert third.recv()["event"] == "pusher:connection_established"
        time.sleep(1.0)
        for node in (a, b):  # one more anywhere is over the app's 3
            refused = RawWebSocket(node.port, path)
            assert refused.expect_close().code == 4004
        on_a[0].close()
        time.sleep(1.0)
        again = RawWebSocket(b.port, path)  # a freed slot is usable from the other node
        assert again.recv()["event"] == "pusher:connection_established"
    finally:
        a.stop()
        b.stop()


def test_sigterm_on_a_redis_node_still_sends_the_pending_leaves(redis, receiver, uid) -> None:
    config = _with_hooks(receiver).replace("webhook_delay = 0.5", "webhook_delay = 30")
    node = ServerProcess(config, env=_env(redis, f"bye-{uid}"))
    try:
        channel = f"presence-bye-{uid}"
        s = PusherSocket(node.port)
        s.signed_subscribe(channel, "u1")
        receiver.wait_for(lambda e: e.get("channel") == channel, path="/cluster")
        node.proc.send_signal(signal.SIGTERM)  # the client is closed; the leaves wait 30 s...
        assert node.proc.wait(timeout=15) == 0
        # ... but shutdown asks Redis whether they still stand and sends them before exiting
        names = {
            name
            for name in ("member_removed", "channel_vacated")
            if receiver.wait_for(
                lambda e, n=name: e == {"name": n, "channel": channel, **_user(n)},
                path="/cluster",
                timeout=2,
            )
        }
        assert names == {"member_removed", "channel_vacated"}
        s.close()
    finally:
        node.stop()


def _user(name: str) -> dict[str, str]:
    return {"user_id": "u1"} if name == "member_removed" else {}


def test_a_leave_still_in_the_debounce_of_a_killed_node_is_sent_by_its_reaper(
    redis, receiver, uid
) -> None:
    env = _env(
        redis, f"orphan-{uid}", PYSERVER_REDIS_HEARTBEAT="0.5", PYSERVER_REDIS_DEAD_AFTER="2"
    )
    config = _with_hooks(receiver).replace("webhook_delay = 0.5", "webhook_delay = 1")
    doomed, survivor = ServerProcess(config, env=env), ServerProcess(config, env=env)
    try:
        gone, back = f"presence-gone-{uid}", f"presence-back-{uid}"
        for channel in (gone, back):
            s = PusherSocket(doomed.port)
            s.signed_subscribe(channel, "u1")
            receiver.wait_for(
                lambda e, c=channel: e.get("name") == "member_added" and e["channel"] == c,
                path="/cluster",
            )
            s.close()  # the leaves wait 1 s in the doomed node's timers ...
        time.sleep(0.2)
        doomed.proc.kill()  # ... which die with it
        # a return after the reap, within the reaper's own delay, cancels that leave
        deadline = time.monotonic() + 10
        while "removing its state" not in survivor.output() and time.monotonic() < deadline:
            time.sleep(0.05)
        returning = PusherSocket(survivor.port)
        returning.signed_subscribe(back, "u1")
        time.sleep(2.5)
        events = [(e["name"], e.get("channel")) for _, e in receiver.events("/cluster")]
        assert events.count(("member_removed", gone)) == 1, events
        assert events.count(("channel_vacated", gone)) == 1, events
        assert ("member_removed", back) not in events and events.count(("member_added", back)) == 1
        returning.close()
    finally:
        doomed.stop(signal.SIGKILL)
        survivor.stop()


def test_debug_logging_shows_the_bus_and_transitions(redis, uid) -> None:
    env = _env(redis, f"debug-{uid}")
    a = ServerProcess(APP, env=env, args=["--log-level", "debug"])
    b = ServerProcess(APP, env=env, args=["--log-level", "debug"])
    quiet = ServerProcess(APP, env=env)  # the default level, info
    try:
        channel = f"logged-{uid}"
        listener = PusherSocket(b.port)
        listener.subscribe(channel)
        sdk(a.port).trigger(channel, "ev", {"n": 1})
        listener.recv_event("ev")
        sdk(quiet.port).trigger(channel, "ev", {"n": 2})
        listener.recv_event("ev")
        listener.close()
        deadline = time.monotonic() + 5
        while f"channel {MAIN.id}/{channel}: left" not in b.output():
            assert time.monotonic() < deadline, b.output()
            time.sleep(0.05)
        assert f"pyserver.cluster.state: channel {MAIN.id}/{channel}: arrived" in b.output()
        assert f"pyserver.cluster.bus: sent broadcast {MAIN.id}/{channel}" in a.output()
        assert f"received broadcast {MAIN.id}/{channel} from" in b.output()
        assert "DEBUG" not in quiet.output()
    finally:
        for node in (a, b, quiet):
            node.stop()
