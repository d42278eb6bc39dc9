"""The durable webhook queue against a real Redis, in-process: competing claimers never hold
one delivery at once, a dead claimer's lease runs out and another takes over, and a late
report from an expired lease changes nothing (fencing). Then whole senders on one Redis, in
front of a real receiver that holds every request, so two sends of one delivery would show."""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import Iterator

import pytest
import redis.asyncio as aioredis

from pyserver.webhooks.delivery import Delivery
from pyserver.webhooks.redis_queue import RedisQueue
from pyserver.webhooks.redis_store import RedisDeliveryStore
from pyserver.webhooks.sender import WebhookSender
from tests.cluster.watching_receiver import WatchingReceiver
from tests.redisproc import RedisProcess, free_port

_prefixes = itertools.count()


@pytest.fixture(scope="module")
def redis() -> Iterator[RedisProcess]:
    proc = RedisProcess()
    yield proc
    proc.stop()


@pytest.fixture
def prefix() -> str:
    return f"wq{next(_prefixes)}"


def _record(n: int, url: str = "http://127.0.0.1:9/x", expires_in: float = 300) -> bytes:
    delivery = Delivery(url, f'{{"time_ms":{n},"events":[]}}'.encode(), {}, "app", 0)
    delivery.expires_at = time.time() + expires_in
    return delivery.to_record()


def _stores(redis: RedisProcess, prefix: str, n: int) -> list[RedisDeliveryStore]:
    """`n` claimers, each with a client of its own, as on `n` nodes."""
    return [RedisDeliveryStore(aioredis.Redis.from_url(redis.url), prefix) for _ in range(n)]


async def _close(*stores: RedisDeliveryStore) -> None:
    for store in stores:
        await store.redis.aclose()


def test_competing_claimers_never_share_and_a_dead_claimers_lease_runs_out(
    redis: RedisProcess, prefix: str
) -> None:
    async def scenario() -> None:
        a, b = _stores(redis, prefix, 2)
        accepted, depth = await a.add([(f"d{n}", _record(n)) for n in range(10)], limit=100)
        assert accepted == [True] * 10 and depth == 10
        first = await a.claim(6, lease=0.6)
        second = await b.claim(10, lease=5)
        held_by_a = {c.key for c in first.claims}
        assert len(held_by_a) == 6 and len(second.claims) == 4
        assert held_by_a.isdisjoint(c.key for c in second.claims)
        nothing = await b.claim(10, lease=5)
        assert nothing.claims == [] and nothing.depth == 10
        assert nothing.next_due is not None and 0 < nothing.next_due <= 0.6
        await asyncio.sleep(0.7)  # a "died" holding six: its leases run out
        taken_over = await b.claim(10, lease=5)
        assert {c.key for c in taken_over.claims} == held_by_a
        assert all(c.tries == 2 for c in taken_over.claims), "the lost attempt counts"
        assert min(c.token for c in taken_over.claims) > max(c.token for c in first.claims)
        assert all(Delivery.from_record(c.record).body for c in taken_over.claims)
        await _close(a, b)

    asyncio.run(scenario())


def test_a_late_report_from_an_expired_lease_changes_nothing(
    redis: RedisProcess, prefix: str
) -> None:
    async def scenario() -> None:
        a, b, c = _stores(redis, prefix, 3)
        await a.add([("d", _record(1))], limit=100)
        (old,) = (await a.claim(1, lease=0.2)).claims
        await asyncio.sleep(0.3)
        (current,) = (await b.claim(1, lease=30)).claims
        assert current.token > old.token
        # a's failure report would have made the delivery due while b is sending it
        assert await a.reschedule("d", old.token, 0) is False
        assert await a.drop("d", old.token) is False
        assert await a.release("d", old.token) is False
        assert (await c.claim(1, lease=30)).claims == [], "b's lease still holds"
        assert await a.depth() == 1
        # b's own report counts
        assert await b.reschedule("d", current.token, 0) is True
        (third,) = (await c.claim(1, lease=30)).claims
        assert third.tries == 3
        # a late success still ends the delivery (the receiver has it), but says it was late
        assert await b.delivered("d", current.token) is False
        assert await a.depth() == 0
        assert await c.reschedule("d", third.token, 0) is False, "nothing to resurrect"
        assert await a.depth() == 0 and await a.redis.hlen(a.records) == 0
        await _close(a, b, c)

    asyncio.run(scenario())


def test_add_is_idempotent_and_bounded_and_release_does_not_count_a_try(
    redis: RedisProcess, prefix: str
) -> None:
    async def scenario() -> None:
        (store,) = _stores(redis, prefix, 1)
        await store.add([("same", _record(1))], limit=3)
        accepted, depth = await store.add(
            [("same", _record(1)), ("x", _record(2)), ("y", _record(3)), ("z", _record(4))],
            limit=3,
        )
        assert accepted == [True, True, True, False] and depth == 3
        claims = (await store.claim(3, lease=30)).claims
        assert {c.tries for c in claims} == {1}
        assert await store.release(claims[0].key, claims[0].token) is True
        (again,) = (await store.claim(3, lease=30)).claims
        assert again.key == claims[0].key and again.tries == 1
        # every record is in the due set exactly once, and claims keep it so
        assert await store.redis.zcard(store.due) == await store.redis.hlen(store.records) == 3
        await _close(store)

    asyncio.run(scenario())


def test_many_claimers_racing_take_each_delivery_exactly_once(
    redis: RedisProcess, prefix: str
) -> None:
    async def scenario() -> None:
        stores = _stores(redis, prefix, 4)
        await stores[0].add([(f"d{n}", _record(n)) for n in range(300)], limit=1000)
        taken: list[str] = []

        async def claimer(store: RedisDeliveryStore) -> None:
            while True:
                result = await store.claim(7, lease=30)
                if not result.claims:
                    return
                taken.extend(c.key for c in result.claims)
                for claim in result.claims:
                    assert await store.delivered(claim.key, claim.token)

        await asyncio.gather(*(claimer(s) for s in stores))
        assert sorted(taken) == sorted(f"d{n}" for n in range(300))
        assert await stores[0].depth() == 0
        await _close(*stores)

    asyncio.run(scenario())


def _sender(redis: RedisProcess, prefix: str, lease: float = 30) -> WebhookSender:
    queue = RedisQueue(
        aioredis.Redis.from_url(redis.url), prefix, maxsize=1000, lease=lease, poll=0.2
    )
    return WebhookSender(
        queue_size=1000,
        concurrency=4,
        timeout=5,
        retry_window=300,
        retry_base=0.2,
        queue=queue,
    )


def _delivery(receiver: WatchingReceiver, n: int) -> Delivery:
    body = f'{{"time_ms":{n},"events":[{{"name":"n{n}"}}]}}'.encode()
    return Delivery(receiver.url(), body, {"X-N": str(n)}, "app", time.time() + 300)


def test_two_nodes_on_one_queue_send_each_delivery_once_and_never_at_once(
    redis: RedisProcess, prefix: str
) -> None:
    receiver = WatchingReceiver(hold=0.05, failing=True)

    async def scenario() -> tuple[WebhookSender, WebhookSender]:
        a, b = _sender(redis, prefix), _sender(redis, prefix)
        a.start()
        b.start()
        for n in range(40):
            (a if n % 2 else b).submit(_delivery(receiver, n))
        await asyncio.sleep(1.0)  # every one fails at least once; retries spread over both
        receiver.failing = False
        deadline = time.monotonic() + 20
        while len(receiver.answered()) < 40 and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.5)  # anything sent twice would arrive meanwhile
        await a.close(1)
        await b.close(1)
        return a, b

    try:
        a, b = asyncio.run(scenario())
        ok = receiver.answered()
        assert sorted(r.json["time_ms"] for r in ok) == list(range(40)), "each once, body intact"
        assert {r.headers["x-n"] for r in ok} == {str(n) for n in range(40)}
        assert receiver.overlaps == [], "a delivery was sent by two senders at once"
        assert a.stats.delivered + b.stats.delivered == 40
        assert a.stats.delivered and b.stats.delivered, "both nodes took part"
        assert a.stats.failed_attempts + b.stats.failed_attempts >= 40
    finally:
        receiver.close()


def test_what_a_dead_node_held_is_sent_by_another_after_the_lease(
    redis: RedisProcess, prefix: str
) -> None:
    """The dead node claimed (and maybe sent) but never reported: the survivor sends again,
    the same bytes, once the lease has run out and not before."""
    receiver = WatchingReceiver()

    async def scenario() -> float:
        dead = RedisDeliveryStore(aioredis.Redis.from_url(redis.url), prefix)
        await dead.add([(f"d{n}", _delivery(receiver, n).to_record()) for n in range(5)], 100)
        claimed = await dead.claim(5, lease=1.5)
        assert len(claimed.claims) == 5
        died_at = time.monotonic()
        survivor = _sender(redis, prefix)
        survivor.start()
        while len(receiver.answered()) < 5 and time.monotonic() - died_at < 10:
            await asyncio.sleep(0.05)
        first = min(r.started for r in receiver.answered()) - died_at
        await survivor.close(1)
        await dead.redis.aclose()
        return first

    try:
        first_after = asyncio.run(scenario())
        assert sorted(r.json["time_ms"] for r in receiver.answered()) == list(range(5))
        assert 1.3 < first_after < 1.5 + 0.2 + 1.0, first_after  # lease, poll, slack
    finally:
        receiver.close()


def test_a_retry_due_after_its_window_is_dropped_counted_and_logged_once(
    redis: RedisProcess, prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    receiver = WatchingReceiver()

    async def scenario() -> tuple[WebhookSender, WebhookSender]:
        dead = RedisDeliveryStore(aioredis.Redis.from_url(redis.url), prefix)
        stale = _delivery(receiver, 7)
        stale.expires_at = time.time() + 0.3
        await dead.add([("old", stale.to_record())], 100)
        await dead.claim(1, lease=0.5)  # its holder dies; by the lease's end it has expired
        a, b = _sender(redis, prefix), _sender(redis, prefix)
        a.start()
        b.start()
        await asyncio.sleep(1.5)
        await a.close(1)
        await b.close(1)
        await dead.redis.aclose()
        return a, b

    try:
        with caplog.at_level(logging.ERROR, logger="pyserver.webhooks"):
            a, b = asyncio.run(scenario())
        assert receiver.requests == []
        assert a.stats.dropped_expired + b.stats.dropped_expired == 1
        assert caplog.text.count('"time_ms":7') == 1, "logged with its content, once"
    finally:
        receiver.close()


def test_sigterm_leaves_what_is_not_due_in_redis_and_writes_what_is_new(
    redis: RedisProcess, prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Shutdown of one node loses nothing: a retry waiting for its backoff stays in Redis,
    a delivery submitted during shutdown is written and sent."""
    receiver = WatchingReceiver(failing=True)

    async def scenario() -> int:
        sender = _sender(redis, prefix)
        sender.retry_base = 30
        sender.start()
        sender.submit(_delivery(receiver, 1))
        while not receiver.requests:
            await asyncio.sleep(0.02)
        await asyncio.sleep(0.2)  # failed: its retry waits 30 s
        receiver.failing = False
        sender.submit(_delivery(receiver, 2))  # e.g. a leave sent by the shutdown itself
        await sender.close(2)
        store = RedisDeliveryStore(aioredis.Redis.from_url(redis.url), prefix)
        depth = await store.depth()
        await store.redis.aclose()
        return depth

    try:
        with caplog.at_level(logging.INFO, logger="pyserver.webhooks"):
            depth = asyncio.run(scenario())
        assert [r.json["time_ms"] for r in receiver.answered()] == [2]
        assert depth == 1
        assert "1 webhook deliveries stay in Redis" in caplog.text
        assert "not sent before shutdown" not in caplog.text
    finally:
        receiver.close()


def test_deliveries_made_while_redis_is_away_go_out_when_it_is_back(
    caplog: pytest.LogCaptureFixture,
) -> None:
    redis = RedisProcess(free_port())
    receiver = WatchingReceiver()

    async def scenario() -> WebhookSender:
        sender = _sender(redis, "away")
        sender.start()
        sender.submit(_delivery(receiver, 1))
        while not receiver.answered():
            await asyncio.sleep(0.02)
        redis.stop()
        sender.submit(_delivery(receiver, 2))
        await asyncio.sleep(1.0)
        assert len(receiver.requests) == 1 and sender.pending >= 1, "it waits in memory"
        redis.start()
        deadline = time.monotonic() + 10
        while len(receiver.answered()) < 2 and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        await sender.close(1)
        return sender

    try:
        with caplog.at_level(logging.WARNING, logger="pyserver.webhooks"):
            sender = asyncio.run(scenario())
        assert [r.json["time_ms"] for r in receiver.answered()] == [1, 2]
        assert sender.stats.delivered == 2
        assert caplog.text.count("Redis unreachable") == 1, "the outage is logged once"
        assert "Redis is back" in caplog.text
    finally:
        redis.stop()
        receiver.close()
