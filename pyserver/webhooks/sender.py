"""Reliable webhook delivery: a bounded queue, pooled HTTP (aiohttp), retries, shutdown flush.

Invariants:
- Nothing here runs on the hot path: `submit` appends to a bounded queue and returns; a fixed
  pool of worker tasks does the HTTP.
- A delivery that gets a non-2xx answer, times out or cannot connect is retried with
  exponential backoff (base, 2 * base, ... up to 60 s) until its `expires_at` (the events'
  `time_ms` plus the retry window); then it is dropped, logged with its content and counted.
- A full queue drops the new delivery, logs it and counts it: never silent, never blocking.
- `close(grace)` sends what is queued or waiting for a retry within `grace` seconds and logs
  the content of whatever is left.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

import aiohttp

log = logging.getLogger("pyserver.webhooks")

MAX_BACKOFF = 60.0


@dataclass(slots=True, eq=False)
class Delivery:
    """One HTTP request to send: its signed body is fixed at creation. Compared and hashed
    by identity: the sender keeps deliveries in sets and dicts while they are under way."""

    url: str
    body: bytes
    headers: dict[str, str]
    app_id: str
    expires_at: float
    """Wall-clock time after which no attempt is made: the events' `time_ms` plus the retry
    window, so no receiver ever gets a delivery older than that window."""
    attempts: int = 0


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
    ) -> None:
        self.queue: asyncio.Queue[Delivery] = asyncio.Queue(queue_size)
        self.concurrency = concurrency
        self.timeout = timeout
        self.retry_window = retry_window
        self.retry_base = retry_base
        self.stats = SenderStats()
        self._retries: dict[Delivery, asyncio.TimerHandle] = {}
        self._sending: set[Delivery] = set()
        self._workers: list[asyncio.Task[None]] = []
        self._session: aiohttp.ClientSession | None = None
        self.on_attempt: Callable[[Delivery, str], None] | None = None
        """Told of each attempt's outcome ("delivered", "HTTP 500", ...), e.g. by the console."""

    @property
    def pending(self) -> int:
        """Deliveries queued, being sent or waiting for a retry."""
        return self.queue.qsize() + len(self._sending) + len(self._retries)

    def start(self) -> None:
        connector = aiohttp.TCPConnector(limit=self.concurrency)
        self._session = aiohttp.ClientSession(
            connector=connector, timeout=aiohttp.ClientTimeout(total=self.timeout)
        )
        self._workers = [
            asyncio.get_running_loop().create_task(self._work()) for _ in range(self.concurrency)
        ]

    def submit(self, delivery: Delivery) -> None:
        try:
            self.queue.put_nowait(delivery)
        except asyncio.QueueFull:
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
            delivery = await self.queue.get()
            self._sending.add(delivery)
            try:
                await self._attempt(delivery)
            except Exception:  # a bug must cost one delivery, not a worker for good
                log.exception(
                    "webhook to %s for app %s failed unexpectedly and is dropped: %s",
                    delivery.url,
                    delivery.app_id,
                    delivery.body.decode(),
                )
            finally:
                self._sending.discard(delivery)
                self.queue.task_done()

    async def _attempt(self, delivery: Delivery) -> None:
        assert self._session is not None
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
                    return
                problem = f"HTTP {response.status}"
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            problem = type(exc).__name__ + (f": {exc}" if str(exc) else "")
        self.stats.failed_attempts += 1
        if self.on_attempt is not None:
            self.on_attempt(delivery, problem)
        self._retry_later(delivery, problem)

    def _retry_later(self, delivery: Delivery, problem: str) -> None:
        delay = min(MAX_BACKOFF, self.retry_base * 2 ** (delivery.attempts - 1))
        if time.time() + delay > delivery.expires_at:
            self.stats.dropped_expired += 1
            log.error(
                "webhook to %s for app %s dropped after %d attempts (%s): %s",
                delivery.url,
                delivery.app_id,
                delivery.attempts,
                problem,
                delivery.body.decode(),
            )
            return
        log.warning(
            "webhook to %s failed (%s), attempt %d; retrying in %.1f s",
            delivery.url,
            problem,
            delivery.attempts,
            delay,
        )
        loop = asyncio.get_running_loop()
        self._retries[delivery] = loop.call_later(delay, self._requeue, delivery)

    def _requeue(self, delivery: Delivery) -> None:
        self._retries.pop(delivery, None)
        self.submit(delivery)

    async def close(self, grace: float) -> None:
        """Send what is pending within `grace` seconds, log what is left, stop the workers."""
        deadline = time.monotonic() + grace
        # retries waiting for their backoff go now: there is no later
        for delivery, handle in list(self._retries.items()):
            handle.cancel()
            self._requeue(delivery)
        while self.pending and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        unanswered = [*self._sending]  # the receiver may have it, but never confirmed it
        left = [*self._retries]
        while not self.queue.empty():
            left.append(self.queue.get_nowait())
        for delivery, what in [(d, "unanswered at") for d in unanswered] + [
            (d, "not sent before") for d in left
        ]:
            log.error(
                "webhook to %s for app %s %s shutdown: %s",
                delivery.url,
                delivery.app_id,
                what,
                delivery.body.decode(),
            )
        for handle in self._retries.values():
            handle.cancel()
        for worker in self._workers:
            worker.cancel()
        await asyncio.gather(*self._workers, return_exceptions=True)
        if self._session is not None:
            await self._session.close()
