"""The `local` Adapter's cache channels: expiry on read, and a bounded memory footprint."""

from __future__ import annotations

import asyncio
import time

import pytest

from pyserver.cluster import leaves, local
from pyserver.cluster.adapter import CachedEvent
from pyserver.cluster.leaves import LeaveKey
from pyserver.cluster.local import CACHE_PURGE_MIN, LocalAdapter


class Clock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    fake = Clock()
    monkeypatch.setattr(local.time, "monotonic", fake)
    monkeypatch.setattr(leaves.time, "monotonic", fake)
    return fake


def event(ttl: float) -> CachedEvent:
    return CachedEvent(b'{"event":"e"}', "e", "{}", ttl)


def test_a_cached_event_expires_after_its_ttl(clock: Clock) -> None:
    adapter = LocalAdapter()
    adapter.cache_put("a", "cache-x", event(60))
    clock.now += 59
    kept = asyncio.run(adapter.cache_get("a", "cache-x"))
    assert kept is not None and kept.ttl == pytest.approx(1)
    clock.now += 1
    assert asyncio.run(adapter.cache_get("a", "cache-x")) is None


def test_channels_triggered_once_and_never_read_do_not_grow_memory(clock: Clock) -> None:
    adapter = LocalAdapter()
    for i in range(50 * CACHE_PURGE_MIN):
        adapter.cache_put("a", f"cache-{i}", event(2))
        clock.now += 0.01  # 200 puts live at a time
    assert len(adapter._cache) <= 2 * CACHE_PURGE_MIN
    newest = asyncio.run(adapter.cache_get("a", f"cache-{50 * CACHE_PURGE_MIN - 1}"))
    assert newest is not None


def test_many_leaves_at_once_stay_cheap(clock: Clock) -> None:
    # a mass disconnect: every mark used to rescan all markers once above 10,000
    pending = leaves.LocalLeaveMarkers(ttl=5.0)
    started = time.perf_counter()
    for i in range(60_000):
        pending.mark(LeaveKey.for_channel("a", f"c-{i}"))
    assert time.perf_counter() - started < 1.0
    assert pending.take_now(LeaveKey.for_channel("a", "c-59999"))
    clock.now += 6
    pending.mark(LeaveKey.for_channel("a", "late"))
    assert not pending.take_now(LeaveKey.for_channel("a", "c-1"))
