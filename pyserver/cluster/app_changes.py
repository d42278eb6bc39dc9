"""App store changes announced on Redis, so every node applies them at once (docs/apps.md).

With the Redis adapter, whoever changes the app store (`pyserver apps`, a node's console)
publishes the store's new change counter on the channel `{redis_prefix}:apps`; every node
listens on it and refreshes its app directory at once instead of at its next
`app_store_refresh`. The message is only a nudge: the data is read from the store, so a
lost message (Redis down, a node resubscribing) only delays a change until the refresh, and
a node that resubscribes after an outage refreshes at once too.

Invariants:
- One channel per `redis_prefix`, outside the Pusher bus (`{prefix}:bus`); the payload is the
  store's cursor as ASCII digits, informative only.
- Built on `redis_connect`: works with a single Redis, Sentinel and a Redis Cluster (sharded
  pub/sub) alike. A node shares the Redis adapter's link (its own subscriber connection,
  the adapter's command pool); `pyserver apps` makes a link of its own for one publish.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from pyserver.cluster.redis_connect import FAILURES, BusSubscriber, RedisLink, connect
from pyserver.config import Settings

log = logging.getLogger("pyserver.apps")

ANNOUNCE_TIMEOUT = 5.0
"""Seconds `pyserver apps` waits to announce a change before saying the nodes will refresh."""


def channel(prefix: str) -> bytes:
    return f"{prefix}:apps".encode()


async def announce(settings: Settings, cursor: int) -> None:
    """Publish one change (from a short-lived process: `pyserver apps`). Raises on failure."""
    link = connect(settings)
    try:
        await asyncio.wait_for(
            link.publish(channel(settings.redis_prefix), str(cursor).encode()), ANNOUNCE_TIMEOUT
        )
    finally:
        with contextlib.suppress(*FAILURES):
            await link.aclose()


class ChangeListener:
    """A node's subscription to app store changes; `announce` publishes its own."""

    def __init__(
        self, settings: Settings, on_change: Callable[[], None], link: RedisLink | None = None
    ) -> None:
        """`link`: the Redis adapter's own, shared (started and closed by the adapter); without
        it the listener connects by itself."""
        self.prefix = settings.redis_prefix
        self.on_change = on_change
        self._own_link = link is None
        self.link: RedisLink = connect(settings) if link is None else link
        self.subscriber: BusSubscriber = self.link.subscriber(
            [channel(self.prefix)],
            self._received,
            on_restored=on_change,  # announcements may have been missed meanwhile
        )
        self._task: asyncio.Task[None] | None = None

    def _received(self, _channel: bytes, _data: bytes) -> None:
        self.on_change()

    async def start(self) -> None:
        if self._own_link:
            await self.link.start()
        self._task = asyncio.create_task(self.subscriber.run(), name="app store announcements")

    async def announce(self, cursor: int) -> None:
        await asyncio.wait_for(
            self.link.publish(channel(self.prefix), str(cursor).encode()), ANNOUNCE_TIMEOUT
        )

    async def close(self) -> None:
        await self.subscriber.aclose()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, *FAILURES):
                await self._task
        if self._own_link:
            with contextlib.suppress(*FAILURES):
                await self.link.aclose()
