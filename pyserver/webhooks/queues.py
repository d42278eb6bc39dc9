"""Choosing the webhook delivery queue for a configuration.

Invariant: with the Redis adapter every node shares one durable queue in Redis (through the
adapter's own link: a single server, Sentinel or Cluster alike), so a killed node's
deliveries are sent by another;
otherwise the queue is this process's memory. Kept apart from `queue.py` so that the
interface does not import its Redis implementation.
"""

from __future__ import annotations

from pyserver.cluster.redis.connection import RedisLink, connect
from pyserver.config import Settings
from pyserver.webhooks.queue import LEASE_MARGIN, DeliveryQueue, InMemoryQueue
from pyserver.webhooks.redis_queue import RedisQueue


def make_queue(settings: Settings, link: RedisLink | None = None) -> DeliveryQueue:
    """The queue for these settings: in Redis with the Redis adapter (on `link`, the
    adapter's, left open; without one on a link of its own, closed with the queue), else in
    memory."""
    if settings.adapter == "redis":
        return RedisQueue(
            link.client if link is not None else connect(settings).client,
            settings.redis_prefix,
            maxsize=settings.webhook_queue_size,
            lease=max(settings.webhook_lease, settings.webhook_timeout + LEASE_MARGIN),
            owns_client=link is None,
        )
    return InMemoryQueue(settings.webhook_queue_size)
