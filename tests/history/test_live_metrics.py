"""The history counters of `/metrics` and every `pusher:recovery_failed` reason a running
server can give a stock client (pusher-js 8), beyond `limit`, `epoch` and `window` (covered by
tests/history/test_live.py): `ttl` and `evicted` on one `local` server whose history memory is
capped at 1 MB, and `unavailable` on a node whose Redis is stopped.
"""

from __future__ import annotations

import json
import re
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from tests.history.test_live import (
    ENV,
    api,
    channel_history,
    connect,
    join,
    name,
    numbers,
    trigger,
    wait_numbers,
)
from tests.integration.conftest import Deployment, deploy
from tests.integration.httpapi import request
from tests.integration.jsdriver import JsDriver, js_deps_installed
from tests.integration.serverproc import ServerProcess
from tests.redisproc import RedisProcess, free_port

pytestmark = pytest.mark.skipif(not js_deps_installed(), reason="npm ci in tests/js")

CONFIG = """
[[apps]]
id = "2001"
key = "hist-key"
secret = "hist-secret"

[[apps.history]]
channels = "presence-room-*"
limit = 100

[[apps.history]]
channels = "presence-short-*"
limit = 3
rewind = 1

[[apps.history]]
channels = "presence-ttl-*"
limit = 50
ttl = 2
rewind = 5

[[apps.history]]
channels = "presence-evict-*"
limit = 50
rewind = 1

[[apps.history]]
channels = "fill-*"
limit = 1000

[[apps.history]]
channels = "chat-*"
limit = 50
rewind = 3
"""

CAP = 1_048_576
"""`history_max_memory_mb = 1`: the smallest cap, filled by about 120 events of 9 KB."""


@pytest.fixture(scope="module")
def hist() -> Iterator[Deployment]:
    deployment = deploy(CONFIG, "local", env={**ENV, "PYSERVER_HISTORY_MAX_MEMORY_MB": "1"})
    yield deployment
    deployment.stop()


@pytest.fixture(scope="module")
def js() -> Iterator[JsDriver]:
    with JsDriver() as driver:
        yield driver


def metrics(node: ServerProcess) -> dict[str, int]:
    """Every `history_*` sample of the node's `/metrics`, without the metric prefix."""
    url = f"http://127.0.0.1:{node.metrics_port()}/metrics"
    with urllib.request.urlopen(url, timeout=5) as answer:
        text = answer.read().decode()
    return {
        key: int(value) for key, value in re.findall(r"^\w*?(history_[a-z_]+) (\d+)$", text, re.M)
    }


def replayed(js: JsDriver, client: str, channel: str) -> list[tuple[str, Any]]:
    """Every channel event but the subscription's own, in order: what the app sees."""
    return [
        (e["event"], e["data"])
        for e in js.events(client)
        if e["type"] == "channel"
        and e["channel"] == channel
        and not e["event"].startswith("pusher:subscription")
        and not e["event"].startswith("pusher_internal:")
    ]


def drop(js: JsDriver, client: str, confirm: bool = True) -> None:
    """Closes the client's socket without unsubscribing, after a ping and its pong confirmed
    what it received."""
    if confirm:
        time.sleep(2.5)
    js.call("disconnect", client=client)
    time.sleep(0.3)


def test_metrics_count_catch_ups_failures_and_bytes(hist: Deployment, js: JsDriver) -> None:
    node = hist.nodes[0]
    backend = api(hist)
    start = metrics(node)
    assert start["history_catch_ups_total"] == start["history_recovery_failed_total"] == 0

    room = name("presence-room-")
    first = join(js, hist, room, "ann")
    trigger(backend, room, range(2))
    wait_numbers(js, first, room, 2)
    drop(js, first)
    trigger(backend, room, range(2, 4))
    again = join(js, hist, room, "ann")
    assert wait_numbers(js, again, room, 2) == [2, 3]
    js.call("disconnect", client=again)
    caught = metrics(node)
    assert caught["history_catch_ups_total"] == 1
    assert caught["history_recovery_failed_total"] == 0

    short = name("presence-short-")
    first = join(js, hist, short, "bo")
    trigger(backend, short, range(1))
    wait_numbers(js, first, short, 1)
    drop(js, first, confirm=False)
    trigger(backend, short, range(1, 6))  # 5 missed, the channel keeps 3
    again = join(js, hist, short, "bo")
    js.wait(again, type="channel", channel=short, event="pusher:recovery_failed")
    js.call("disconnect", client=again)
    failed = metrics(node)
    assert failed["history_catch_ups_total"] == 1
    assert failed["history_recovery_failed_total"] == 1

    assert failed["history_events_stored_total"] == start["history_events_stored_total"] + 10
    assert failed["history_channels"] == start["history_channels"] + 2
    assert failed["history_events"] == start["history_events"] + 7  # `short` keeps 3
    assert failed["history_bytes"] > start["history_bytes"]
    big = name("chat-")
    backend.trigger(big, "m", {"x": "y" * 5_000})
    grown = metrics(node)
    assert 5_000 < grown["history_bytes"] - failed["history_bytes"] < 8_000


def test_an_expired_gap_is_announced_ttl(hist: Deployment, js: JsDriver) -> None:
    """Of the two events missed, the first expired (`ttl = 2`): not a partial catch-up but
    `pusher:recovery_failed` with `ttl`, then the rewind of what is left."""
    node = hist.nodes[0]
    channel = name("presence-ttl-")
    backend = api(hist)
    first = join(js, hist, channel, "tia")
    trigger(backend, channel, range(1))
    wait_numbers(js, first, channel, 1)
    drop(js, first)
    before = metrics(node)
    trigger(backend, channel, range(1, 2))
    time.sleep(2.3)  # event 1 expires
    trigger(backend, channel, range(2, 3))
    again = join(js, hist, channel, "tia")
    js.wait(again, type="channel", channel=channel, event="m", count=1)
    time.sleep(0.3)
    assert replayed(js, again, channel) == [
        ("pusher:recovery_failed", {"reason": "ttl"}),
        ("m", {"n": 2}),
    ]
    js.call("disconnect", client=again)
    after = metrics(node)
    assert after["history_expired_events_total"] >= before["history_expired_events_total"] + 1
    assert after["history_recovery_failed_total"] == before["history_recovery_failed_total"] + 1
    page = channel_history(backend, channel)["events"]
    assert [json.loads(e["data"]) for e in page] == [{"n": 2}]


def test_a_gap_evicted_by_the_memory_cap_is_announced_evicted(
    hist: Deployment, js: JsDriver
) -> None:
    """More than 1 MB of newer history evicts the channel written longest ago, whole: its
    returning subscriber is told `evicted`, then gets the rewind. (Runs last in the module:
    it evicts every channel before it.)"""
    node = hist.nodes[0]
    channel = name("presence-evict-")
    backend = api(hist)
    first = join(js, hist, channel, "eli")
    trigger(backend, channel, range(1))
    wait_numbers(js, first, channel, 1)
    drop(js, first)
    trigger(backend, channel, range(1, 2))  # missed, then evicted
    before = metrics(node)
    filler = "z" * 9_000
    for batch in range(13):  # 130 events of 9 KB: over the 1 MB cap
        backend.trigger_batch(
            [{"channel": f"fill-{batch}-{i}", "name": "f", "data": filler} for i in range(10)]
        )
    full = metrics(node)
    assert full["history_bytes"] <= CAP
    assert full["history_evicted_channels_total"] > before["history_evicted_channels_total"]
    assert full["history_evicted_events_total"] >= before["history_evicted_events_total"] + 2
    assert channel_history(backend, channel)["events"] == []
    trigger(backend, channel, range(2, 3))
    again = join(js, hist, channel, "eli")
    js.wait(again, type="channel", channel=channel, event="m", count=1)
    time.sleep(0.3)
    assert replayed(js, again, channel) == [
        ("pusher:recovery_failed", {"reason": "evicted"}),
        ("m", {"n": 2}),
    ]
    js.call("disconnect", client=again)
    assert metrics(node)["history_recovery_failed_total"] == (
        before["history_recovery_failed_total"] + 1
    )


@contextmanager
def redis_node() -> Iterator[tuple[Deployment, RedisProcess]]:
    """One node on the Redis adapter with a Redis of its own, which the test may stop."""
    redis = RedisProcess(free_port())
    env = {
        **ENV,
        "PYSERVER_ADAPTER": "redis",
        "PYSERVER_REDIS_URL": redis.url,
        "PYSERVER_REDIS_PREFIX": "unavailable",
    }
    deployment = Deployment([ServerProcess(CONFIG, env=env)])
    try:
        yield deployment, redis
    finally:
        deployment.stop()
        redis.stop()


def returning_while_redis_is_down(
    js: JsDriver, deployment: Deployment, redis: RedisProcess, channel: str, user: str
) -> str:
    """`user` reads two events, drops, misses two, and comes back once Redis is stopped."""
    backend = api(deployment)
    first = join(js, deployment, channel, user)
    trigger(backend, channel, range(2))
    wait_numbers(js, first, channel, 2)
    drop(js, first)
    trigger(backend, channel, range(2, 4))
    redis.stop()
    again = join(js, deployment, channel, user)
    js.wait(again, type="channel", channel=channel, event="pusher:recovery_failed")
    return again


def test_a_store_that_cannot_be_read_is_announced_unavailable(js: JsDriver) -> None:
    """Redis stopped: a returning member and a new subscriber of history channels both get
    `pusher:recovery_failed` with `unavailable` and neither catch-up nor rewind, and still
    receive live events once Redis is back."""
    with redis_node() as (deployment, redis):
        room, chat = name("presence-room-"), name("chat-")
        backend = api(deployment)
        trigger(backend, chat, range(4))
        reader = connect(js, deployment)
        member = returning_while_redis_is_down(js, deployment, redis, room, "uma")
        js.subscribe(reader, chat)
        js.wait(reader, type="channel", channel=chat, event="pusher:recovery_failed")
        time.sleep(0.5)
        for client, channel in ((member, room), (reader, chat)):
            assert replayed(js, client, channel) == [
                ("pusher:recovery_failed", {"reason": "unavailable"})
            ]
        redis.start()
        deadline = time.monotonic() + 30
        while request(deployment.port, "GET", "/ready")[0] != 200:
            assert time.monotonic() < deadline, "the node never came back"
            time.sleep(0.2)
        trigger(backend, chat, range(9, 10))
        trigger(backend, room, range(9, 10))
        assert wait_numbers(js, reader, chat, 1) == [9]
        assert wait_numbers(js, member, room, 1) == [9]
        time.sleep(0.3)
        assert numbers(js, reader, chat) == [9]
        assert numbers(js, member, room) == [9]
        for client in (reader, member):
            js.call("disconnect", client=client)


def test_a_returning_member_told_unavailable_is_counted(js: JsDriver) -> None:
    """docs/history.md: `history_recovery_failed_total` counts returning subscriptions told
    they were not recovered; `unavailable` is one of those answers."""
    with redis_node() as (deployment, redis):
        member = returning_while_redis_is_down(js, deployment, redis, name("presence-room-"), "al")
        assert metrics(deployment.nodes[0])["history_recovery_failed_total"] == 1
        js.call("disconnect", client=member)
