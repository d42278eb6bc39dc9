"""`pyserver.cluster.redis_connect` against real Redis processes (tests/redisprocs.py): a
single server, a master and replica behind three Sentinels, a three-master Redis Cluster.

- Every topology: commands run, a published message reaches a subscriber.
- Sentinel: after `SENTINEL FAILOVER`, and after the master's process is SIGKILLed, the
  same link and subscriber publish, receive and run commands on the new master within the
  Sentinels' own failover time plus 5 s; the link reports the master change and the bus
  reports the loss and the return of its subscription. Timings are printed (`-s`).
- Cluster: the bus channels cover every shard, a message on a channel of each shard
  arrives, the subscriber holds SSUBSCRIBEs (PUBSUB SHARDCHANNELS) and no classic
  subscription, the publisher sends SPUBLISH (INFO commandstats), and a script with keys of
  one hash tag runs while one with keys of two slots is refused with CROSSSLOT. With a
  replica per master, a SIGKILLed master's slots work again (commands and bus) within the
  cluster's own promotion time plus 5 s, and the other shards deliver meanwhile.
- A single server restarted under a running subscriber: loss and return are reported.
- `most_connections()`: a single server's link, with more callers blocked at once than its
  pool holds, has exactly that many connections open on the server, its subscriber's among
  them; Sentinel adds one per Sentinel, a cluster counts a pool and a subscriber connection
  per shard once the slot map is read.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from redis.crc import key_slot
from redis.exceptions import RedisClusterException, RedisError

from pyserver.cluster.redis_connect import (
    BUS_SHARDS,
    CLUSTER_POOL_SIZE,
    POOL_SIZE,
    BusSubscriber,
    RedisLink,
    connect,
    wait_ready,
)
from pyserver.config import load_settings
from tests.redisprocs import ClusterSetup, SentinelSetup, SingleRedis, command, wait_until

PREFIX = "t"


class Probe:
    """A link with a running subscriber on the bus, and what it saw."""

    def __init__(self, link: RedisLink) -> None:
        self.link = link
        self.received: list[tuple[bytes, bytes]] = []
        self.events: list[tuple[str, float]] = []
        """("lost" | "restored" | "moved", time.monotonic())"""
        self.master_changes: list[tuple[str, str]] = []
        self.subscriber: BusSubscriber = link.subscriber(
            link.bus_channels(PREFIX),
            lambda channel, data: self.received.append((channel, data)),
            on_lost=lambda exc: self.events.append(("lost", time.monotonic())),
            on_restored=lambda: self.events.append(("restored", time.monotonic())),
        )
        link.on_master_change(self._moved)
        self.task: asyncio.Task[None] | None = None

    def _moved(self, old: str, new: str) -> None:
        self.master_changes.append((old, new))
        self.events.append(("moved", time.monotonic()))

    def kinds(self) -> list[str]:
        return [kind for kind, _ in self.events]

    def timeline(self, since: float) -> str:
        return ", ".join(f"{kind} +{at - since:.2f}s" for kind, at in self.events)

    async def __aenter__(self) -> Probe:
        await self.link.start()
        await wait_ready(self.link)
        self.task = asyncio.create_task(self.subscriber.run())
        await asyncio.wait_for(self.subscriber.ready.wait(), 10)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.subscriber.aclose()
        if self.task is not None:
            self.task.cancel()
            await asyncio.gather(self.task, return_exceptions=True)
        await self.link.aclose()

    async def wait_for(
        self, read: Callable[[], Any], done: Callable[[Any], bool], what: str, timeout: float = 10
    ) -> Any:
        """`read()` once `done(read())`, polled; fails naming `what` after `timeout` s."""
        deadline = time.monotonic() + timeout
        while not done(value := read()):
            assert time.monotonic() < deadline, f"{what}: not within {timeout} s: {self.events}"
            await asyncio.sleep(0.02)
        return value

    async def roundtrip(self, app: str = "app", channel: str = "ch", wait: float = 5) -> bool:
        """Publish a unique message and wait for it; also SET and GET a key. False when any
        step failed (Redis unreachable) or the message did not come back in `wait`."""
        token = uuid.uuid4().hex.encode()
        try:
            await self.link.publish(self.link.bus_channel(PREFIX, app, channel), token)
            key = f"{PREFIX}:{{{app}}}:probe"
            await self.link.client.set(key, token)
            if await self.link.client.get(key) != token:
                return False
        except (RedisError, OSError):
            return False
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if any(data == token for _, data in self.received):
                return True
            await asyncio.sleep(0.02)
        return False


def run(coro: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(asyncio.wait_for(coro(), 90))


# --- single server -------------------------------------------------------------------------


def test_single_server_commands_and_bus(redis_single: SingleRedis) -> None:
    async def scenario() -> None:
        link = connect(load_settings(adapter="redis", redis_url=redis_single.url))
        assert link.mode == "single"
        assert link.bus_channels(PREFIX) == [b"t:bus"]
        async with Probe(link) as probe:
            assert await probe.roundtrip()
            messages = [(b"t:bus", b"batch-%d" % i) for i in range(50)]
            await link.publish_many(messages)
            batch = await probe.wait_for(
                lambda: [m for m in probe.received if m[1].startswith(b"batch-")],
                lambda got: len(got) >= len(messages),
                "the batch",
            )
            assert batch == messages

    run(scenario)


def test_a_restarted_server_is_resubscribed_and_reported() -> None:
    redis = SingleRedis()
    try:

        async def scenario() -> None:
            link = connect(load_settings(adapter="redis", redis_url=redis.url))
            async with Probe(link) as probe:
                assert await probe.roundtrip()
                await asyncio.to_thread(redis.server.stop)
                await probe.wait_for(probe.kinds, lambda kinds: "lost" in kinds, "the loss")
                assert probe.kinds()[:1] == ["lost"]
                assert not await probe.roundtrip(wait=0.2)
                await asyncio.to_thread(redis.server.start)
                await asyncio.to_thread(redis.server.wait_ready)
                deadline = time.monotonic() + 10
                while not await probe.roundtrip(wait=0.5):
                    assert time.monotonic() < deadline, probe.events
                assert probe.kinds()[-1] == "restored"
                assert probe.subscriber.outages >= 1

        run(scenario)
    finally:
        redis.stop()


# --- Sentinel ------------------------------------------------------------------------------


def sentinel_link(setup: SentinelSetup) -> RedisLink:
    settings = load_settings(
        adapter="redis",
        redis_sentinels=setup.sentinel_addresses,
        redis_sentinel_master=setup.master_name,
    )
    link = connect(settings)
    assert link.mode == "sentinel"
    return link


def _connections_doing(port: int, *commands: str) -> int:
    """Client connections of the server whose current (or last) command is one of these."""
    listed = command(port, "CLIENT", "LIST")
    return sum(1 for line in listed.splitlines() if any(f" cmd={c} " in line for c in commands))


def test_most_connections_is_what_a_busy_single_server_link_holds(
    redis_single: SingleRedis,
) -> None:
    port = redis_single.server.port

    async def scenario() -> None:
        link = connect(load_settings(adapter="redis", redis_url=redis_single.url))
        most = link.most_connections()
        assert most == POOL_SIZE
        async with Probe(link):
            key = f"{PREFIX}:empty:{uuid.uuid4().hex}"
            callers = POOL_SIZE + 20
            blocked = [
                asyncio.create_task(link.client.blpop([key], timeout=10)) for _ in range(callers)
            ]
            # Every connection of the pool in use: the subscriber's and POOL_SIZE - 1 BLPOPs;
            # the other callers wait for a connection instead of opening one.
            deadline = time.monotonic() + 10
            while _connections_doing(port, "blpop") < most - 1:
                assert time.monotonic() < deadline, command(port, "CLIENT", "LIST")
                await asyncio.sleep(0.05)
            assert _connections_doing(port, "blpop", "subscribe") == most
            assert not any(task.done() for task in blocked)
            command(port, "RPUSH", key, *(str(n) for n in range(callers)))
            assert len(await asyncio.gather(*blocked)) == callers
            assert _connections_doing(port, "blpop", "subscribe") <= most

    run(scenario)


def test_sentinel_commands_and_bus(redis_sentinel: SentinelSetup) -> None:
    async def scenario() -> None:
        async with Probe(sentinel_link(redis_sentinel)) as probe:
            assert probe.link.most_connections() == POOL_SIZE + 3  # one per Sentinel
            assert await probe.roundtrip()
            master = redis_sentinel.master_port()
            assert probe.link.describe().endswith(f"127.0.0.1:{master}")
            # The write went to the master the Sentinels name, not to the replica.
            assert command(master, "GET", f"{PREFIX}:{{app}}:probe") != ""

    run(scenario)


@pytest.mark.parametrize("how", ["sentinel-failover", "kill-master"])
def test_sentinel_failover_is_followed_without_a_restart(
    redis_sentinel: SentinelSetup, how: str
) -> None:
    async def scenario() -> None:
        async with Probe(sentinel_link(redis_sentinel)) as probe:
            assert await probe.roundtrip()
            old = redis_sentinel.master()
            old_port = old.port
            started = time.monotonic()
            if how == "kill-master":
                await asyncio.to_thread(old.kill)
            else:
                await asyncio.to_thread(redis_sentinel.failover)

            def wait_promoted() -> tuple[int, float]:
                port = redis_sentinel.wait_for_new_master(old_port)
                return port, time.monotonic() - started

            promoted = asyncio.create_task(asyncio.to_thread(wait_promoted))
            recovered_at: float | None = None
            while recovered_at is None:
                assert time.monotonic() - started < 60, f"never recovered: {probe.events}"
                # Counted only for a round trip begun once the link follows the new master.
                following = not probe.link.describe().endswith(f":{old_port}")
                if await probe.roundtrip(wait=0.5):
                    if following:
                        recovered_at = time.monotonic()
                else:
                    await asyncio.sleep(0.1)
            new_port, promoted_after = await promoted
            recovered_after = recovered_at - started
            print(
                f"\n{how}: Sentinels named the new master within {promoted_after:.2f} s "
                f"(measured by polling them), the client recovered after "
                f"{recovered_after:.2f} s; {probe.timeline(started)}"
            )
            assert recovered_after <= promoted_after + 5
            assert probe.link.describe().endswith(f"127.0.0.1:{new_port}")
            assert command(new_port, "GET", f"{PREFIX}:{{app}}:probe") != ""
            assert (f"127.0.0.1:{old_port}", f"127.0.0.1:{new_port}") in probe.master_changes
            # The bus went through the change: lost, then subscribed again (to the new
            # master: its PUBSUB NUMSUB counts our subscription).
            assert "lost" in probe.kinds() and probe.kinds()[-1] == "restored"
            numsub = command(new_port, "PUBSUB", "NUMSUB", f"{PREFIX}:bus")
            assert numsub.split("\r\n")[-1] == ":1", numsub
            # A few more rounds, all good.
            for _ in range(5):
                assert await probe.roundtrip()
        if how == "kill-master":
            # Bring the killed server back as a replica, for the tests after this one.
            old.args = ["--replicaof", "127.0.0.1", str(new_port)]
            old.start()
            old.wait_ready()
            redis_sentinel.wait_linked()

    run(scenario)


# --- Redis Cluster -------------------------------------------------------------------------


def cluster_link(setup: ClusterSetup) -> RedisLink:
    link = connect(load_settings(adapter="redis", redis_url=setup.url, redis_cluster=True))
    assert link.mode == "cluster"
    return link


def slot_owners(setup: ClusterSetup) -> dict[int, int]:
    """Port of the node owning each slot, from CLUSTER SHARDS of the first node."""
    owners: dict[int, int] = {}
    for node in setup.nodes:
        for line in command(node.port, "CLUSTER", "NODES").splitlines():
            fields = line.split()
            if "myself" not in fields[2]:
                continue
            for part in fields[8:]:
                low, _, high = part.partition("-")
                for slot in range(int(low), int(high or low) + 1):
                    owners[slot] = node.port
    assert len(owners) == 16384
    return owners


def commandstats(port: int) -> dict[str, int]:
    stats = {}
    for line in command(port, "INFO", "commandstats").splitlines():
        if line.startswith("cmdstat_"):
            name, _, rest = line.partition(":")
            stats[name.removeprefix("cmdstat_")] = int(rest.split(",")[0].split("=")[1])
    return stats


def test_bus_channels_spread_evenly_over_the_slots() -> None:
    link = connect(load_settings(adapter="redis", redis_cluster=True))
    channels = link.bus_channels(PREFIX)
    assert len(channels) == BUS_SHARDS
    ranges = sorted(key_slot(c) * BUS_SHARDS // 16384 for c in channels)
    assert ranges == list(range(BUS_SHARDS))
    assert {link.bus_channel(PREFIX, "app", f"ch{i}") for i in range(200)} == set(channels)
    # Another prefix, the same slots: every deployment spreads the same way.
    assert [key_slot(c) for c in link.bus_channels("other")] == [key_slot(c) for c in channels]


def test_cluster_bus_reaches_a_subscriber_from_every_shard(redis_cluster: ClusterSetup) -> None:
    owners = slot_owners(redis_cluster)

    async def scenario() -> None:
        link = cluster_link(redis_cluster)
        by_port: dict[int, list[bytes]] = {}
        for channel in link.bus_channels(PREFIX):
            by_port.setdefault(owners[key_slot(channel)], []).append(channel)
        assert set(by_port) == {node.port for node in redis_cluster.nodes}
        before = {port: commandstats(port) for port in by_port}
        assert link.most_connections() == CLUSTER_POOL_SIZE  # no slot map, no subscriber yet
        async with Probe(link) as probe:
            # Three shards, each with a pool and a connection of the probe's subscriber.
            assert link.most_connections() == 3 * (CLUSTER_POOL_SIZE + 1)
            # SSUBSCRIBE, on the owner of each channel's slot; no classic subscription.
            for port, channels in by_port.items():
                listed = command(port, "PUBSUB", "SHARDCHANNELS")
                for channel in channels:
                    assert channel.decode() in listed, (port, listed)
                assert command(port, "PUBSUB", "CHANNELS") in ("*0", "")
            for port, channels in by_port.items():
                for channel in channels:
                    token = f"to-{port}-{channel.decode()}".encode()
                    await link.publish(channel, token)
            await link.publish_many([(c, b"batch") for c in link.bus_channels(PREFIX)])
            deadline = time.monotonic() + 5
            while len(probe.received) < 2 * BUS_SHARDS and time.monotonic() < deadline:
                await asyncio.sleep(0.02)
            assert sorted(c for c, d in probe.received if d == b"batch") == sorted(
                link.bus_channels(PREFIX)
            )
            got = {d for _, d in probe.received}
            for port, channels in by_port.items():
                for channel in channels:
                    assert f"to-{port}-{channel.decode()}".encode() in got
            assert await probe.roundtrip()
        for port in by_port:
            after = commandstats(port)
            assert after.get("spublish", 0) > before[port].get("spublish", 0), port
            assert after.get("publish", 0) == before[port].get("publish", 0), port

    run(scenario)


def test_cluster_scripts_with_one_hash_tag_run_and_others_are_refused(
    redis_cluster: ClusterSetup,
) -> None:
    script = "redis.call('HSET', KEYS[1], ARGV[1], 1); return redis.call('SADD', KEYS[2], ARGV[1])"

    async def scenario() -> None:
        link = cluster_link(redis_cluster)
        try:
            registered: Any = link.client.register_script(script)
            tag = "{app-1:presence-room}"
            for index in range(3):
                keys = [f"{PREFIX}:subs:{tag}", f"{PREFIX}:channels:{tag}"]
                assert await registered(keys=keys, args=[f"node-{index}"]) == 1
            spread = [f"{PREFIX}:subs:app-1:room", f"{PREFIX}:channels:app-1"]
            assert key_slot(spread[0].encode()) != key_slot(spread[1].encode())
            # redis-py refuses before sending; Redis itself answers CROSSSLOT.
            with pytest.raises(RedisClusterException, match="same key slot"):
                await registered(keys=spread, args=["x"])
            owner = slot_owners(redis_cluster)[key_slot(spread[0].encode())]
            reply = command(owner, "EVAL", script, "2", *spread, "x")
            assert reply.startswith("-CROSSSLOT"), reply
        finally:
            await link.aclose()

    run(scenario)


def test_cluster_failover_is_followed_by_commands_and_the_bus() -> None:
    """Three masters with a replica each; the master serving a bus channel and a key of one
    app is SIGKILLed. The same link's commands and bus work again once the cluster has
    promoted the replica (plus 5 s at most), and the other shards keep delivering."""
    setup = ClusterSetup(replicas=1)
    try:

        async def scenario() -> None:
            link = cluster_link(setup)
            async with Probe(link) as probe:
                victim = setup.owner(key_slot(link.bus_channel(PREFIX, "a0", "ch")))
                app = next(
                    f"a{i}"
                    for i in range(1000)
                    if setup.owner(key_slot(link.bus_channel(PREFIX, f"a{i}", "ch"))) == victim
                    and setup.owner(key_slot(f"{PREFIX}:{{a{i}}}:probe".encode())) == victim
                )
                survivor_app = next(
                    f"s{i}"
                    for i in range(1000)
                    if setup.owner(key_slot(link.bus_channel(PREFIX, f"s{i}", "ch"))) != victim
                )
                assert await probe.roundtrip(app)
                slot = key_slot(link.bus_channel(PREFIX, app, "ch"))
                started = time.monotonic()
                lost = probe.kinds().count("lost")
                await asyncio.to_thread(setup.node(victim).kill)

                # While the cluster has not failed over, the other shards still deliver, once
                # the subscriber has noticed the dead shard too.
                bus = link.bus_channel(PREFIX, survivor_app, "ch")
                await probe.wait_for(
                    probe.kinds, lambda kinds: kinds.count("lost") > lost, "the shard's loss"
                )
                await link.publish(bus, b"while-down")
                await probe.wait_for(
                    lambda: probe.received, lambda got: (bus, b"while-down") in got, "while-down"
                )

                def wait_promoted() -> float:
                    def promoted() -> bool:
                        try:
                            return setup.owner(slot) != victim and setup.ok()
                        except LookupError:  # no live master serves the slot yet
                            return False

                    wait_until(promoted, 30, "the cluster to promote a replica")
                    return time.monotonic() - started

                promotion = asyncio.create_task(asyncio.to_thread(wait_promoted))
                while not await probe.roundtrip(app, wait=0.5):
                    assert time.monotonic() - started < 60, probe.timeline(started)
                    await asyncio.sleep(0.1)
                recovered_after = time.monotonic() - started
                promoted_after = await promotion
                print(
                    f"\ncluster master killed: replica promoted after {promoted_after:.2f} s "
                    f"(cluster-node-timeout {setup.NODE_TIMEOUT_MS} ms), the client recovered "
                    f"after {recovered_after:.2f} s; {probe.timeline(started)}"
                )
                assert recovered_after <= promoted_after + 5
                assert probe.kinds()[-1] == "restored"
                for _ in range(5):
                    assert await probe.roundtrip(app)
                    assert await probe.roundtrip(survivor_app)

        run(scenario)
    finally:
        setup.stop()
