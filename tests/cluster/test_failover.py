"""Failover through the server (issue 14): two pyserver nodes on Redis behind Sentinel, and on
a three-master Redis Cluster, with real clients on both nodes.

Sentinel, after SIGKILL of the master and after `SENTINEL FAILOVER`:
- clients on both nodes receive triggers made on the other node again within the time the
  Sentinels took to name the new master plus 5 s;
- presence members, `user_count` and the occupied channels are right afterwards on both
  nodes (each node rebuilt its state on the new master);
- no webhook is lost or sent twice for the members who stayed, and one joining after the
  failover gets exactly one `member_added` (the durable queue lives on the new master).

Cluster: a trigger on node B reaches subscribers on node A for channels whose bus channels
lie on every shard, and the state scripts (presence, sign-in, cache channels, leaves) run
without a CROSSSLOT error on any shard. When the master holding the app's keys is
SIGKILLed, triggers cross again, and presence, `user_count` and the webhooks for members who
stayed are right as after a Sentinel failover.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from redis.crc import key_slot

from pyserver.cluster.redis.connection import UrlSettings, connect
from tests.integration.conftest import MAIN, PusherSocket, deploy, sdk
from tests.integration.httpapi import request
from tests.integration.rawws import Closed
from tests.integration.webhook_receiver import WebhookReceiver
from tests.redisprocs import ClusterSetup, SentinelSetup, command

SLACK = 5.0
"""Seconds the nodes may take beyond the Sentinels' own failover (the issue's bound)."""


def _config(receiver: WebhookReceiver) -> str:
    return f"""
webhook_delay = 0.5

[[apps]]
id = "{MAIN.id}"
key = "{MAIN.key}"
secret = "{MAIN.secret}"

[[apps.webhooks]]
url = "{receiver.url("/failover")}"
event_types = ["channel_occupied", "channel_vacated", "member_added", "member_removed"]
"""


class Listener:
    """A connected client whose messages a thread collects (no frame is lost to a timeout
    between two looks)."""

    def __init__(self, port: int) -> None:
        self.sock = PusherSocket(port)
        self.messages: list[tuple[float, dict[str, Any]]] = []
        self._lock = threading.Lock()
        self._stop = False
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        while not self._stop:
            try:
                message = self.sock.recv(1.0)
            except TimeoutError:
                continue
            except (Closed, OSError):
                return
            with self._lock:
                self.messages.append((time.monotonic(), message))

    def events(self, name: str) -> list[dict[str, Any]]:
        with self._lock:
            return [json.loads(m["data"]) for _, m in self.messages if m.get("event") == name]

    def close(self) -> None:
        self._stop = True
        self.sock.close()
        if self._thread is not None:
            self._thread.join(5)


@pytest.fixture(scope="module")
def receiver() -> Iterator[WebhookReceiver]:
    r = WebhookReceiver()
    yield r
    r.close()


def _ready(port: int) -> bool:
    status, _, _ = request(port, "GET", "/ready")
    return status == 200


def _wait(check: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def _hooks(
    receiver: WebhookReceiver, channels: set[str], since: float = 0.0
) -> list[tuple[str, str]]:
    """(event name, user id or channel) of the webhooks about `channels` received after
    `since` (unix time)."""
    return [
        (e["name"], e.get("user_id") or e["channel"])
        for delivery, e in receiver.events("/failover")
        if delivery.at >= since and e["channel"] in channels
    ]


def _assert_presence_whole(ports: tuple[int, ...], presence: str, members: list[str]) -> None:
    """Every node lists exactly `members` in `presence` and counts them in `user_count`."""
    for port in ports:
        api = sdk(port)
        users = api.users_info(presence)["users"]
        assert sorted(u["id"] for u in users) == sorted(members), (port, users)
        assert api.channel_info(presence, ["user_count"])["user_count"] == len(members), port


def _assert_webhooks_once(
    receiver: WebhookReceiver, mine: set[str], since: float, port: int, presence: str
) -> None:
    """After a failover that began at `since` (unix time): nothing was sent about the
    members and channels that stayed, and a member joining now through `port` gets exactly
    one `member_added` (the durable queue works on the new master). Each member was added
    exactly once over the whole test (the members who stayed are `stay-a` and `stay-b`)."""
    joined = PusherSocket(port)
    try:
        joined.signed_subscribe(presence, "late", {})
        _wait(lambda: ("member_added", "late") in _hooks(receiver, mine), 15, "the late member")
        time.sleep(2.0)  # a duplicate would come within the webhook delay and a retry
    finally:
        joined.close()
    after = [h for h in _hooks(receiver, mine, since) if h[1] != "late"]
    assert after == [], f"webhooks for members and channels that stayed: {after}"
    everything = _hooks(receiver, mine)
    for user in ("stay-a", "stay-b", "late"):
        assert everything.count(("member_added", user)) == 1, everything


@pytest.mark.parametrize("how", ["kill-master", "sentinel-failover"])
def test_sentinel_failover_through_the_server(
    redis_sentinel: SentinelSetup, receiver: WebhookReceiver, uid: str, how: str
) -> None:
    setup = redis_sentinel
    setup.wait_linked()
    deployment = deploy(_config(receiver), "sentinel")
    a, b = deployment.nodes
    channel, presence = f"ticks-{uid}", f"presence-stay-{uid}"
    mine = {channel, presence}
    listeners: list[Listener] = []
    try:
        on_a, on_b = Listener(a.port), Listener(b.port)
        listeners += [on_a, on_b]
        for listener in (on_a, on_b):
            listener.sock.subscribe(channel)
        member_a, member_b = PusherSocket(a.port), PusherSocket(b.port)
        member_a.signed_subscribe(presence, "stay-a", {"node": "a"})
        member_b.signed_subscribe(presence, "stay-b", {"node": "b"})
        for listener in (on_a, on_b):
            listener.start()
        before = {
            ("member_added", "stay-a"),
            ("member_added", "stay-b"),
            ("channel_occupied", channel),
            ("channel_occupied", presence),
        }
        _wait(lambda: before <= set(_hooks(receiver, mine)), 10, f"the first webhooks: {before}")
        time.sleep(1.0)  # the queue's delivered reports reach the replica

        old = setup.master()
        sent: dict[int, float] = {}
        seq = 0
        started, started_wall = time.monotonic(), time.time()
        if how == "kill-master":
            old.kill()
        else:
            setup.failover()
        promoted: list[float] = []

        def watch() -> None:
            setup.wait_for_new_master(old.port)
            promoted.append(time.monotonic() - started)

        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        api_a, api_b = sdk(a.port), sdk(b.port)
        # Trigger on each node every 0.25 s; the other node's client must get it.
        while time.monotonic() - started < 45:
            seq += 1
            sent[seq] = time.monotonic()
            for api, via in ((api_a, "a"), (api_b, "b")):
                # The API answers during the failover too (delivering locally meanwhile).
                api.trigger(channel, "tick", {"n": seq, "via": via})
            time.sleep(0.25)
            if promoted and time.monotonic() - started > promoted[0] + SLACK + 3:
                break
        time.sleep(1.0)
        watcher.join(30)
        assert promoted, "the Sentinels never named a new master"
        got_a = {e["n"] for e in on_a.events("tick") if e["via"] == "b"}
        got_b = {e["n"] for e in on_b.events("tick") if e["via"] == "a"}
        missing = [n for n in sent if n not in got_a or n not in got_b]
        recovered = sent[max(missing) + 1] - started if missing else 0.0
        print(
            f"\n{how}: Sentinels named the new master after {promoted[0]:.2f} s, triggers "
            f"crossed both ways again after {recovered:.2f} s ({len(missing)} of {len(sent)} "
            "rounds missed)"
        )
        assert max(missing, default=0) < seq, "the last triggers never crossed"
        assert recovered <= promoted[0] + SLACK

        # Both nodes rebuilt their state on the new master.
        _wait(lambda: _ready(a.port) and _ready(b.port), 15, "both nodes ready")
        _assert_presence_whole((a.port, b.port), presence, ["stay-a", "stay-b"])
        for port in (a.port, b.port):
            occupied = sdk(port).channels_info()["channels"]
            assert channel in occupied and presence in occupied, occupied
        _assert_webhooks_once(receiver, mine, started_wall, b.port, presence)
        member_a.close()
        member_b.close()
    finally:
        for listener in listeners:
            listener.close()
        deployment.stop()
        if how == "kill-master":
            # The killed server comes back as a replica, for the tests after this one.
            old.args = ["--replicaof", "127.0.0.1", str(setup.master_port())]
            old.start()
            old.wait_ready()
        setup.wait_linked()
    assert "Traceback" not in deployment.output()


def test_cluster_triggers_cross_nodes_on_every_shard(
    redis_cluster: ClusterSetup, receiver: WebhookReceiver, uid: str
) -> None:
    setup = redis_cluster
    for proc in setup.nodes:
        command(proc.port, "CONFIG", "RESETSTAT")  # other tests provoke CROSSSLOT on purpose
    deployment = deploy(_config(receiver), "cluster")
    a, b = deployment.nodes
    prefix = next(
        line.split("prefix=")[1].split()[0]
        for line in deployment.output().splitlines()
        if "prefix=" in line
    )
    link = connect(UrlSettings(setup.url, cluster=True))  # only names bus channels
    wanted = set(link.bus_channels(prefix))
    channels: dict[bytes, str] = {}
    n = 0
    while set(channels) != wanted:
        name = f"shard-{uid}-{n}"
        channels.setdefault(link.bus_channel(prefix, MAIN.id, name), name)
        n += 1
    shards = {setup.owner(key_slot(bus)) for bus in channels}
    assert len(shards) == 3, "the bus channels lie on every shard"
    listener = Listener(a.port)
    try:
        for name in channels.values():
            listener.sock.subscribe(name)
        listener.start()
        api = sdk(b.port)
        for name in channels.values():
            api.trigger(name, "hello", {"channel": name})
        _wait(
            lambda: {e["channel"] for e in listener.events("hello")} == set(channels.values()),
            10,
            "a trigger on node B on every channel to reach node A",
        )
        # Every state script, on one app slot: presence join and leave, sign-in, cache.
        members = [PusherSocket(port) for port in (a.port, b.port)]
        for i, sock in enumerate(members):
            sock.signed_subscribe(f"presence-cl-{uid}", f"user-{i}", {"i": i})
            sock.subscribe(f"cache-cl-{uid}")
        api.trigger(f"cache-cl-{uid}", "cached", {})
        info = sdk(a.port).channel_info(f"presence-cl-{uid}", ["user_count"])
        assert info["user_count"] == 2
        for sock in members:
            sock.close()
        hooks = {f"presence-cl-{uid}"}
        _wait(
            lambda: (
                ("member_removed", "user-1") in _hooks(receiver, hooks)
                and ("member_removed", "user-0") in _hooks(receiver, hooks)
            ),
            10,
            "the leaves' webhooks",
        )
    finally:
        listener.close()
        deployment.stop()
    for proc in setup.nodes:
        stats = command(proc.port, "INFO", "errorstats")
        assert "CROSSSLOT" not in stats, stats
    output = deployment.output()
    assert "CROSSSLOT" not in output and "Traceback" not in output, output[-3000:]


def test_cluster_master_killed_under_two_nodes(receiver: WebhookReceiver, uid: str) -> None:
    """Three masters with a replica each; the master holding the app's keys, the webhook
    queue and the bus channel of the watched channel is SIGKILLed. Triggers on node B reach
    node A again within the cluster's own failover plus 5 s; presence members and
    `user_count` are right on both nodes afterwards, and no webhook is lost or sent twice
    for the members who stayed (the same checks as the Sentinel test's)."""
    setup = ClusterSetup(replicas=1)
    deployment = None
    listener = None
    try:
        # The app's keys hash by the app id; the webhook queue's by the prefix: pick a
        # prefix that puts the queue on the same master, so the kill hits it too.
        victim = setup.owner(key_slot(f"any:channels:{{{MAIN.id}}}".encode()))
        prefix = next(
            candidate
            for candidate in (f"fo{n}" for n in range(1000))
            if setup.owner(key_slot(f"{{{candidate}:webhooks}}:due".encode())) == victim
        )
        env = {
            "PYSERVER_REDIS_URL": setup.url,
            "PYSERVER_REDIS_CLUSTER": "true",
            "PYSERVER_REDIS_PREFIX": prefix,
        }
        deployment = deploy(_config(receiver), "redis", env=env)
        a, b = deployment.nodes
        link = connect(UrlSettings(setup.url, cluster=True))  # only names bus channels
        channel = next(
            name
            for name in (f"ticks-{uid}-{n}" for n in range(1000))
            if setup.owner(key_slot(link.bus_channel(prefix, MAIN.id, name))) == victim
        )
        presence = f"presence-cl-{uid}"
        mine = {channel, presence}
        listener = Listener(a.port)
        listener.sock.subscribe(channel)
        listener.start()
        member_a, member_b = PusherSocket(a.port), PusherSocket(b.port)
        member_a.signed_subscribe(presence, "stay-a", {})
        member_b.signed_subscribe(presence, "stay-b", {})
        api = sdk(b.port)
        api.trigger(channel, "tick", {"n": 0})
        _wait(lambda: listener.events("tick"), 5, "a first trigger across nodes")
        before = {
            ("member_added", "stay-a"),
            ("member_added", "stay-b"),
            ("channel_occupied", channel),
            ("channel_occupied", presence),
        }
        _wait(lambda: before <= set(_hooks(receiver, mine)), 10, f"the first webhooks: {before}")
        time.sleep(1.0)  # the queue's delivered reports reach the replicas
        slot = key_slot(link.bus_channel(prefix, MAIN.id, channel))
        started, started_wall = time.monotonic(), time.time()
        setup.node(victim).kill()
        promoted: list[float] = []

        def watch() -> None:
            def moved() -> bool:
                try:
                    return setup.owner(slot) != victim and setup.ok()
                except LookupError:
                    return False

            _wait(moved, 30, "the cluster to promote a replica")
            promoted.append(time.monotonic() - started)

        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        sent: dict[int, float] = {}
        seq = 0
        while time.monotonic() - started < 45:
            seq += 1
            sent[seq] = time.monotonic()
            api.trigger(channel, "tick", {"n": seq})
            time.sleep(0.25)
            if promoted and time.monotonic() - started > promoted[0] + SLACK + 3:
                break
        time.sleep(1.0)
        watcher.join(30)
        assert promoted, "the cluster never promoted a replica"
        got = {e["n"] for e in listener.events("tick")}
        missing = [n for n in sent if n not in got]
        recovered = sent[max(missing) + 1] - started if missing else 0.0
        print(
            f"\ncluster master killed: replica promoted after {promoted[0]:.2f} s, triggers "
            f"crossed again after {recovered:.2f} s ({len(missing)} of {len(sent)} missed)"
        )
        assert max(missing, default=0) < seq, "the last triggers never crossed"
        assert recovered <= promoted[0] + SLACK
        _wait(lambda: _ready(a.port) and _ready(b.port), 15, "both nodes ready")
        _assert_presence_whole((a.port, b.port), presence, ["stay-a", "stay-b"])
        _assert_webhooks_once(receiver, mine, started_wall, b.port, presence)
        member_a.close()
        member_b.close()
    finally:
        if listener is not None:
            listener.close()
        if deployment is not None:
            deployment.stop()
        setup.stop()
