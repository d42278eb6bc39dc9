"""The cluster bus over Redis pub/sub: an outbox writer and a listener, carrying the bytes
of `pyserver.cluster.bus` on the link's bus channels (`P:bus`; on a Redis Cluster one of
`BUS_SHARDS` sharded channels per message, chosen by its app and Pusher channel).

Invariants:
- `send` never waits: messages are queued and one task writes them in pipelines of up to
  `BATCH`, in order (`RedisLink.publish_many`: PUBLISH, or SPUBLISH split by shard); the
  hot path never waits for Redis.
- Messages about one Pusher channel (or one app's control messages) always go on the same
  bus channel, so their order is kept on a cluster too.
- While the node is unhealthy nothing is queued (local delivery already happened; the
  other nodes are out of reach), and an outage empties the outbox.
- `listening` is set while every bus channel is subscribed (`BusSubscriber.ready`): a node
  is healthy only when it hears. A lost subscription (an outage, a failover, a shard that
  failed) is an outage of the node: what was published meanwhile is gone, so it rebuilds.
- A bug in a handler costs one message or one batch, never the listener or the writer.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable

from pyserver.cluster.recovery import Recovery
from pyserver.cluster.redis_connect import BusSubscriber, RedisLink

log = logging.getLogger("pyserver.cluster.transport")

BATCH = 512
"""Most messages written in one pipeline."""


class RedisTransport:
    def __init__(
        self,
        link: RedisLink,
        prefix: str,
        received: Callable[[bytes], None],
        recovery: Recovery,
    ) -> None:
        self.link = link
        self.prefix = prefix
        self._received = received
        self.recovery = recovery
        self._outbox: deque[tuple[bytes, bytes]] = deque()
        self._ready = asyncio.Event()
        self.subscriber: BusSubscriber = link.subscriber(
            link.bus_channels(prefix),
            self._handle,
            on_lost=self._lost,
            on_restored=recovery.nudge,
        )
        self.listening = self.subscriber.ready

    def channel(self, app_id: str, channel: str | None = None) -> bytes:
        """The bus channel of messages about `channel` of `app_id` (or the app's)."""
        return self.link.bus_channel(self.prefix, app_id, channel)

    def send(self, channel: bytes, message: bytes) -> None:
        if not self.recovery.healthy:
            return
        self._outbox.append((channel, message))
        self._ready.set()

    async def write_outbox(self) -> None:
        """The writer (a Task for the node's life)."""
        while True:
            await self._ready.wait()
            self._ready.clear()
            while self._outbox:
                batch = [self._outbox.popleft() for _ in range(min(len(self._outbox), BATCH))]
                try:
                    await self.link.publish_many(batch)
                except self.recovery.failures as exc:
                    self.recovery.failed(exc)
                    if not self.recovery.healthy:
                        self._outbox.clear()
                except Exception:  # a bug must cost this batch, not every later publish
                    log.exception("redis adapter: publishing %d messages failed", len(batch))

    async def listen(self) -> None:
        """The listener (a Task for the node's life); the subscriber resubscribes after any
        failure by itself."""
        try:
            await self.subscriber.run()
        finally:
            await self.subscriber.aclose()

    def _handle(self, channel: bytes, data: bytes) -> None:
        self._received(data)

    def _lost(self, exc: BaseException) -> None:
        if self.recovery.healthy or self.recovery.recovering:
            self.recovery.lost(exc)
