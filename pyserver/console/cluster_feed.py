"""The console's debug feed for a whole cluster: every node's entries, through Redis Streams.

Redis keys (one hash slot per app, `{P:console:APP}`):
- `{P:console:APP}:feed`: a Redis Stream of feed entries from every node, capped with
  `XADD ... MAXLEN ~ MAX_ENTRIES` and expiring a day after the last entry. Each entry has
  one field, `e`: the entry's JSON as the stream serves it, with `node` (who recorded it).
- `{P:console}:watched`: a sorted set, app id -> unix time until which some node has an open
  console stream of it; each such node refreshes its apps every `WATCH_REFRESH` seconds.

With the adapter's link, a node that starts watching an app announces it on the pub/sub
channel `P:console:watch` (a nudge, no data); every node listens and reads the watched set
at once. So a node on which nothing is watched anywhere reads the set only when nudged (and
every `IDLE_REFRESH` seconds, in case a nudge was missed): an idle cluster's console feed
wakes nobody. Without a link (a console with a Redis client of its own) every node reads the
set every `WATCH_REFRESH` seconds.

One task per node:
- publishes, while an app is watched anywhere, this node's new entries of it (those after
  what it last published; the first time, what its ring holds) in one pipeline per run;
- reads, while this node has open streams of an app, the app's Redis Stream with one
  `XREAD BLOCK` for all such apps, and writes each entry to every stream of the app, the
  same bytes for all, with the Redis Stream id as the SSE `id:`.

Resume: a stream opened with a `Last-Event-ID` gets the entries after it, up to where the
task has read, then the live ones. An id older than the oldest entry still held (trimmed by
`MAXLEN`) or not one of this stream's gets a `reset` event first. Ids are valid on every node.

Invariants:
- Recording an entry is untouched (`feed.py`): publishing reads the ring on the task, at
  most `MAX_ENTRIES` per app per run.
- Fixed memory: the ring, one position per app, and the sinks' own limits.
- When Redis cannot be reached the task logs, waits and retries; open streams stay open.
- A node reads the watched set every `WATCH_REFRESH` seconds while anything is watched
  anywhere (so it stops publishing within `WATCH_REFRESH` of an app's watch expiring), and
  at most `WATCH_REFRESH` after a stream opens anywhere, as when every node polled: the
  watching node reads at its next refresh, adds the app and announces it (again at each
  refresh until an announcement is sent), and the others read on the announcement. A
  resubscribed listener (an outage, a Sentinel failover: it follows a master move within
  `IDLE_READ`, `nudges_only`) reads at once too.
- The listener is made with the feed, before the server counts the link's connections
  (on a cluster each subscriber holds one per shard of its own).
- On a Redis Cluster each app's stream is read with its own XREAD (they lie in different
  slots); the adapter's link is shared, never closed here.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from typing import TYPE_CHECKING, Any

import orjson
from redis.asyncio.cluster import RedisCluster

from pyserver import tasks
from pyserver.cluster.redis_connect import FAILURES, BusSubscriber, RedisLink, explain
from pyserver.console import stream
from pyserver.console.cluster_stats import redis_client

if TYPE_CHECKING:
    from pyserver.cluster.redis_connect import Client
    from pyserver.console.feed import ConsoleFeed
    from pyserver.http import StreamSink

log = logging.getLogger("pyserver.console")

MAX_ENTRIES = 1000
"""Entries each app's Redis Stream keeps (about: `MAXLEN ~`)."""
TICK = 0.2
"""Seconds between two publishing runs while an app of this node is watched, and the
longest `XREAD BLOCK`."""
WATCH_REFRESH = 1.0
"""Seconds between two reads of the watched set (and refreshes of this node's apps)."""
WATCH_TTL = 30.0
"""Seconds an app stays watched after its last open stream on a node is refreshed."""
IDLE_REFRESH = 15.0
"""Seconds between two reads of the watched set while nothing is watched anywhere, with the
link's announcements (which make a node read at once): only a missed announcement waits."""
STREAM_TTL_MS = 86_400_000

_ID = re.compile(r"(\d{1,20})-(\d{1,20})")


def _parse_id(value: str | bytes | None) -> tuple[int, int] | None:
    if value is None:
        return None
    text = value.decode() if isinstance(value, bytes) else value
    match = _ID.fullmatch(text.strip())
    return (int(match.group(1)), int(match.group(2))) if match else None


def _pairs(reply: Any) -> list[Any]:
    """XREAD's answer as (stream, entries) pairs (a list in RESP2, a map in RESP3)."""
    if not reply:
        return []
    return list(reply.items()) if isinstance(reply, dict) else list(reply)


def _frame(entry_id: bytes, fields: dict[bytes, bytes]) -> bytes:
    return b"id: " + entry_id + b"\nevent: feed\ndata: " + fields.get(b"e", b"{}") + b"\n\n"


class ClusterFeed:
    def __init__(
        self,
        console: ConsoleFeed,
        redis: str | Client,
        prefix: str,
        node: str,
        link: RedisLink | None = None,
    ) -> None:
        """`link`: the adapter's (its subscriber announces new watches, see above)."""
        self.console = console
        self.prefix = prefix
        self.node = node
        self.redis, self._owns_client = redis_client(redis)
        self.published: dict[str, int] = {}
        """App id -> the feed position this node last published."""
        self.watched: set[str] = set()
        self.audiences: dict[str, stream.Audience] = {}
        self.positions: dict[str, bytes] = {}
        """App id -> the id of the last entry read and written to its streams."""
        self.pending: list[tuple[str, StreamSink, str | None]] = []
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self.link = link
        self._listener: BusSubscriber | None = None
        if link is not None:
            # Made now, not at `start`: the server counts the link's connections before.
            self._listener = link.subscriber(
                [self._watch_channel],
                lambda _channel, _data: self._nudge(),
                on_restored=self._nudge,
                nudges_only=True,
            )
        self._listening: asyncio.Task[None] | None = None
        self._nudged = False
        """An announcement came: read the watched set now."""
        self._announced: set[str] = set()
        """This node's watched apps it has announced (and still watches)."""

    def _key(self, app_id: str) -> str:
        return f"{{{self.prefix}:console:{app_id}}}:feed"

    @property
    def _watched_key(self) -> str:
        return f"{{{self.prefix}:console}}:watched"

    @property
    def _watch_channel(self) -> bytes:
        return f"{self.prefix}:console:watch".encode()

    # --- FeedSource --------------------------------------------------------------------

    def attach(self, app_id: str, sink: StreamSink, last_event_id: str | None) -> None:
        self.pending.append((app_id, sink, last_event_id))
        self.watched.add(app_id)  # publish this node's entries at once, not after a refresh
        self._wake.set()

    def detach(self, app_id: str, sink: StreamSink) -> None:
        self.pending = [p for p in self.pending if p[1] is not sink]
        audience = self.audiences.get(app_id)
        if audience is not None:
            audience.remove(sink)
            if not audience:
                del self.audiences[app_id]
                self.positions.pop(app_id, None)

    # --- the task ----------------------------------------------------------------------

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        if self._listener is not None:
            self._listening = loop.create_task(self._listener.run())
        self._task = loop.create_task(self._run())

    def _nudge(self) -> None:
        self._nudged = True
        self._wake.set()

    @property
    def _idle(self) -> bool:
        """Nothing is watched anywhere as far as this node knows, and it can be told when
        that changes: no need to read the watched set every `WATCH_REFRESH`."""
        return self._listener is not None and not (self.watched or self.audiences or self.pending)

    async def close(self) -> None:
        await tasks.stop(self._task)
        if self._listener is not None:
            await self._listener.aclose()
        await tasks.stop(self._listening)
        for audience in self.audiences.values():
            audience.close()
        if self._owns_client:
            await self.redis.aclose()

    async def _run(self) -> None:
        refreshed = 0.0
        failing = False
        while True:
            try:
                now = time.time()
                every = IDLE_REFRESH if self._idle else WATCH_REFRESH
                if self._nudged or now - refreshed >= every:
                    refreshed = now
                    self._nudged = False
                    await self._refresh_watched(now)
                await self._publish()
                await self._serve_pending()
                await self._read()
                if failing:
                    failing = False
                    log.warning("console feed: Redis answers again")
            except asyncio.CancelledError:
                raise
            except FAILURES as exc:
                if not failing:  # once per outage, not once a second
                    failing = True
                    log.warning("console feed: cannot reach Redis (%s); retrying", explain(exc))
                await asyncio.sleep(1.0)
            except Exception:
                log.exception("console feed: a run failed")
                await asyncio.sleep(1.0)

    async def _refresh_watched(self, now: float) -> None:
        key = self._watched_key
        async with self.redis.pipeline(transaction=False) as pipe:
            mine = {app_id: now + WATCH_TTL for app_id in self.audiences}
            mine.update({app_id: now + WATCH_TTL for app_id, _, _ in self.pending})
            if mine:
                pipe.zadd(key, mine)
            pipe.zremrangebyscore(key, "-inf", now)
            pipe.zrange(key, 0, -1)
            replies = await pipe.execute()
        self.watched = {member.decode() for member in replies[-1]}
        self._announced &= set(mine)
        if self.link is not None and not set(mine) <= self._announced:
            # Tell the other nodes, which may not be reading the set (`_idle`).
            await self.link.publish(self._watch_channel, b"1")
            self._announced = set(mine)

    async def _publish(self) -> None:
        """XADD this node's new entries of every watched app, in one pipeline."""
        console = self.console
        batch: list[tuple[str, list[dict[str, Any]]]] = []
        for app_id in self.watched:
            if app_id not in console.apps:
                continue
            position = self.published.get(app_id, 0)
            if console.added.get(app_id, 0) == position:
                continue
            _, entries = console.after(app_id, position)
            if entries:
                batch.append((app_id, entries))
        if not batch:
            return
        async with self.redis.pipeline(transaction=False) as pipe:
            for app_id, entries in batch:
                key = self._key(app_id)
                for entry in entries:
                    entry["node"] = self.node
                    pipe.xadd(key, {"e": orjson.dumps(entry)}, maxlen=MAX_ENTRIES, approximate=True)
                pipe.pexpire(key, STREAM_TTL_MS)
            await pipe.execute()
        for app_id, entries in batch:
            self.published[app_id] = entries[-1]["position"]

    async def _serve_pending(self) -> None:
        """Give each newly opened stream its backlog, then add it to the app's audience."""
        while self.pending:
            app_id, sink, last_event_id = self.pending.pop(0)
            key = self._key(app_id)
            if app_id not in self.positions:
                newest: Any = await self.redis.xrevrange(key, "+", "-", count=1)
                self.positions[app_id] = newest[0][0] if newest else b"0-0"
            upto = self.positions[app_id]
            chunks: list[bytes] = []
            start: bytes | str = "-"
            if last_event_id:
                last = _parse_id(last_event_id)
                oldest: Any = await self.redis.xrange(key, "-", "+", count=1)
                first = _parse_id(oldest[0][0]) if oldest else None
                if last is None or last > (_parse_id(upto) or (0, 0)):
                    chunks.append(stream.event("reset", {"dropped": None, "reason": "unknown-id"}))
                elif first is not None and last < first:
                    chunks.append(stream.event("reset", {"dropped": None, "reason": "dropped"}))
                else:
                    start = "(" + last_event_id.strip()
            if upto != b"0-0":
                held: Any = await self.redis.xrange(key, start, upto, count=MAX_ENTRIES * 2)
                chunks += [_frame(entry_id, fields) for entry_id, fields in held]
            if sink.write(b"".join(chunks)):
                self.audiences.setdefault(app_id, stream.Audience()).add(sink)

    async def _read(self) -> None:
        """Wait (at most `TICK`) for new entries of the apps this node streams; write them."""
        if not self.positions:
            # Nothing to read: wait for a stream to open here (or an announcement), for one
            # publishing run while an app of this node is watched somewhere, else until the
            # next refresh of the watched set (an idle node wakes once a second, not five
            # times; with announcements, every `IDLE_REFRESH`).
            publishing = any(app_id in self.console.apps for app_id in self.watched)
            wait = TICK if publishing else IDLE_REFRESH if self._idle else WATCH_REFRESH
            if self._nudged or self.pending:
                return  # came while this run awaited Redis: its wake-up is spent already
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), wait)
            return
        streams: Any = {self._key(app_id): position for app_id, position in self.positions.items()}
        apps = {self._key(app_id): app_id for app_id in self.positions}
        block = int(TICK * 1000)
        if isinstance(self.redis, RedisCluster) and len(streams) > 1:
            # One XREAD per stream: the apps' streams lie in different slots (CROSSSLOT).
            parts: Any = await asyncio.gather(
                *(
                    self.redis.xread({key: position}, count=MAX_ENTRIES, block=block)
                    for key, position in streams.items()
                )
            )
            replies = [item for part in parts for item in _pairs(part)]
        else:
            replies = _pairs(await self.redis.xread(streams, count=MAX_ENTRIES, block=block))
        for key, entries in replies:
            app_id = apps.get(key.decode() if isinstance(key, bytes) else key)
            if app_id is None or not entries or app_id not in self.positions:
                continue
            self.positions[app_id] = entries[-1][0]
            audience = self.audiences.get(app_id)
            if audience is not None:
                audience.broadcast(b"".join(_frame(i, f) for i, f in entries))
