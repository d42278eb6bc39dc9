"""What only the Redis store does: epochs that change when Redis loses the keys (a restart
without persistence, a lost meta hash), one hash slot per channel, exact caps, and nodes that
share one order. Against real redis-server processes."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
from redis.asyncio import Redis
from redis.crc import key_slot

from pyserver.config import HistoryRule
from pyserver.history.redis import RedisHistoryStore
from pyserver.history.store import Direction, Loss, OtherEpoch
from pyserver.protocol import frames
from tests.history.conftest import Clock
from tests.redisproc import RedisProcess

RULE = HistoryRule(channels="*", limit=5, ttl=60, rewind=2)


@pytest.fixture
def own_redis() -> Iterator[RedisProcess]:
    """A redis-server of this test alone (it gets restarted)."""
    server = RedisProcess()
    yield server
    server.stop()


def frame(n: int, channel: str = "chat-1") -> bytes:
    return frames.channel_event("m", channel, str(n))


async def until_reachable(store: RedisHistoryStore) -> None:
    for _ in range(50):
        try:
            await store.redis.ping()
            return
        except Exception:
            await asyncio.sleep(0.1)


def test_a_redis_restart_without_persistence_is_a_new_epoch(own_redis: RedisProcess) -> None:
    clock = Clock()

    async def before_restart() -> list:
        store = RedisHistoryStore.from_url(own_redis.url, clock=clock)
        positions = [await store.append("a", "chat-1", RULE, frame(n), n) for n in range(3)]
        await store.close()
        return positions

    async def after_restart(old: list) -> None:
        store = RedisHistoryStore.from_url(own_redis.url, clock=clock)
        await until_reachable(store)
        head = await store.head("a", "chat-1", RULE)
        assert head.epoch != old[0].epoch and head.position.serial == 0
        caught = await store.since("a", "chat-1", RULE, old[-1])
        assert caught.lost is Loss.EPOCH and caught.head.epoch == head.epoch
        with pytest.raises(OtherEpoch) as refused:
            await store.read("a", "chat-1", RULE, 10, Direction.BACKWARD, before=old[1])
        assert refused.value.head.epoch == head.epoch
        new = await store.append("a", "chat-1", RULE, frame(9), 9)
        assert new.epoch == head.epoch and new.serial == 1, "the head named the new epoch"
        await store.close()

    old = asyncio.run(before_restart())
    own_redis.stop()
    own_redis.start()
    asyncio.run(after_restart(old))


def test_a_lost_meta_hash_is_a_new_epoch_and_drops_the_orphan_stream(
    redis_server: RedisProcess,
) -> None:
    async def scenario() -> None:
        store = RedisHistoryStore.from_url(redis_server.url, prefix="lostmeta", clock=Clock())
        meta, stream = store.keys("a", "chat-1")
        old = [await store.append("a", "chat-1", RULE, frame(n), n) for n in range(3)]
        await store.redis.delete(meta)
        head = await store.head("a", "chat-1", RULE)
        assert head.epoch != old[0].epoch
        assert await store.redis.exists(stream) == 0, "entries of a lost epoch are not served"
        assert not (await store.last("a", "chat-1", RULE, 5)).entries
        assert (await store.since("a", "chat-1", RULE, old[0])).lost is Loss.EPOCH
        await store.close()

    asyncio.run(scenario())


def test_a_lost_stream_with_its_meta_kept_is_a_gap_not_a_new_epoch(
    redis_server: RedisProcess,
) -> None:
    async def scenario() -> None:
        store = RedisHistoryStore.from_url(redis_server.url, prefix="loststream", clock=Clock())
        _meta, stream = store.keys("a", "chat-1")
        old = [await store.append("a", "chat-1", RULE, frame(n), n) for n in range(3)]
        await store.redis.delete(stream)
        head = await store.head("a", "chat-1", RULE)
        assert head.position == old[-1]
        assert (await store.since("a", "chat-1", RULE, old[0])).lost is Loss.TTL
        assert (await store.since("a", "chat-1", RULE, old[-1])).lost is None
        nxt = await store.append("a", "chat-1", RULE, frame(4), 4)
        assert nxt.serial == 4 and nxt.epoch == old[0].epoch
        await store.close()

    asyncio.run(scenario())


def test_keys_share_one_hash_slot_per_app_and_channel(redis_server: RedisProcess) -> None:
    store = RedisHistoryStore(Redis.from_url(redis_server.url), prefix="p{x")
    for app, channel in [("a", "chat-1"), ("a}b", "c"), ("1", "presence-room.1;x=2")]:
        meta, stream = store.keys(app, channel)
        assert key_slot(meta.encode()) == key_slot(stream.encode()), (meta, stream)
    slots = {key_slot(store.keys("a", f"chat-{n}")[0].encode()) for n in range(50)}
    assert len(slots) > 40, "channels spread over slots"


def test_the_stream_is_capped_exactly_and_expires_whole(redis_server: RedisProcess) -> None:
    async def scenario() -> None:
        store = RedisHistoryStore.from_url(redis_server.url, prefix="cap", clock=Clock())
        meta, stream = store.keys("a", "chat-1")
        for n in range(12):
            await store.append("a", "chat-1", RULE, frame(n), n)
        assert await store.redis.xlen(stream) == RULE.limit
        assert 0 < await store.redis.pttl(stream) <= RULE.ttl * 1000
        assert await store.redis.pttl(meta) > 29 * 86_400 * 1000, "the epoch outlives events"
        await store.close()

    asyncio.run(scenario())


def test_two_nodes_share_one_order(redis_server: RedisProcess) -> None:
    async def scenario() -> None:
        clock_a, clock_b = Clock(), Clock(1_760_000_000.0 - 5)  # b's clock is 5 s behind
        a = RedisHistoryStore.from_url(redis_server.url, prefix="nodes", clock=clock_a)
        b = RedisHistoryStore.from_url(redis_server.url, prefix="nodes", clock=clock_b)
        positions = []
        for n in range(6):
            node = a if n % 2 == 0 else b
            positions.append(await node.append("a", "chat-1", RULE, frame(n), n))
        assert [p.serial for p in positions] == [1, 2, 3, 4, 5, 6]
        stamps = [p.stamp for p in positions]
        assert stamps == sorted(stamps), "a clock behind never reorders the stream"
        from_b = await b.since("a", "chat-1", RULE, positions[1])
        assert [e.position for e in from_b.entries] == positions[2:]
        await a.close()
        await b.close()

    asyncio.run(scenario())
