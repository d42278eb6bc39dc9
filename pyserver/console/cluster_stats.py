"""The dashboard's stats over time for a whole cluster, through Redis (the redis adapter).

Each node keeps sampling its own traffic into its `StatsHistory` (`timeseries.py`, fed by
`sampler.py`); `ClusterStats` copies that node's counts of the current minute and day into
Redis every `FLUSH_EVERY` seconds, and any node answers `/console/api/stats` by reading every
node's counts back and summing them. Nothing here runs per message: the hot path is untouched.

Data model (one hash slot per app, `{P:stats:APP}`, so it works on Redis Cluster):
- `{P:stats:APP}:m:MINUTE`, a hash per app and minute, expiring after `MINUTE_TTL`: per node
  N the fields `c:N` (connections open at its last sample), `p:N` (its peak in the minute),
  `s:N` `r:N` `a:N` `w:N` `f:N` (messages sent and received, API calls, webhook deliveries
  and failures in the minute), and `peak`, the cluster's peak: the highest sum of the nodes'
  `c:` values seen at any write in the minute (the script keeps it).
- `{P:stats:APP}:d:DAY`, the same per UTC day (`p:N` the node's peak of the day, `peak` the
  highest minute `peak`), expiring after `DAY_TTL`.
- `{P:stats}:alive:m:MINUTE` and `...:d:DAY`: the set of nodes that were running then. It
  tells an idle minute (zeros) from a gap (no node running: `nodes: 0`, every count null).

Invariants:
- A node writes absolute values of its own fields (`HSET`), never increments: a retried or
  repeated write adds nothing twice, and a restarted node is a new node (new fields).
- A minute's final counts are written once the node has sampled the next minute (the
  sampler attributes a delta to the minute of the sample that sees it): at the first flush
  after a minute (and a day) ends, that minute (and day) is written once more.
- A point's `connections` is the sum of the nodes' `c:` fields; its `peak_connections` the
  larger of `peak` and the highest node peak `p:` (both are lower bounds of the true cluster
  peak; on one node it is exact).
- A node that dies loses at most its last `FLUSH_EVERY` seconds of counts.
- A flush that would write exactly what the previous one wrote, in the same minute, is
  skipped: an idle node sends Redis nothing between the first flush of one minute and the
  next (100k idle connections cost no Redis traffic every `FLUSH_EVERY`).
- The flush has no timer of its own: the sampler calls `sampled` after each sample, which at
  most every `FLUSH_EVERY` seconds checks (in place, no I/O) whether a flush would write
  anything, and only then wakes the flushing task. An idle node's flush costs no wakeup.
- When Redis cannot be reached, reports fall back to this node's own numbers (logged).
- Redis is the adapter's link (a single server, Sentinel or Cluster); each write and each
  script touches the keys of one slot, a pipeline may span slots (split by the cluster).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis

from pyserver import tasks
from pyserver.cluster.redis_connect import FAILURES, Client, explain, queue_script
from pyserver.console.timeseries import (
    COUNTERS,
    DAY,
    MINUTE,
    Day,
    Minute,
    StatsHistory,
    day_point,
    minute_point,
)

log = logging.getLogger("pyserver.console")


FLUSH_EVERY = 2.0
"""Seconds between two writes of this node's counts."""
MINUTE_TTL = 25 * 3600
"""Seconds a minute's hash lives: the 24 hours served, and a margin."""
DAY_TTL = 31 * 86400
"""Seconds a day's hash lives: the 30 days served, and a margin."""

_LETTERS = ("s", "r", "a", "w", "f")
"""The field letter of each of `COUNTERS`, in order."""
assert len(_LETTERS) == len(COUNTERS)

WRITE = """
local node = ARGV[1]
local letters = {'s', 'r', 'a', 'w', 'f'}
redis.call('HSET', KEYS[1], 'c:' .. node, ARGV[4], 'p:' .. node, ARGV[5])
for i, letter in ipairs(letters) do
  redis.call('HSET', KEYS[1], letter .. ':' .. node, ARGV[6 + i])
end
local fields = redis.call('HGETALL', KEYS[1])
local sum = 0
for i = 1, #fields, 2 do
  if string.sub(fields[i], 1, 2) == 'c:' then sum = sum + tonumber(fields[i + 1]) end
end
local peak = tonumber(redis.call('HGET', KEYS[1], 'peak') or '0')
if sum > peak then
  peak = sum
  redis.call('HSET', KEYS[1], 'peak', peak)
end
redis.call('EXPIRE', KEYS[1], ARGV[2])
redis.call('HSET', KEYS[2], 'p:' .. node, ARGV[6])
for i, letter in ipairs(letters) do
  redis.call('HSET', KEYS[2], letter .. ':' .. node, ARGV[11 + i])
end
local day_peak = tonumber(redis.call('HGET', KEYS[2], 'peak') or '0')
if peak > day_peak then redis.call('HSET', KEYS[2], 'peak', peak) end
redis.call('EXPIRE', KEYS[2], ARGV[3])
return peak
"""
"""KEYS: the minute's hash, the day's. ARGV: node, minute TTL, day TTL, connections, the
node's minute peak, its day peak, its 5 minute counts, its 5 day counts."""


def redis_client(redis: str | Client) -> tuple[Client, bool]:
    """The client to use and whether it is the console's own (to close): the adapter's
    (its link: a single server, Sentinel or Cluster), or for a URL a small one."""
    if not isinstance(redis, str):
        return redis, False
    pool = aioredis.BlockingConnectionPool.from_url(
        redis, max_connections=4, timeout=10, socket_timeout=5, socket_connect_timeout=2
    )
    return aioredis.Redis.from_pool(pool), True


@dataclass(frozen=True, slots=True)
class Write:
    """One node's counts of one app in one minute and its day, as `WRITE` takes them."""

    app_id: str
    minute: int
    minute_counts: Minute
    day: int
    day_counts: Day

    def args(self, node: str) -> list[Any]:
        m, d = self.minute_counts, self.day_counts
        return [
            node,
            MINUTE_TTL,
            DAY_TTL,
            m.connections,
            m.peak_connections,
            d.peak_connections,
            *(getattr(m, name) for name in COUNTERS),
            *(getattr(d, name) for name in COUNTERS),
        ]


def plan(history: StatsHistory, app_ids: Iterable[str], minutes: Iterable[int]) -> list[Write]:
    """What a node writes for `minutes` (the one it is in, and the one it last wrote when
    that has ended): each app's counts in each minute and its day, for the apps that did
    anything in that minute (an idle app's zeros need no write: the alive set says it)."""
    writes = []
    for minute in sorted(set(minutes)):
        day = minute * MINUTE // DAY
        for app_id in app_ids:
            counts = history.minute(app_id, minute)
            if counts is None or not _any(counts):
                continue
            day_counts = history.day(app_id, day) or Day()
            writes.append(Write(app_id, minute, counts, day, day_counts))
    return writes


def _any(counts: Minute) -> bool:
    return bool(counts.connections or counts.peak_connections) or any(
        getattr(counts, name) for name in COUNTERS
    )


def merge_minute(fields: Mapping[bytes, bytes], alive: int) -> Minute | None:
    """One minute of an app from its hash (every node's fields) and how many nodes ran then."""
    nodes, counts, peaks, connections, peak = _sums(fields)
    nodes = max(nodes, alive)
    if not nodes:
        return None
    return Minute(
        max(peak, peaks),
        *counts,
        nodes=nodes,  # type: ignore[misc]
        connections=connections,
    )


def merge_day(fields: Mapping[bytes, bytes], alive: int) -> Day | None:
    """One UTC day of an app from its hash and how many nodes ran that day."""
    nodes, counts, peaks, _, peak = _sums(fields)
    nodes = max(nodes, alive)
    if not nodes:
        return None
    return Day(max(peak, peaks), *counts, nodes=nodes)  # type: ignore[misc]


def _sums(fields: Mapping[bytes, bytes]) -> tuple[int, list[int], int, int, int]:
    """(nodes that wrote, counter sums, highest node peak, connections, cluster peak)."""
    counts = [0] * len(_LETTERS)
    writers: set[bytes] = set()
    peaks = connections = peak = 0
    for key, raw in fields.items():
        value = int(raw)
        letter, _, node = key.partition(b":")
        if not node:
            if letter == b"peak":
                peak = value
            continue
        writers.add(node)
        if letter == b"c":
            connections += value
        elif letter == b"p":
            peaks = max(peaks, value)
        else:
            index = _INDEX.get(letter)
            if index is not None:
                counts[index] += value
    return len(writers), counts, peaks, connections, peak


_INDEX = {letter.encode(): i for i, letter in enumerate(_LETTERS)}


class ClusterStats:
    def __init__(
        self,
        history: StatsHistory,
        redis: str | Client,
        prefix: str,
        node: str,
        every: float = FLUSH_EVERY,
        clock: Callable[[], float] = time.time,
        app_ids: Callable[[], Iterable[str]] | None = None,
    ) -> None:
        self.history = history
        self._redis_given = redis
        self.prefix = prefix
        self.node = node
        self.every = every
        self.clock = clock
        self.app_ids = app_ids or (lambda: list(history.app_ids()))
        self.redis: Client | None = None
        self._owns_client = False
        self._write: Any = None
        self._last_minute: int | None = None
        self._last_written: list[tuple[str, int, list[Any]]] | None = None
        """What the last flush wrote (app, minute, arguments): an idle node skips a flush
        that would write the same again in the same minute."""
        self._task: asyncio.Task[None] | None = None
        self._due = asyncio.Event()
        self._checked = -float("inf")
        """When `sampled` last looked for something to write."""

    def _key(self, app_id: str, kind: str, period: int) -> str:
        return f"{{{self.prefix}:stats:{app_id}}}:{kind}:{period}"

    def _alive(self, kind: str, period: int) -> str:
        return f"{{{self.prefix}:stats}}:alive:{kind}:{period}"

    def _client(self) -> Client:
        if self.redis is None:
            self.redis, self._owns_client = redis_client(self._redis_given)
            self._write = self.redis.register_script(WRITE)
        return self.redis

    def start(self) -> None:
        """Start the flushing task; call `sampled` after each sample to drive it."""
        self._task = asyncio.get_running_loop().create_task(self._run())

    def sampled(self) -> None:
        """The sampler took a sample: every `every` seconds, wake the task if a flush would
        write something (or the last one failed)."""
        now = self.clock()
        if now - self._checked < self.every * 0.9:  # the sampler's timer may be a bit early
            return
        self._checked = now
        if self._task is not None and self._pending()[0]:
            self._due.set()

    async def close(self) -> None:
        await tasks.stop(self._task)
        with contextlib.suppress(*FAILURES):
            await self.flush()  # the last seconds' counts
        if self.redis is not None and self._owns_client:
            await self.redis.aclose()

    async def _run(self) -> None:
        failing = False
        while True:
            await self._due.wait()
            self._due.clear()
            try:
                await self.flush()
            except FAILURES as exc:
                if not failing:  # once per outage, not every flush
                    log.warning("console stats: cannot write to Redis (%s); retrying", explain(exc))
                failing = True
            else:
                if failing:
                    log.warning("console stats: writing to Redis again")
                failing = False

    async def flush(self) -> None:
        """Write this node's counts of the current minute (and of the previous one, the
        first time after it ended) and of their days."""
        due, current, minutes, writes, written = self._pending()
        if not due:
            return
        redis = self._client()
        async with redis.pipeline(transaction=False) as pipe:
            for minute in minutes:
                day = minute * MINUTE // DAY
                for kind, period, ttl in (("m", minute, MINUTE_TTL), ("d", day, DAY_TTL)):
                    pipe.sadd(self._alive(kind, period), self.node)
                    pipe.expire(self._alive(kind, period), ttl)
            for write, (_, _, args) in zip(writes, written, strict=True):
                keys = [
                    self._key(write.app_id, "m", write.minute),
                    self._key(write.app_id, "d", write.day),
                ]
                queue_script(pipe, self._write, keys, args)
            await pipe.execute()
        self._last_minute = current
        self._last_written = written

    def _pending(
        self,
    ) -> tuple[bool, int, set[int], list[Write], list[tuple[str, int, list[Any]]]]:
        """(whether a flush now would write anything, the current minute, the minutes it
        covers, their writes, what they write)."""
        current = self.history.latest_minute
        if current < 0:
            return False, current, set(), [], []
        minutes = {current}
        if self._last_minute is not None and self._last_minute != current:
            minutes.add(self._last_minute)
        writes = plan(self.history, self.app_ids(), minutes)
        written = [(write.app_id, write.minute, write.args(self.node)) for write in writes]
        due = not (current == self._last_minute and written == self._last_written)
        return due, current, minutes, writes, written

    async def report(self, app_id: str, now: float, since: float | None = None) -> dict[str, Any]:
        """`/console/api/stats` for the whole cluster (see `StatsHistory.report`)."""
        last_minute = max(int(now // MINUTE), self.history.latest_minute)
        last_day = last_minute * MINUTE // DAY
        first_minute = last_minute - self.history.minutes_kept + 1
        first_day = last_day - self.history.days_kept + 1
        if since is not None:
            first_minute = max(first_minute, int(since // MINUTE))
            first_day = max(first_day, int(since // DAY))
        minutes = range(first_minute, last_minute + 1)
        days = range(first_day, last_day + 1)
        try:
            async with self._client().pipeline(transaction=False) as pipe:
                for m in minutes:
                    pipe.hgetall(self._key(app_id, "m", m))
                    pipe.scard(self._alive("m", m))
                for d in days:
                    pipe.hgetall(self._key(app_id, "d", d))
                    pipe.scard(self._alive("d", d))
                replies = await pipe.execute()
        except FAILURES as exc:
            log.warning("console stats: cannot read Redis (%s); serving this node's", explain(exc))
            return self.history.report(app_id, now, since)
        count = len(minutes) * 2
        return {
            "app": app_id,
            "now": now,
            "minutes": [
                minute_point(m, merge_minute(replies[i * 2], replies[i * 2 + 1]))
                for i, m in enumerate(minutes)
            ],
            "days": [
                day_point(d, merge_day(replies[count + i * 2], replies[count + i * 2 + 1]))
                for i, d in enumerate(days)
            ],
        }
