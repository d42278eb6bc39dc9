"""The console's live stream: `GET /console/api/stream?app=ID`, server-sent events.

`LiveHub` owns every open stream on this node and the one task that feeds them. Events:
- `feed`: one entry of the debug log (as `/console/api/state` serves them, plus `position`
  locally or `node` in a cluster), its `id:` the entry's place in the app's feed;
- `reset`: entries were lost before the next one (`dropped`: how many, or null when unknown;
  `reason`: "unknown-id" for an id this feed never made, "dropped" when they left the ring);
- `stats`: the stats report (`/console/api/stats`), whole when the stream opens, then every
  `STATS_EVERY` seconds the current and the previous minute and their days;
- `state`: connections, channels and presence members, when they change, at most every
  `STATE_EVERY` seconds;
- a comment line every `KEEP_ALIVE_EVERY` seconds.

Resume: a client that reconnects with `Last-Event-ID` (or `?last_event_id=`) gets every
entry after it that is still held, in order, then live ones; never one twice. Locally an id
is `<server start, ms>-<position>`, so an id from a previous start is an unknown id.

Invariants:
- Recording an entry costs what it costs without consoles (`feed.py`); the task runs only
  while a stream is open, and does its work once per app, not once per stream: each event
  is encoded once and the same bytes are written to every stream of the app.
- Memory is fixed per app: the feed's ring, the last state sent, and per stream what its
  sink may hold (a slow reader is cut off, `StreamSink`).
- A stream opened while the task runs gets the entries up to the task's position in its
  backlog and the later ones from the task: the two never overlap.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Protocol

from pyserver import tasks
from pyserver.console import stream
from pyserver.console.timeseries import MINUTE
from pyserver.http import StreamingResponse, StreamSink
from pyserver.protocol.names import channel_type

if TYPE_CHECKING:
    from pyserver.channels.app import App
    from pyserver.console.feed import ConsoleFeed

log = logging.getLogger("pyserver.console")

TICK = 0.2
"""Seconds between two runs of the task: how late a feed entry can be."""
STATE_EVERY = 1.0
STATS_EVERY = 2.0
KEEP_ALIVE_EVERY = 15.0
MAX_CHANNELS = 200
"""Channels listed in a state (sorted by name); `channel_total` says how many there are."""
MAX_PRESENCE_CHANNELS = 20
"""Presence channels whose members are looked up per state (one adapter call each)."""
STREAM_HEADERS = (
    ("Cache-Control", "no-store"),
    ("X-Accel-Buffering", "no"),
    ("X-Content-Type-Options", "nosniff"),
)


class FeedSource(Protocol):
    """Where a cluster's feed comes from (`cluster_feed.ClusterFeed`); locally, the ring."""

    def attach(self, app_id: str, sink: StreamSink, last_event_id: str | None) -> None: ...

    def detach(self, app_id: str, sink: StreamSink) -> None: ...


async def app_state(app: App, needle: str = "") -> dict[str, Any]:
    """Connections, channels and presence members of `app`, cluster-wide: the channel list
    and its counts come from the adapter, as the HTTP API reads them."""
    adapter = app.adapter
    occupied = await adapter.occupied_channels(app.id, "")
    names = sorted(n for n in occupied if needle in n.lower())
    channels: list[dict[str, Any]] = []
    presence_left = MAX_PRESENCE_CHANNELS
    for name in names[:MAX_CHANNELS]:
        kind = channel_type(name)
        local = app.registry.channels.get(name)
        entry: dict[str, Any] = {
            "name": name,
            "type": kind.kind.value + ("-cache" if kind.cache else ""),
            "subscribers": occupied[name].subscription_count,
            "local_subscribers": len(local.subscribers) if local is not None else 0,
        }
        if kind.is_presence and presence_left > 0:
            presence_left -= 1
            entry["members"] = dict(await adapter.presence_members(app.id, name))
        channels.append(entry)
    return {
        "app": app.id,
        "connections": len(app.clients) + adapter.connections_elsewhere(app.id),
        "local_connections": len(app.clients),
        "channel_count": len(occupied),
        "channel_total": len(names),
        "channels": channels,
    }


class LiveHub:
    def __init__(
        self,
        console: ConsoleFeed,
        stats: Callable[[str, float | None], Awaitable[dict[str, Any]]],
        feed: FeedSource | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.console = console
        self.stats = stats
        """The stats report of an app (`from` = the float, or all of it for None)."""
        self.feed = feed
        """The cluster's feed; None: this node's ring (`console.after`)."""
        self.clock = clock
        self.epoch = int(clock() * 1000)
        """When this feed started (ms): the first part of every local id."""
        self.audiences: dict[str, stream.Audience] = {}
        self.pumped: dict[str, int] = {}
        """App id -> the last feed position written to its streams."""
        self.states: dict[str, bytes] = {}
        """App id -> the last `state` event written to its streams."""
        self._task: asyncio.Task[None] | None = None
        self._closed = False

    # --- opening a stream --------------------------------------------------------------

    def open(self, app: App, last_event_id: str | None) -> StreamingResponse:
        def start(sink: StreamSink) -> Callable[[], None]:
            self._attach(app, sink, last_event_id)
            return lambda: self._detach(app.id, sink)

        return StreamingResponse(start, extra_headers=STREAM_HEADERS)

    def _attach(self, app: App, sink: StreamSink, last_event_id: str | None) -> None:
        if self._closed:
            sink.close()
            return
        app_id = app.id
        sink.write(stream.HELLO)
        audience = self.audiences.get(app_id)
        if audience is None:
            audience = self.audiences[app_id] = stream.Audience()
        if self.feed is not None:
            self.feed.attach(app_id, sink, last_event_id)
        else:
            if app_id not in self.pumped:
                self.pumped[app_id] = self.console.added.get(app_id, 0)
            sink.write(self._backlog(app_id, last_event_id))
        state = self.states.get(app_id)
        if state is not None:
            sink.write(state)
        audience.add(sink)
        # a failed read costs one update, never the stream
        tasks.run(self._first_stats(app_id, sink), False, on_error=_update_failed)
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run())

    def _backlog(self, app_id: str, last_event_id: str | None) -> bytes:
        """The entries a new stream gets before the live ones: after `last_event_id`, up to
        where the task is; all that is held when there is no id, or an unknown one."""
        upto = self.pumped[app_id]
        position = stream.parse_local_id(last_event_id, self.epoch)
        chunks: list[bytes] = []
        resumed = position is not None and position <= upto
        if not resumed:
            if last_event_id:
                chunks.append(stream.event("reset", {"dropped": None, "reason": "unknown-id"}))
            position = 0
        dropped, entries = self.console.after(app_id, position or 0, upto)
        if dropped and resumed:
            chunks.append(stream.event("reset", {"dropped": dropped, "reason": "dropped"}))
        chunks += [self._feed_event(entry) for entry in entries]
        return b"".join(chunks)

    def _feed_event(self, entry: dict[str, Any]) -> bytes:
        return stream.event("feed", entry, stream.local_id(self.epoch, entry["position"]))

    def _detach(self, app_id: str, sink: StreamSink) -> None:
        audience = self.audiences.get(app_id)
        if audience is not None:
            audience.remove(sink)
        if self.feed is not None:
            self.feed.detach(app_id, sink)

    async def _first_stats(self, app_id: str, sink: StreamSink) -> None:
        report = await self.stats(app_id, None)
        sink.write(stream.event("stats", report))

    # --- the task ----------------------------------------------------------------------

    async def _run(self) -> None:
        ticks = 0
        state_every = round(STATE_EVERY / TICK)
        stats_every = round(STATS_EVERY / TICK)
        alive_every = round(KEEP_ALIVE_EVERY / TICK)
        while not self._closed:
            for app_id, audience in list(self.audiences.items()):
                if not audience:
                    del self.audiences[app_id]
                    self.pumped.pop(app_id, None)
                    self.states.pop(app_id, None)
            if not self.audiences:
                break
            try:
                if self.feed is None:
                    self._pump()
                if ticks % state_every == 0:
                    await self._states()
                if ticks % stats_every == stats_every - 1:
                    await self._stats()
            except Exception:
                log.exception("console stream: an update failed")
            if ticks % alive_every == alive_every - 1:
                for audience in self.audiences.values():
                    audience.broadcast(stream.KEEP_ALIVE)
            ticks += 1
            await asyncio.sleep(TICK)

    def _pump(self) -> None:
        """Write each app's new feed entries to its streams: encoded once for all."""
        for app_id, audience in self.audiences.items():
            position = self.pumped.get(app_id, 0)
            if self.console.added.get(app_id, 0) == position:
                continue
            dropped, entries = self.console.after(app_id, position)
            chunks = []
            if dropped:
                chunks.append(stream.event("reset", {"dropped": dropped, "reason": "dropped"}))
            chunks += [self._feed_event(entry) for entry in entries]
            if entries:
                self.pumped[app_id] = entries[-1]["position"]
            audience.broadcast(b"".join(chunks))

    async def _states(self) -> None:
        for app_id in list(self.audiences):
            app = self.console.apps.get(app_id)
            if app is None:
                continue
            state = stream.event("state", await app_state(app))
            audience = self.audiences.get(app_id)
            if audience is not None and state != self.states.get(app_id):
                self.states[app_id] = state
                audience.broadcast(state)

    async def _stats(self) -> None:
        # The minute before too: its last seconds were counted after the previous push.
        since = float(int(self.clock() // MINUTE) * MINUTE - MINUTE)
        for app_id in list(self.audiences):
            report = await self.stats(app_id, since)
            audience = self.audiences.get(app_id)
            if audience is not None:
                audience.broadcast(stream.event("stats", report))

    async def close(self) -> None:
        """End every stream (shutdown)."""
        self._closed = True
        for audience in self.audiences.values():
            audience.close()
        self.audiences.clear()
        await tasks.stop(self._task)


def _update_failed(exc: BaseException) -> None:
    log.error("console stream: an update failed", exc_info=exc)
