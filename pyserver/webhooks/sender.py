"""Reliable webhook delivery: pooled HTTP (aiohttp) from a queue, retries, shutdown flush.

The sender decides what happens to a delivery; its `DeliveryQueue` (`queue.py`) keeps it
meanwhile: in this process (local adapter) or in Redis, shared by every node (`redis_queue.py`).

Invariants:
- Nothing here runs on the hot path: `submit` hands the delivery to the queue and returns; a
  fixed pool of worker tasks takes deliveries from the queue and does the HTTP.
- A delivery that gets a non-2xx answer, times out or cannot connect is retried with
  exponential backoff (base, 2 * base, ... up to 60 s) until its `expires_at` (the events'
  `time_ms` plus the retry window); then it is dropped, logged with its content and counted.
  A retry taken after `expires_at` (a queue that waited, a node that died) is dropped too.
- A full queue drops the new delivery, logs it and counts it: never silent, never blocking.
- Each worker reports every delivery it took exactly once (delivered, retry or drop).
- Counters are this node's: requests answered 2xx, failed attempts, deliveries this node
  dropped (a durable queue lets only the current lease holder drop one, so a drop is
  counted once in the cluster), deliveries refused by a full queue.
- `close(grace)` sends what is due within `grace` seconds. With an in-memory queue, what is
  left is logged with its content; with a durable one it stays in the queue for other nodes.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

import aiohttp

from pyserver.webhooks.delivery import Delivery
from pyserver.webhooks.queue import Claim, DeliveryQueue, InMemoryQueue

__all__ = ["MAX_BACKOFF", "Delivery", "SenderStats", "WebhookSender"]

log = logging.getLogger("pyserver.webhooks")

MAX_BACKOFF = 60.0


@dataclass(slots=True)
class SenderStats:
    delivered: int = 0
    failed_attempts: int = 0
    dropped_expired: int = 0
    dropped_overflow: int = 0


class WebhookSender:
    def __init__(
        self,
        *,
        queue_size: int,
        concurrency: int,
        timeout: float,
        retry_window: float,
        retry_base: float,
        queue: DeliveryQueue | None = None,
    ) -> None:
        self.queue = queue if queue is not None else InMemoryQueue(queue_size)
        self.queue.on_overflow = self._overflowed
        self.concurrency = concurrency
        self.timeout = timeout
        self.retry_window = retry_window
        self.retry_base = retry_base
        self.stats = SenderStats()
        self._sending: set[Claim] = set()
        self._workers: list[asyncio.Task[None]] = []
        self._session: aiohttp.ClientSession | None = None
        self.on_attempt: Callable[[Delivery, str], None] | None = None
        """Told of each attempt's outcome ("delivered", "HTTP 500", ...), e.g. by the console."""

    @property
    def pending(self) -> int:
        """Deliveries queued, being sent or waiting for a retry (in a durable queue: those of
        every node, as last seen)."""
        return self.queue.pending

    def start(self) -> None:
        connector = aiohttp.TCPConnector(limit=self.concurrency)
        self._session = aiohttp.ClientSession(
            connector=connector, timeout=aiohttp.ClientTimeout(total=self.timeout)
        )
        self.queue.start()
        self._workers = [
            asyncio.get_running_loop().create_task(self._work()) for _ in range(self.concurrency)
        ]

    def submit(self, delivery: Delivery) -> None:
        self.queue.put(delivery)

    def _overflowed(self, delivery: Delivery) -> None:
        self.stats.dropped_overflow += 1
        log.error(
            "webhook queue full (%d): dropped a delivery to %s for app %s: %s",
            self.queue.maxsize,
            delivery.url,
            delivery.app_id,
            delivery.body.decode(),
        )

    async def _work(self) -> None:
        while True:
            claim = await self.queue.take()
            self._sending.add(claim)
            try:
                await self._attempt(claim)
            except Exception:  # a bug must cost one delivery, not a worker for good
                delivery = claim.delivery
                log.exception(
                    "webhook to %s for app %s failed unexpectedly and is dropped: %s",
                    delivery.url,
                    delivery.app_id,
                    delivery.body.decode(),
                )
                try:
                    await self.queue.drop(claim)
                except Exception:
                    log.exception("could not drop that webhook delivery from the queue")
            finally:
                self._sending.discard(claim)

    async def _attempt(self, claim: Claim) -> None:
        assert self._session is not None
        delivery = claim.delivery
        if delivery.attempts and time.time() > delivery.expires_at:
            await self._drop_expired(claim, "its retry window passed before the next attempt")
            return
        delivery.attempts += 1
        problem: str
        try:
            async with self._session.post(
                delivery.url, data=delivery.body, headers=delivery.headers
            ) as response:
                await response.read()
                if 200 <= response.status < 300:
                    self.stats.delivered += 1
                    if self.on_attempt is not None:
                        self.on_attempt(delivery, "delivered")
                    await self.queue.delivered(claim)
                    return
                problem = f"HTTP {response.status}"
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            problem = type(exc).__name__ + (f": {exc}" if str(exc) else "")
        self.stats.failed_attempts += 1
        if self.on_attempt is not None:
            self.on_attempt(delivery, problem)
        await self._retry_later(claim, problem)

    async def _retry_later(self, claim: Claim, problem: str) -> None:
        delivery = claim.delivery
        delay = min(MAX_BACKOFF, self.retry_base * 2 ** (delivery.attempts - 1))
        if time.time() + delay > delivery.expires_at:
            await self._drop_expired(claim, problem)
            return
        if await self.queue.retry(claim, delay):
            log.warning(
                "webhook to %s failed (%s), attempt %d; retrying in %.1f s",
                delivery.url,
                problem,
                delivery.attempts,
                delay,
            )
        else:
            log.warning(
                "webhook to %s failed (%s), attempt %d; its lease had run out, another node "
                "holds it now",
                delivery.url,
                problem,
                delivery.attempts,
            )

    async def _drop_expired(self, claim: Claim, problem: str) -> None:
        delivery = claim.delivery
        if not await self.queue.drop(claim):
            return  # another node holds it now and decides
        self.stats.dropped_expired += 1
        log.error(
            "webhook to %s for app %s dropped after %d attempts (%s): %s",
            delivery.url,
            delivery.app_id,
            delivery.attempts,
            problem,
            delivery.body.decode(),
        )

    async def close(self, grace: float) -> None:
        """Send what is due within `grace` seconds, log what is lost, stop the workers."""
        deadline = time.monotonic() + grace
        await self.queue.flush()
        while (self._sending or not self.queue.settled) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        # the receiver may have these, but never confirmed them
        unanswered = [claim.delivery for claim in self._sending]
        for worker in self._workers:
            worker.cancel()
        await asyncio.gather(*self._workers, return_exceptions=True)
        left = await self.queue.close()
        for delivery in unanswered:
            if self.queue.durable:
                log.warning(
                    "webhook to %s for app %s unanswered at shutdown; it stays queued and is "
                    "sent again once its lease runs out: %s",
                    delivery.url,
                    delivery.app_id,
                    delivery.body.decode(),
                )
            else:
                log.error(
                    "webhook to %s for app %s unanswered at shutdown: %s",
                    delivery.url,
                    delivery.app_id,
                    delivery.body.decode(),
                )
        for delivery in left:
            log.error(
                "webhook to %s for app %s not sent before shutdown: %s",
                delivery.url,
                delivery.app_id,
                delivery.body.decode(),
            )
        if self._session is not None:
            await self._session.close()
