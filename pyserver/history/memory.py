"""The in-memory history store (local adapter): one process keeps every channel's history.

Layout: per (app, channel) a `_Channel` with a deque of consecutive entries ending at its
newest serial. Channels sit in two orders: by last append over the whole store (memory-cap
eviction takes the front: the channel written longest ago), and by last append within their
`ttl` (expiry: the front of each such queue is the first to expire, so purging looks only at
fronts).

Invariants:
- `epoch` is drawn at construction: every process start begins a new epoch, so positions
  handed out by an earlier process are recognised as such (`Loss.EPOCH`, 409).
- A channel's entries have consecutive serials ending at `serial`; everything at or below
  `serial - len(entries)` is gone, and `since` says so instead of answering in part.
- Expired entries are never returned. They are purged from a channel whenever it is written
  or read, and whole channels whose newest entry expired are dropped from the front of their
  ttl queue on every append and on `purge()` (the server's tick): O(1) amortised per event.
- `bytes` (an estimate of the memory held: payloads plus a fixed overhead per entry and per
  channel) stays at or under `max_bytes` after every append, but for a lone channel's newest
  entry: channels written longest ago are evicted first, whole.
- A dropped channel (expired or evicted) leaves its newest serial in a fixed-size ledger
  hashed by name. A channel created again continues above that serial, so positions are never
  reused within an epoch, and a position from before the drop is answered "not recoverable"
  rather than silently skipped. Unrelated channels sharing a ledger slot can make that answer
  come when nothing was lost; never the reverse.
- Every coroutine completes without suspending (`completes_synchronously`).
"""

from __future__ import annotations

import secrets
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from itertools import islice

from pyserver.config import HistoryRule
from pyserver.history.store import (
    CatchUp,
    Direction,
    Entry,
    Head,
    Page,
    Replay,
    catch_up,
    check_position,
    page,
)
from pyserver.protocol.history import Position, new_epoch

ENTRY_OVERHEAD = 300
"""Bytes an entry holds besides its payload (objects, ints, deque slot), measured by
tests/history/test_memory_store.py with tracemalloc."""
CHANNEL_OVERHEAD = 1_200
"""Bytes a channel holds besides its entries and name (deque, dict slots, objects)."""
LEDGER_SLOTS = 4_096
"""Slots remembering dropped channels' newest serials (two ints each)."""

Key = tuple[str, str]


class _Channel:
    __slots__ = ("bytes", "entries", "evicted_through", "key", "serial", "stamp", "ttl_ms")

    def __init__(self, key: Key, serial: int, evicted_through: int, ttl_ms: int) -> None:
        self.key = key
        self.entries: deque[Entry] = deque()
        self.serial = serial
        """Newest serial handed out (the ledger's value for a channel created again)."""
        self.stamp = 0
        """Store clock (ms) of the newest entry; stamps never decrease."""
        self.evicted_through = evicted_through
        """Newest serial the memory cap evicted: gaps reaching it are `Loss.EVICTED`."""
        self.ttl_ms = ttl_ms
        self.bytes = CHANNEL_OVERHEAD + 2 * len(key[1])

    def first_serial(self) -> int:
        return self.serial - len(self.entries) + 1


class MemoryHistoryStore:
    completes_synchronously = True

    def __init__(
        self, max_bytes: int, clock: Callable[[], float] = time.time, nonce: int | None = None
    ) -> None:
        self.max_bytes = max_bytes
        self.clock = clock
        self.epoch = new_epoch(
            int(clock() * 1_000_000), secrets.randbits(32) if nonce is None else nonce
        )
        self._channels: OrderedDict[Key, _Channel] = OrderedDict()
        self._by_ttl: dict[int, OrderedDict[Key, _Channel]] = {}
        self._ledger_serial = [0] * LEDGER_SLOTS
        self._ledger_evicted = [0] * LEDGER_SLOTS
        # Counters for /metrics (plain attributes, read by the metrics renderer).
        self.bytes = 0
        self.events = 0
        self.events_stored_total = 0
        self.expired_events_total = 0
        self.evicted_events_total = 0
        self.evicted_channels_total = 0

    @property
    def channels(self) -> int:
        return len(self._channels)

    # --- writing -------------------------------------------------------------------------

    async def append(
        self, app_id: str, channel: str, rule: HistoryRule, payload: bytes, time_ms: int
    ) -> Position:
        return self.append_now(app_id, channel, rule, payload, time_ms)

    def append_now(
        self, app_id: str, channel: str, rule: HistoryRule, payload: bytes, time_ms: int
    ) -> Position:
        """`append` without a coroutine, for callers on the hot path."""
        now_ms = int(self.clock() * 1000)
        key = (app_id, channel)
        ttl_ms = rule.ttl * 1000
        ch = self._channels.get(key)
        if ch is None:
            slot = hash(key) % LEDGER_SLOTS
            ch = _Channel(key, self._ledger_serial[slot], self._ledger_evicted[slot], ttl_ms)
            self._channels[key] = ch
            self._by_ttl.setdefault(ttl_ms, OrderedDict())[key] = ch
            self.bytes += ch.bytes
        else:
            self._channels.move_to_end(key)
            if ch.ttl_ms != ttl_ms:  # the rule changed
                del self._by_ttl[ch.ttl_ms][key]
                ch.ttl_ms = ttl_ms
                self._by_ttl.setdefault(ttl_ms, OrderedDict())[key] = ch
            else:
                self._by_ttl[ttl_ms].move_to_end(key)
        ch.serial += 1
        ch.stamp = max(now_ms, ch.stamp)
        position = Position(self.epoch, ch.serial, ch.stamp)
        ch.entries.append(Entry(position, time_ms, payload))
        size = len(payload) + ENTRY_OVERHEAD
        ch.bytes += size
        self.bytes += size
        self.events += 1
        self.events_stored_total += 1
        entries = ch.entries
        while len(entries) > rule.limit:
            self._drop_oldest(ch)
        self._expire(ch, now_ms)
        self._purge_queue(self._by_ttl[ttl_ms], now_ms)
        if self.bytes > self.max_bytes:
            self._enforce_cap(ch)
        return position

    def purge(self) -> None:
        """Drop every channel whose newest event expired (call it now and then, e.g. on the
        server's tick, so channels never written again are freed too)."""
        now_ms = int(self.clock() * 1000)
        for queue in list(self._by_ttl.values()):
            self._purge_queue(queue, now_ms)

    def _drop_oldest(self, ch: _Channel) -> Entry:
        entry = ch.entries.popleft()
        size = len(entry.payload) + ENTRY_OVERHEAD
        ch.bytes -= size
        self.bytes -= size
        self.events -= 1
        return entry

    def _expire(self, ch: _Channel, now_ms: int) -> None:
        floor = now_ms - ch.ttl_ms
        entries = ch.entries
        while entries and entries[0].position.stamp <= floor:
            self._drop_oldest(ch)
            self.expired_events_total += 1

    def _purge_queue(self, queue: OrderedDict[Key, _Channel], now_ms: int) -> None:
        while queue:
            ch = next(iter(queue.values()))
            if ch.stamp > now_ms - ch.ttl_ms:
                return
            self.expired_events_total += len(ch.entries)
            self._forget(ch, evicted=False)
            if not queue:
                del self._by_ttl[ch.ttl_ms]

    def _enforce_cap(self, current: _Channel) -> None:
        while self.bytes > self.max_bytes:
            oldest = next(iter(self._channels.values()))
            if oldest is not current:
                self.evicted_channels_total += 1
                self.evicted_events_total += len(oldest.entries)
                self._forget(oldest, evicted=True)
                queue = self._by_ttl[oldest.ttl_ms]
                if not queue:
                    del self._by_ttl[oldest.ttl_ms]
                continue
            # The only channel left: evict its oldest entries, keeping the newest.
            while self.bytes > self.max_bytes and len(current.entries) > 1:
                entry = self._drop_oldest(current)
                current.evicted_through = entry.position.serial
                self.evicted_events_total += 1
            return

    def _forget(self, ch: _Channel, evicted: bool) -> None:
        """Remove a whole channel, leaving its newest serial in the ledger."""
        del self._channels[ch.key]
        del self._by_ttl[ch.ttl_ms][ch.key]
        self.bytes -= ch.bytes
        self.events -= len(ch.entries)
        slot = hash(ch.key) % LEDGER_SLOTS
        self._ledger_serial[slot] = max(self._ledger_serial[slot], ch.serial)
        evicted_through = ch.serial if evicted else ch.evicted_through
        self._ledger_evicted[slot] = max(self._ledger_evicted[slot], evicted_through)

    # --- reading -------------------------------------------------------------------------

    def _current(self, app_id: str, channel: str) -> tuple[_Channel | None, Head, int]:
        """The channel (expired entries purged), its head, and its evicted-through serial."""
        key = (app_id, channel)
        ch = self._channels.get(key)
        if ch is None:
            slot = hash(key) % LEDGER_SLOTS
            head = Head(Position(self.epoch, self._ledger_serial[slot]))
            return None, head, self._ledger_evicted[slot]
        self._expire(ch, int(self.clock() * 1000))
        return ch, Head(Position(self.epoch, ch.serial, ch.stamp)), ch.evicted_through

    async def head(self, app_id: str, channel: str, rule: HistoryRule) -> Head:
        return self._current(app_id, channel)[1]

    async def last(self, app_id: str, channel: str, rule: HistoryRule, count: int) -> Replay:
        ch, head, _ = self._current(app_id, channel)
        if ch is None or count <= 0:
            return Replay(head, ())
        newest = list(islice(reversed(ch.entries), count))
        newest.reverse()
        return Replay(head, newest)

    async def since(self, app_id: str, channel: str, rule: HistoryRule, after: Position) -> CatchUp:
        ch, head, evicted_through = self._current(app_id, channel)
        alive: list[Entry] = []
        if ch is not None and after.epoch == self.epoch:
            start = after.serial + 1 - ch.first_serial()
            if start >= 0:
                alive = list(islice(ch.entries, start, None))
        return catch_up(after, head, alive, rule, evicted_through)

    async def read(
        self,
        app_id: str,
        channel: str,
        rule: HistoryRule,
        limit: int,
        direction: Direction,
        after: Position | None = None,
        before: Position | None = None,
    ) -> Page:
        ch, head, _ = self._current(app_id, channel)
        check_position(after, head)
        check_position(before, head)
        if ch is None or limit <= 0:
            return Page(head, (), None)
        first = ch.first_serial()
        entries = ch.entries
        lo = max(0, after.serial + 1 - first) if after is not None else 0
        hi = min(len(entries), before.serial - first) if before is not None else len(entries)
        if hi <= lo:
            return Page(head, (), None)
        if direction is Direction.FORWARD:
            fetched = list(islice(entries, lo, min(hi, lo + limit + 1)))
        else:
            fetched = [entries[i] for i in range(hi - 1, max(lo, hi - limit - 1) - 1, -1)]
        return page(head, fetched, limit)

    async def close(self) -> None:
        return None
