"""The durable webhook queue of the Redis adapter: deliveries and their retries live in Redis
(`redis_store.py`), so a node killed with SIGKILL loses none of them.

Every node runs one writer task, which moves new deliveries from a small in-memory outbox
into Redis, and one claimer task, which claims due deliveries from Redis for this node's idle
sender workers, each with a lease. Any node may send any delivery: each is self-contained
(URL, signed headers, body with its original `time_ms`).

Invariants:
- `put` only appends to the outbox (bounded by `maxsize`) and wakes the writer: the
  WebSocket side never waits for Redis. A delivery is durable once the writer has written
  it, normally within a millisecond; only what is still in the outbox dies with the process.
- The claimer claims no more deliveries than there are workers waiting for one, so a claim
  is sent at once and its lease (at least `webhook_timeout` plus a margin) outlasts the
  attempt: no delivery is sent by two nodes at the same time. A node that dies mid-attempt
  leaves its leases to run out; then another node claims those deliveries again.
- Reports carry the claim's fencing token (see `redis_store.py`).
- When Redis cannot be reached, new deliveries wait in the outbox and claims pause; the
  outage is logged once, and its end too. An attempt whose report is lost is retried by
  whichever node claims it after its lease (at least once, never lost).
- On shutdown, deliveries not yet due stay in Redis for the other nodes (or this one after a
  restart); only an outbox that could not be written is reported as lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
import uuid
from collections import deque
from collections.abc import Awaitable

from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster

from pyserver.cluster.redis_connect import FAILURES, explain
from pyserver.webhooks.delivery import Delivery
from pyserver.webhooks.queue import Claim, DeliveryQueue
from pyserver.webhooks.redis_store import RedisDeliveryStore

log = logging.getLogger("pyserver.webhooks")

WRITE_CHUNK = 200
"""Deliveries written to Redis by one script call."""
POLL = 1.0
"""Seconds between two looks at the shared queue while nothing is due: how soon a node notices
a delivery that another (dead) node left behind, once it is due."""
_BACKOFF_MIN = 0.1
_BACKOFF_MAX = 5.0
_FAILURES = FAILURES
"""What a failed Redis call raises (`redis_connect.FAILURES`)."""


class RedisQueue(DeliveryQueue):
    durable = True

    def __init__(
        self,
        redis: Redis | RedisCluster,
        prefix: str,
        *,
        maxsize: int,
        lease: float,
        poll: float = POLL,
        owns_client: bool = True,
    ) -> None:
        """`owns_client`: `close` closes `redis` (False when it is the adapter's link)."""
        super().__init__(maxsize)
        self._owns_client = owns_client
        self.store = RedisDeliveryStore(redis, prefix)
        self.lease = lease
        self.poll = poll
        self._outbox: deque[tuple[str, Delivery]] = deque()
        self._outbox_filled = asyncio.Event()
        self._waiters: deque[asyncio.Future[Claim]] = deque()
        self._wake = asyncio.Event()
        """Set when a worker waits for a delivery or new ones were written: claim now."""
        self._depth = 0
        self._drained = False
        """The last claim found fewer due deliveries than workers waiting."""
        self._unclaimed: list[Claim] = []
        """Claims that found no worker (it was cancelled): released at close."""
        self._down_since: float | None = None
        self._backoff = _BACKOFF_MIN
        """The wait before the next try while Redis is unreachable; both loops share it."""
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._write()), loop.create_task(self._claim())]
        log.info(
            "webhook deliveries are kept in Redis (%s), leases of %.0f s",
            self.store.due,
            self.lease,
        )

    # --- new deliveries ------------------------------------------------------------------

    def put(self, delivery: Delivery) -> None:
        if len(self._outbox) >= self.maxsize:
            self.on_overflow(delivery)
            return
        self._outbox.append((uuid.uuid4().hex, delivery))
        self._outbox_filled.set()

    async def _write(self) -> None:
        while True:
            if not self._outbox:
                self._outbox_filled.clear()
                await self._outbox_filled.wait()
                continue
            chunk = list(itertools.islice(self._outbox, WRITE_CHUNK))
            try:
                accepted, depth = await self.store.add(
                    [(key, delivery.to_record()) for key, delivery in chunk], self.maxsize
                )
            except _FAILURES as exc:
                await self._unreachable(exc)
                continue
            self._reachable()
            for _ in chunk:
                self._outbox.popleft()
            for (_, delivery), ok in zip(chunk, accepted, strict=True):
                if not ok:
                    self.on_overflow(delivery)
            self._depth = depth
            self._drained = False
            self._wake.set()

    # --- handing deliveries out ----------------------------------------------------------

    async def take(self) -> Claim:
        future: asyncio.Future[Claim] = asyncio.get_running_loop().create_future()
        self._waiters.append(future)
        self._wake.set()
        try:
            return await future
        except asyncio.CancelledError:
            if future.done() and not future.cancelled():
                self._unclaimed.append(future.result())  # claimed for us as we were cancelled
            raise

    async def _claim(self) -> None:
        while True:
            self._wake.clear()
            self._waiters = deque(f for f in self._waiters if not f.done())
            if not self._waiters:
                await self._wake.wait()
                continue
            wanted = len(self._waiters)
            try:
                result = await self.store.claim(wanted, self.lease)
            except _FAILURES as exc:
                await self._unreachable(exc)
                continue
            self._reachable()
            self._depth = result.depth
            for stored in result.claims:
                try:
                    delivery = Delivery.from_record(stored.record, stored.tries - 1)
                except (ValueError, TypeError):
                    log.error(
                        "unreadable webhook delivery %s dropped: %r", stored.key, stored.record
                    )
                    await self._report(self.store.drop(stored.key, stored.token), "drop")
                    continue
                self._hand_out(Claim(delivery, stored.key, stored.token))
            self._drained = len(result.claims) < wanted
            if self._drained:
                wait = self.poll if result.next_due is None else min(self.poll, result.next_due)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), max(0.01, wait))

    def _hand_out(self, claim: Claim) -> None:
        while self._waiters:
            future = self._waiters.popleft()
            if not future.done():
                future.set_result(claim)
                return
        self._unclaimed.append(claim)

    # --- reports -------------------------------------------------------------------------

    async def delivered(self, claim: Claim) -> None:
        current = await self._report(self.store.delivered(claim.key, claim.token), "delivery")
        if current is False:
            log.warning(
                "webhook to %s for app %s was answered after its lease of %.0f s ran out: "
                "another node may have sent it too (raise webhook_lease)",
                claim.delivery.url,
                claim.delivery.app_id,
                self.lease,
            )

    async def retry(self, claim: Claim, delay: float) -> bool:
        done = await self._report(self.store.reschedule(claim.key, claim.token, delay), "retry")
        return done is not False  # unrecorded (Redis away): retried once the lease runs out

    async def drop(self, claim: Claim) -> bool:
        return bool(await self._report(self.store.drop(claim.key, claim.token), "drop"))

    async def _report(self, call: Awaitable[bool], what: str) -> bool | None:
        """Await a store call; None when Redis could not record it (logged)."""
        try:
            return await call
        except _FAILURES as exc:
            log.warning(
                "webhook queue: could not record a %s in Redis (%s); the delivery is tried "
                "again once its lease runs out",
                what,
                exc,
            )
            return None

    # --- state and shutdown --------------------------------------------------------------

    @property
    def pending(self) -> int:
        """This node's outbox plus the shared queue's depth when last seen (the same on
        every node: in-flight and waiting deliveries of the whole cluster)."""
        return len(self._outbox) + self._depth

    async def flush(self) -> None:
        self._outbox_filled.set()
        self._wake.set()

    @property
    def settled(self) -> bool:
        return not self._outbox and self._drained

    async def close(self) -> list[Delivery]:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for claim in self._unclaimed:  # never attempted: others may take them at once
            with contextlib.suppress(*_FAILURES):
                await self.store.release(claim.key, claim.token)
        self._unclaimed.clear()
        with contextlib.suppress(*_FAILURES):
            self._depth = await self.store.depth()
        if self._depth:
            log.info(
                "%d webhook deliveries stay in Redis: another node, or this one after a "
                "restart, sends them",
                self._depth,
            )
        if self._owns_client:
            with contextlib.suppress(*_FAILURES):
                await self.store.redis.aclose()
        return [delivery for _, delivery in self._outbox]

    async def _unreachable(self, exc: BaseException) -> None:
        """Log the outage once, then wait before the caller's next try (doubling, capped)."""
        if self._down_since is None:
            self._down_since = time.monotonic()
            log.error(
                "webhook queue: Redis unreachable (%s); new deliveries wait in memory and "
                "sending pauses until it is back",
                explain(exc),
            )
        await asyncio.sleep(self._backoff)
        self._backoff = min(_BACKOFF_MAX, self._backoff * 2)

    def _reachable(self) -> None:
        self._backoff = _BACKOFF_MIN
        if self._down_since is not None:
            log.warning(
                "webhook queue: Redis is back after %.1f s", time.monotonic() - self._down_since
            )
            self._down_since = None
