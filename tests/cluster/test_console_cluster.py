"""Issue 16 part 2 on a real two-node cluster (real Redis): the dashboard's stats are the
whole cluster's through either node, and the console's event stream carries every node's
feed entries, marked with the node, resumable on either node."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.integration.conftest import MAIN, PusherSocket, redis_env, sdk
from tests.integration.httpapi import request
from tests.integration.serverproc import ServerProcess
from tests.integration.sse import SseClient
from tests.integration.test_console import basic
from tests.redisproc import RedisProcess

CONFIG = f"""
[[apps]]
id = "{MAIN.id}"
key = "{MAIN.key}"
secret = "{MAIN.secret}"

[[apps]]
id = "2002"
key = "other-key"
secret = "other-secret"
"""
APP = basic(MAIN.id, MAIN.secret)
FIELDS = ("messages_sent", "messages_received", "api_calls", "webhook_deliveries")


@pytest.fixture(scope="module")
def redis() -> Iterator[RedisProcess]:
    proc = RedisProcess()
    yield proc
    proc.stop()


@pytest.fixture(scope="module", params=["redis", "cluster"])
def nodes(
    redis: RedisProcess, request: pytest.FixtureRequest
) -> Iterator[tuple[ServerProcess, ServerProcess]]:
    """Two nodes on one Redis server, or on a three-master Redis Cluster (the apps' stats
    and feeds then lie on different shards, and each app's stream is read on its own)."""
    where = {"PYSERVER_REDIS_URL": redis.url}
    if request.param == "cluster":
        where = redis_env("cluster")
    env = {
        "PYSERVER_ADAPTER": "redis",
        **where,
        "PYSERVER_REDIS_PREFIX": f"dash-{request.param}",
        "PYSERVER_REDIS_HEARTBEAT": "0.5",
    }
    pair = (ServerProcess(CONFIG, env=env), ServerProcess(CONFIG, env=env))
    yield pair
    for node in pair:
        node.stop()


def _recv_one_of(sock: PusherSocket, names: tuple[str, ...]) -> dict[str, Any]:
    """The next message named one of `names` (others skipped)."""
    deadline = time.monotonic() + 5
    while True:
        message = sock.recv(max(0.01, deadline - time.monotonic()))
        if message.get("event") in names:
            return message


def _stats(port: int, app: str = MAIN.id, login: dict[str, str] = APP) -> dict[str, Any]:
    status, body, _ = request(port, "GET", f"/console/api/stats?app={app}", headers=login)
    assert status == 200, body
    return dict(body)


def _sums(points: list[dict[str, Any]]) -> dict[str, int]:
    return {name: sum(p[name] or 0 for p in points) for name in FIELDS}


def _settled(
    port_a: int, port_b: int, expected: dict[str, int]
) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """The stats through node A and node B and the other app's newest minute (through B), once
    they show one settled minute: every count summed to `expected`, and both nodes' reports
    end on the same minute, in which both nodes have written (`nodes` 2 in the newest point,
    for this app and the other one, and this app's 3 connections: the nodes' alive set and
    the app's counts are separate writes, on different shards of a cluster).

    Each node writes its counts every `FLUSH_EVERY` seconds, and a minute's point names the
    nodes only once each has sampled and written in it: for a few seconds after a minute
    begins, its point holds one node or none, and two reads a moment apart may straddle the
    minute's end (the two reports then cover different windows). Reading until all three
    reads agree on one minute in which both nodes wrote waits out both, whatever the clock."""
    deadline = time.monotonic() + 15
    while True:
        through_a, through_b = _stats(port_a), _stats(port_b)
        other = _stats(port_b, "2002", basic("2002", "other-secret"))["minutes"][-1]
        newest = {through_a["minutes"][-1]["time"], through_b["minutes"][-1]["time"]}
        if (
            all(_sums(body["minutes"]) == expected for body in (through_a, through_b))
            and newest == {other["time"]}
            and all(body["minutes"][-1]["nodes"] == 2 for body in (through_a, through_b))
            and all(body["minutes"][-1]["connections"] == 3 for body in (through_a, through_b))
            and other["nodes"] == 2
        ):
            return through_a, through_b, other
        assert time.monotonic() < deadline, (
            [_sums(body["minutes"]) for body in (through_a, through_b)],
            [body["minutes"][-1] for body in (through_a, through_b)],
            other,
        )
        time.sleep(0.2)


def test_stats_are_the_whole_clusters_through_either_node(nodes) -> None:
    a, b = nodes
    # Node A: alice (private-room) and reader (news); node B: bob (private-room).
    alice, reader, bob = PusherSocket(a.port), PusherSocket(a.port), PusherSocket(b.port)
    alice.signed_subscribe("private-room")
    reader.subscribe("news")
    bob.signed_subscribe("private-room")
    sdk(a.port).trigger("private-room", "one", {"n": 1})
    sdk(b.port).trigger("private-room", "two", {"n": 2})
    sdk(b.port).trigger("news", "headline", {"n": 3})
    for sock in (alice, bob):
        # Triggers on two nodes have no order between them: take both, in either order.
        got = {_recv_one_of(sock, ("one", "two"))["event"] for _ in range(2)}
        assert got == {"one", "two"}
    reader.recv_event("headline")
    alice.send_json({"event": "client-a", "channel": "private-room", "data": {}})
    bob.recv_event("client-a")
    bob.send_json({"event": "client-b", "channel": "private-room", "data": {}})
    alice.recv_event("client-b")
    # Sent: 3 connection_established, 3 subscription_succeeded, 2 triggers to 2 members,
    # 1 to the reader, 1 client event to each member: 13. Received: 3 subscribes and 2
    # client events: 5. API calls: 3 (one on A, two on B).
    expected = {"messages_sent": 13, "messages_received": 5, "api_calls": 3}
    expected["webhook_deliveries"] = 0
    through_a, through_b, other = _settled(a.port, b.port, expected)
    assert len(through_a["minutes"]) == 1440 and len(through_a["days"]) == 30
    # Per minute, both nodes serve the same numbers: the cluster's, not their own.
    counted = [
        (p["time"], *(p[name] for name in FIELDS)) for p in through_a["minutes"] if p["nodes"]
    ]
    assert counted == [
        (p["time"], *(p[name] for name in FIELDS)) for p in through_b["minutes"] if p["nodes"]
    ]
    assert _sums(through_a["days"]) == _sums(through_b["days"]) == expected
    for body in (through_a, through_b):
        now = body["minutes"][-1]
        assert now["nodes"] == 2 and now["connections"] == 3, now
        assert max(p["peak_connections"] or 0 for p in body["minutes"]) == 3
        assert body["days"][-1]["peak_connections"] == 3
        assert body["minutes"][0]["nodes"] == 0 and body["minutes"][0]["messages_sent"] is None
    # Another app idle on both nodes: zeros where the nodes ran, not gaps.
    assert other["nodes"] == 2 and other["messages_sent"] == other["connections"] == 0
    for sock in (alice, reader, bob):
        sock.close()


def test_stream_carries_every_nodes_feed_and_resumes_on_the_other_node(nodes, uid) -> None:
    a, b = nodes
    path = f"/console/api/stream?app={MAIN.id}"
    on_b = SseClient(b.port, path, APP)
    assert on_b.status == 200 and "text/event-stream" in on_b.head
    # Open: the first stats have come. What the stream held already may come before or
    # after them; the entries below are told apart by their names, wherever they fall.
    assert on_b.events("stats", 1, 10), "no first stats"
    channel = f"cluster-feed-{uid}"
    sender, listener = PusherSocket(a.port), PusherSocket(b.port)
    sender.signed_subscribe(f"private-{channel}")
    listener.signed_subscribe(f"private-{channel}")
    sender.send_json({"event": "client-from-a", "channel": f"private-{channel}", "data": {}})
    listener.recv_event("client-from-a")
    sdk(b.port).trigger(channel, "api-on-b", {})

    def feed_until(client: SseClient, *names: str) -> list[Any]:
        """Feed entries until every one of `names` has come (in any order)."""
        found = []
        missing = set(names)
        deadline = time.monotonic() + 10
        while missing:
            event = client.next(max(0.0, deadline - time.monotonic()))
            assert event is not None, f"no {missing} within 10 s: {[e.data for e in found]}"
            if event.name == "feed":
                found.append(event)
                missing.discard(event.data["event"])
        return found

    entries = feed_until(on_b, "client-from-a", "api-on-b")
    by_event = {e.data["event"]: e for e in entries}
    node_a, node_b = by_event["client-from-a"].data["node"], by_event["api-on-b"].data["node"]
    assert node_a != node_b, "each entry is marked with the node that recorded it"
    assert by_event["client-from-a"].data["kind"] == "client"
    last_id = entries[-1].id
    assert last_id and all(e.id for e in entries)
    on_b.close()

    # While no stream is open: three more entries, then resume on the other node.
    for n in range(3):
        sdk(a.port).trigger(channel, f"while-away-{n}", {})
    on_a = SseClient(a.port, path, {**APP, "Last-Event-ID": last_id})
    resumed = feed_until(on_a, "while-away-0", "while-away-1", "while-away-2")
    names = [e.data["event"] for e in resumed if e.data["channel"] == channel]
    assert names == ["while-away-0", "while-away-1", "while-away-2"], names
    assert all(e.id > last_id for e in resumed if "-" in (e.id or ""))
    ids = [e.id for e in resumed]
    assert len(ids) == len(set(ids)), "no entry twice"
    on_a.close()

    # An id the stream never held (trimmed, or from elsewhere): an explicit reset first.
    stale = SseClient(a.port, path, {**APP, "Last-Event-ID": "1-0"})
    first = stale.events("reset", 1, 5)
    assert first and first[0].data["reason"] == "dropped", first
    stale.close()
    bogus = SseClient(a.port, path, {**APP, "Last-Event-ID": "not-an-id"})
    first = bogus.events("reset", 1, 5)
    assert first and first[0].data["reason"] == "unknown-id", first
    bogus.close()
    sender.close()
    listener.close()


def test_state_is_cluster_wide(nodes, uid) -> None:
    a, b = nodes
    room = f"presence-everyone-{uid}"
    on_a, on_b = PusherSocket(a.port), PusherSocket(b.port)
    on_a.signed_subscribe(room, "ann", {"name": "Ann"})
    on_b.signed_subscribe(room, "ben", {"name": "Ben"})
    # The other node's subscriber and connection counts travel with its heartbeat.
    deadline = time.monotonic() + 10
    while True:
        status, state, _ = request(a.port, "GET", f"/console/api/state?app={MAIN.id}", headers=APP)
        assert status == 200
        listed = {c["name"]: c for c in state["channels"]}
        if room in listed and listed[room]["subscribers"] == 2 and state["connections"] >= 2:
            break
        assert time.monotonic() < deadline, state
        time.sleep(0.1)
    assert listed[room]["subscribers"] == 2 and listed[room]["local_subscribers"] == 1
    assert listed[room]["members"] == {"ann": {"name": "Ann"}, "ben": {"name": "Ben"}}
    assert state["connections"] >= 2 and state["local_connections"] >= 1
    stream = SseClient(b.port, f"/console/api/stream?app={MAIN.id}", APP)
    pushed = stream.events("state", 1, 5)[0].data
    assert {c["name"]: c["subscribers"] for c in pushed["channels"]}[room] == 2
    stream.close()
    on_a.close()
    on_b.close()


def test_cluster_stats_roll_over_in_redis_with_a_hand_set_clock(redis) -> None:
    """Two nodes' `ClusterStats` on a real Redis, driven by a hand-set clock across the end
    of a minute and of a UTC day: either node reads the same, exact, summed points."""
    import asyncio

    from pyserver.console.cluster_stats import ClusterStats
    from pyserver.console.timeseries import DAY, MINUTE, Sample, StatsHistory

    t0 = 1_767_225_600.0 + DAY - 2  # 2026-01-01 23:59:58 UTC
    now = [t0]

    async def run() -> tuple[dict[str, Any], dict[str, Any]]:
        histories = [StatsHistory(), StatsHistory()]
        nodes = [
            ClusterStats(h, redis.url, "rollover", f"n{i}", clock=lambda: now[0])
            for i, h in enumerate(histories)
        ]
        histories[0].record("a", Sample(2, messages_sent=5, api_calls=1), t0)
        histories[1].record("a", Sample(1, messages_sent=3), t0)
        for node in nodes:
            await node.flush()
        now[0] = t0 + 3  # 00:00:01 the next day
        histories[0].record("a", Sample(3, messages_sent=9, api_calls=1), now[0])
        histories[1].record("a", Sample(1, messages_sent=4), now[0])
        for node in nodes:
            await node.flush()
        reports = (await nodes[0].report("a", now[0]), await nodes[1].report("a", now[0]))
        for node in nodes:
            await node.close()
        return reports

    through_0, through_1 = asyncio.run(run())
    assert through_0["minutes"] == through_1["minutes"] and through_0["days"] == through_1["days"]
    before, after = through_0["minutes"][-2:]
    assert before["time"] == int(t0 // MINUTE) * MINUTE and after["time"] == before["time"] + 60
    assert (before["nodes"], before["messages_sent"], before["api_calls"]) == (2, 8, 1)
    assert (before["connections"], before["peak_connections"]) == (3, 3)
    assert (after["nodes"], after["messages_sent"], after["connections"]) == (2, 5, 4)
    assert after["peak_connections"] == 4
    yesterday, today = through_0["days"][-2:]
    assert (yesterday["date"], yesterday["messages_sent"], yesterday["nodes"]) == (
        "2026-01-01",
        8,
        2,
    )
    assert (today["date"], today["messages_sent"], today["peak_connections"]) == (
        "2026-01-02",
        5,
        4,
    )
    assert through_0["minutes"][-3]["nodes"] == 0  # before: a gap, not zeros


def test_an_idle_nodes_stats_flush_sends_redis_nothing_until_something_changes(redis) -> None:
    """A flush that would write what the last one wrote, in the same minute, is skipped (an
    idle node with 100k connections costs Redis nothing every flush); a change, or the next
    minute, is written again. Counted by Redis itself (`INFO commandstats`)."""
    import asyncio

    import redis as redis_sync

    from pyserver.console.cluster_stats import ClusterStats
    from pyserver.console.timeseries import MINUTE, Sample, StatsHistory

    t0 = 1_767_225_600.0 + 10  # 2026-01-01 00:00:10 UTC
    now = [t0]
    probe = redis_sync.Redis.from_url(redis.url)

    def commands() -> int:
        stats = probe.info("commandstats")
        return sum(int(v["calls"]) for k, v in stats.items() if k != "cmdstat_info")

    async def run() -> list[int]:
        history = StatsHistory()
        node = ClusterStats(history, redis.url, "idle-skip", "n0", clock=lambda: now[0])
        counts = []
        history.record("a", Sample(5, messages_sent=2), t0)
        for step in range(4):
            before = commands()
            if step == 2:
                now[0] = t0 + 1
                history.record("a", Sample(6, messages_sent=3), now[0])  # a change
            if step == 3:
                now[0] = t0 + MINUTE  # the next minute
                history.record("a", Sample(6, messages_sent=3), now[0])
            await node.flush()
            counts.append(commands() - before)
        await node.close()
        return counts

    first, idle, changed, next_minute = asyncio.run(run())
    probe.close()
    assert first > 0 and changed > 0 and next_minute > 0
    assert idle == 0


def test_idle_nodes_poll_redis_for_nothing_and_a_new_stream_still_gets_every_node_at_once(
    uid,
) -> None:
    """Issue 14: two idle nodes send Redis only their heartbeats. The console feed does not
    read the watched set every second (a node opening a stream announces it), and a heartbeat
    claims only nodes whose liveness is gone, not every live one. Counted by a Redis of the
    test's own (`INFO commandstats`). Then a stream opened on one node gets the other node's
    entries within a second or two, as when every node polled."""
    import redis as redis_sync

    own = RedisProcess()
    env = {
        "PYSERVER_ADAPTER": "redis",
        "PYSERVER_REDIS_URL": own.url,
        "PYSERVER_REDIS_PREFIX": "idle",
        "PYSERVER_REDIS_HEARTBEAT": "1",
        "PYSERVER_REDIS_DEAD_AFTER": "3",
    }
    a, b = ServerProcess(CONFIG, env=env), ServerProcess(CONFIG, env=env)
    probe = redis_sync.Redis.from_url(own.url)

    def calls() -> dict[str, int]:
        stats = probe.info("commandstats")
        return {k.removeprefix("cmdstat_"): int(v["calls"]) for k, v in stats.items()}

    try:
        time.sleep(2)  # both started, rejoined and flushed their first stats
        before = calls()
        time.sleep(6)
        after = calls()
        sent = {k: n - before.get(k, 0) for k, n in after.items() if n != before.get(k, 0)}
        # The feed: at most one read of the watched set per node (every `IDLE_REFRESH`),
        # not one a second; the heartbeats (one a second each): no claim of a live node.
        assert sent.get("zrange", 0) <= 2, sent
        assert sent.get("evalsha", 0) + sent.get("eval", 0) == 0, sent
        assert sent.get("set", 0) >= 6, sent  # the heartbeats go on

        stream = SseClient(b.port, f"/console/api/stream?app={MAIN.id}", APP)
        assert stream.events("stats", 1, 10), "no first stats"
        opened = time.monotonic()
        sdk(a.port).trigger(f"idle-{uid}", "api-on-a", {})
        deadline = opened + 10
        while True:
            event = stream.next(max(0.0, deadline - time.monotonic()))
            assert event is not None, "node A's entry never came"
            if event.name == "feed" and event.data["event"] == "api-on-a":
                break
        waited = time.monotonic() - opened
        assert waited < 3, f"node A's entry came {waited:.1f} s after the stream opened"
        stream.close()
    finally:
        probe.close()
        for node in (a, b):
            node.stop()
        own.stop()
