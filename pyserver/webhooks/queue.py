"""Where webhook deliveries wait: the queue interface the sender works through, and the
in-memory queue of a single node (the local adapter).

A queue hands deliveries out as `Claim`s; the sender reports each claim exactly once:
`delivered`, `retry` (after a delay) or `drop` (expired). Between `take` and that report the
claim is the sender's.

Invariants:
- `put` never blocks and never raises: a full queue hands the delivery to `on_overflow`
  (which logs and counts it), so the WebSocket side is never slowed down.
- A delivery is handed to one taker at a time; a retried one comes back after its delay.
- `InMemoryQueue`: everything lives in this process. What is left at `close` is returned
  to the caller to be logged; a crash loses it (the local adapter has no other node).
- `RedisQueue` (`redis_queue.py`) keeps deliveries in Redis so that another node sends
  them if this one dies; `queues.make_queue` picks it when the adapter is Redis.
"""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from pyserver.webhooks.delivery import Delivery

if TYPE_CHECKING:
    pass

LEASE_MARGIN = 5.0
"""Seconds a lease outlasts `webhook_timeout` at least: an attempt is over (answered or timed
out) before another node may take its delivery, so no two nodes send it at once."""


@dataclass(slots=True, eq=False)
class Claim:
    """A delivery handed to one sender, until it reports on it."""

    delivery: Delivery
    key: str = ""
    """The delivery's id in a durable queue ("" in memory)."""
    token: int = 0
    """Fencing token of a durable claim: only the current holder's report counts."""


def _drop_silently(delivery: Delivery) -> None:
    pass


class DeliveryQueue(ABC):
    durable: bool = False
    """True when deliveries outlive this process (another node sends what it leaves)."""

    def __init__(self, maxsize: int) -> None:
        self.maxsize = maxsize
        self.on_overflow: Callable[[Delivery], None] = _drop_silently
        """Told of each delivery refused because the queue is full (the sender logs it)."""

    @abstractmethod
    def start(self) -> None:
        """Start background work; called once, with the event loop running."""

    @abstractmethod
    def put(self, delivery: Delivery) -> None:
        """Queue a new delivery for sending as soon as possible; never blocks."""

    @abstractmethod
    async def take(self) -> Claim:
        """The next delivery due, waiting until there is one."""

    @abstractmethod
    async def delivered(self, claim: Claim) -> None:
        """The receiver answered 2xx: forget the delivery."""

    @abstractmethod
    async def retry(self, claim: Claim, delay: float) -> bool:
        """Hand the delivery out again in `delay` seconds. False: the claim was no longer
        this sender's (a durable queue gave it to another node), nothing changed."""

    @abstractmethod
    async def drop(self, claim: Claim) -> bool:
        """Give up on the delivery. False: the claim was no longer this sender's."""

    @property
    @abstractmethod
    def pending(self) -> int:
        """Deliveries queued, being sent or waiting for a retry."""

    @abstractmethod
    async def flush(self) -> None:
        """Shutdown begins: make what is pending sendable now (or safe elsewhere)."""

    @property
    @abstractmethod
    def settled(self) -> bool:
        """Nothing left that this node should still send before it stops."""

    @abstractmethod
    async def close(self) -> list[Delivery]:
        """Stop; return the deliveries that nobody will send (to be logged)."""


class InMemoryQueue(DeliveryQueue):
    """A bounded FIFO of new and retried deliveries, and timers for those waiting to retry."""

    def __init__(self, maxsize: int) -> None:
        super().__init__(maxsize)
        self._ready: asyncio.Queue[Delivery] = asyncio.Queue(maxsize)
        self._retries: dict[Delivery, asyncio.TimerHandle] = {}
        self._out: set[Delivery] = set()

    def start(self) -> None:
        pass

    def put(self, delivery: Delivery) -> None:
        try:
            self._ready.put_nowait(delivery)
        except asyncio.QueueFull:
            self.on_overflow(delivery)

    async def take(self) -> Claim:
        delivery = await self._ready.get()
        self._out.add(delivery)
        return Claim(delivery)

    async def delivered(self, claim: Claim) -> None:
        self._out.discard(claim.delivery)

    async def retry(self, claim: Claim, delay: float) -> bool:
        self._out.discard(claim.delivery)
        loop = asyncio.get_running_loop()
        self._retries[claim.delivery] = loop.call_later(delay, self._requeue, claim.delivery)
        return True

    async def drop(self, claim: Claim) -> bool:
        self._out.discard(claim.delivery)
        return True

    def _requeue(self, delivery: Delivery) -> None:
        self._retries.pop(delivery, None)
        self.put(delivery)

    @property
    def pending(self) -> int:
        return self._ready.qsize() + len(self._out) + len(self._retries)

    async def flush(self) -> None:
        # retries waiting for their backoff go now: there is no later
        for delivery, handle in list(self._retries.items()):
            handle.cancel()
            self._requeue(delivery)

    @property
    def settled(self) -> bool:
        return self.pending == 0

    async def close(self) -> list[Delivery]:
        left = [*self._retries]
        for handle in self._retries.values():
            handle.cancel()
        self._retries.clear()
        while not self._ready.empty():
            left.append(self._ready.get_nowait())
        return left
