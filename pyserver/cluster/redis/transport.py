"""The cluster bus over Redis pub/sub: an outbox writer and a listener, carrying the bytes
of `pyserver.cluster.bus` on one channel (`P:bus`).

Invariants:
- `send` never waits: messages are queued and one task writes them in pipelines of up to
  `BATCH`, in order; the hot path never waits for Redis.
- While the node is unhealthy nothing is queued (local delivery already happened; the
  other nodes are out of reach), and an outage empties the outbox.
- `listening` is set while the subscription is live: a node is healthy only when it hears.
- A bug in a handler costs one message or one batch, never the listener or the writer.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Callable

import redis.asyncio as aioredis

from pyserver.cluster.recovery import Recovery

log = logging.getLogger("pyserver.cluster.transport")

BATCH = 512
"""Most messages written in one pipeline."""


class RedisTransport:
    def __init__(
        self,
        client: aioredis.Redis,
        channel: bytes,
        received: Callable[[bytes], None],
        recovery: Recovery,
    ) -> None:
        self.redis = client
        self.channel = channel
        self._received = received
        self.recovery = recovery
        self._outbox: deque[bytes] = deque()
        self._ready = asyncio.Event()
        self.listening = asyncio.Event()

    def send(self, message: bytes) -> None:
        if not self.recovery.healthy:
            return
        self._outbox.append(message)
        self._ready.set()

    async def write_outbox(self) -> None:
        """The writer (a Task for the node's life)."""
        while True:
            await self._ready.wait()
            self._ready.clear()
            while self._outbox:
                batch = [self._outbox.popleft() for _ in range(min(len(self._outbox), BATCH))]
                try:
                    async with self.redis.pipeline(transaction=False) as pipe:
                        for message in batch:
                            pipe.publish(self.channel, message)
                        await pipe.execute()
                except self.recovery.failures as exc:
                    self.recovery.failed(exc)
                    if not self.recovery.healthy:
                        self._outbox.clear()
                except Exception:  # a bug must cost this batch, not every later publish
                    log.exception("redis adapter: publishing %d messages failed", len(batch))

    async def listen(self) -> None:
        """The listener (a Task for the node's life); resubscribes after any failure."""
        while True:
            pubsub = self.redis.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(self.channel)
                self.listening.set()
                log.debug("listening on the bus %r", self.channel)
                while True:
                    message = await pubsub.get_message(timeout=1.0)
                    if message is not None and message["type"] == "message":
                        self._received(message["data"])
            except self.recovery.failures as exc:
                self.listening.clear()
                if self.recovery.healthy or self.recovery.recovering:
                    self.recovery.failed(exc)
                await asyncio.sleep(0.25)
            except Exception:  # a bug must not silence the bus for good
                self.listening.clear()
                log.exception("redis adapter: bus listener failed; restarting it")
                await asyncio.sleep(0.25)
            finally:
                with contextlib.suppress(*self.recovery.failures):
                    await pubsub.aclose()
