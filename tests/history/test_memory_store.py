"""What only the in-memory store does: the memory cap and its eviction order, purging whole
channels, the ledger of dropped channels, its counters, and its memory estimate."""

from __future__ import annotations

import asyncio
import gc
import tracemalloc
from collections.abc import Coroutine
from typing import Any, TypeVar

from pyserver.config import HistoryRule
from pyserver.history import memory
from pyserver.history.memory import ENTRY_OVERHEAD, MemoryHistoryStore
from pyserver.history.store import Loss
from pyserver.protocol import frames
from pyserver.protocol.history import Position
from tests.history.conftest import Clock

RULE = HistoryRule(channels="*", limit=100, ttl=60, rewind=5)
T = TypeVar("T")


def now(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine of the memory store, which never suspends."""
    try:
        coroutine.send(None)
    except StopIteration as done:
        return done.value  # type: ignore[no-any-return]
    raise AssertionError("the memory store suspended")


def frame(channel: str, size: int = 100) -> bytes:
    return frames.channel_event("m", channel, "x" * size)


def fill(store: MemoryHistoryStore, channel: str, count: int, size: int = 100) -> list[Position]:
    return [store.append_now("a", channel, RULE, frame(channel, size), 1) for _ in range(count)]


def test_a_new_process_is_a_new_epoch() -> None:
    clock = Clock()
    first, second = MemoryHistoryStore(1 << 20, clock), MemoryHistoryStore(1 << 20, clock)
    assert first.epoch != second.epoch
    position = fill(first, "c", 1)[0]
    caught = now(second.since("a", "c", RULE, position))
    assert caught.lost is Loss.EPOCH


def test_every_coroutine_completes_without_suspending() -> None:
    store = MemoryHistoryStore(1 << 20, Clock())
    position = now(store.append("a", "c", RULE, frame("c"), 1))
    assert now(store.head("a", "c", RULE)).position == position
    assert now(store.last("a", "c", RULE, 1)).entries
    assert now(store.since("a", "c", RULE, position)).lost is None


def test_the_cap_evicts_the_channels_written_longest_ago_first() -> None:
    clock = Clock()
    store = MemoryHistoryStore(30_000, clock)
    old = fill(store, "old", 20)
    middle = fill(store, "middle", 20)
    fill(store, "old", 1)  # "old" is now the most recently written
    assert store.evicted_channels_total == 0
    fill(store, "new", 40)
    assert store.bytes <= 30_000
    assert store.evicted_channels_total >= 1
    assert not now(store.last("a", "middle", RULE, 100)).entries, "middle was written first"
    assert now(store.last("a", "new", RULE, 100)).entries
    lost = now(store.since("a", "middle", RULE, middle[5]))
    assert lost.lost is Loss.EVICTED, "an evicted channel is not recovered, and says why"
    assert now(store.head("a", "middle", RULE)).position.serial == 20, "serials survive"
    again = fill(store, "middle", 1)[0]
    assert again.serial == 21 and again.epoch == store.epoch
    assert now(store.since("a", "middle", RULE, middle[-1])).entries[0].position == again
    assert now(store.since("a", "old", RULE, old[0])).lost in (Loss.EVICTED, None)


def test_a_lone_channel_over_the_cap_keeps_its_newest_events() -> None:
    store = MemoryHistoryStore(20_000, Clock())
    positions = fill(store, "big", 60, size=1_000)
    kept = now(store.last("a", "big", RULE, 100)).entries
    assert 1 <= len(kept) < 60 and kept[-1].position == positions[-1]
    assert store.bytes <= 20_000
    assert now(store.since("a", "big", RULE, positions[0])).lost is Loss.EVICTED
    assert store.evicted_events_total == 60 - len(kept)


def test_expired_channels_are_purged_on_append_and_on_purge() -> None:
    clock = Clock()
    store = MemoryHistoryStore(1 << 24, clock)
    short = HistoryRule(channels="*", limit=10, ttl=10)
    for n in range(50):
        store.append_now("a", f"once-{n}", short, frame("x"), 1)
    store.append_now("a", "long", RULE, frame("long"), 1)
    assert store.channels == 51 and store.events == 51
    clock.advance(11)
    store.append_now("a", "fresh", short, frame("fresh"), 1)
    assert store.channels == 2, "the short-ttl channels went on the next append of their ttl"
    assert store.expired_events_total == 50
    clock.advance(60)
    store.purge()
    assert store.channels == 0 and store.events == 0
    assert store.bytes == 0, "the estimate returns to zero"
    assert store.events_stored_total == 52


def test_a_purged_channel_continues_its_serials() -> None:
    clock = Clock()
    store = MemoryHistoryStore(1 << 24, clock)
    positions = fill(store, "c", 3)
    clock.advance(61)
    store.purge()
    assert store.channels == 0
    assert now(store.head("a", "c", RULE)).position.serial == 3
    assert now(store.since("a", "c", RULE, positions[-1])).lost is None
    assert now(store.since("a", "c", RULE, positions[0])).lost is Loss.TTL
    assert fill(store, "c", 1)[0].serial == 4


def test_a_ledger_collision_answers_not_recovered_never_a_skip(monkeypatch: Any) -> None:
    monkeypatch.setattr(memory, "LEDGER_SLOTS", 1)  # every channel shares one slot
    clock = Clock()
    store = MemoryHistoryStore(1 << 24, clock)
    quiet = now(store.head("a", "quiet", RULE)).position
    fill(store, "busy", 5)
    clock.advance(61)
    store.purge()
    first = fill(store, "quiet", 1)[0]
    assert first.serial == 6, "above every serial the slot has seen"
    caught = now(store.since("a", "quiet", RULE, quiet))
    assert caught.lost is not None and not caught.entries


def test_counters_follow_appends_limits_and_expiry() -> None:
    clock = Clock()
    store = MemoryHistoryStore(1 << 24, clock)
    small = HistoryRule(channels="*", limit=3, ttl=60)
    for _ in range(5):
        store.append_now("a", "c", small, frame("c"), 1)
    assert (store.events_stored_total, store.events, store.channels) == (5, 3, 1)
    assert store.bytes == 3 * (len(frame("c")) + ENTRY_OVERHEAD) + memory.CHANNEL_OVERHEAD + 2
    clock.advance(61)
    store.purge()
    assert store.expired_events_total == 3 and store.events == 0


def test_the_memory_estimate_is_close_to_what_python_allocates() -> None:
    """ENTRY_OVERHEAD and CHANNEL_OVERHEAD are measured here: the estimate must stay within
    a third of the real allocation, or the cap means little."""
    clock = Clock()
    payloads = [frame(f"chan-{n % 200}", 200) for n in range(4_000)]

    async def load(store: MemoryHistoryStore) -> None:
        for n, payload in enumerate(payloads):
            clock.advance(0.001)
            store.append_now("app", f"chan-{n % 200}", RULE, payload, 1_760_000_000_000 + n)

    gc.collect()
    tracemalloc.start()
    before = tracemalloc.take_snapshot()
    store = MemoryHistoryStore(1 << 30, clock)
    asyncio.run(load(store))
    gc.collect()
    after = tracemalloc.take_snapshot()
    tracemalloc.stop()
    real = sum(s.size_diff for s in after.compare_to(before, "filename"))
    estimated = store.bytes - sum(len(p) for p in payloads)  # they existed before
    assert 0.67 * real <= estimated <= 1.5 * real, (real, estimated)
