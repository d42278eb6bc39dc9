"""Choosing the webhook delivery queue for a configuration.

Invariant: with the Redis adapter every node shares one durable queue in Redis (built on the
cluster's one Redis client factory), so a killed node's deliveries are sent by another;
otherwise the queue is this process's memory. Kept apart from `queue.py` so that the
interface does not import its Redis implementation.
"""

from __future__ import annotations

from pyserver.cluster.redis.connection import connect
from pyserver.config import Settings
from pyserver.webhooks.queue import LEASE_MARGIN, DeliveryQueue, InMemoryQueue
from pyserver.webhooks.redis_queue import RedisQueue


def make_queue(settings: Settings) -> DeliveryQueue:
    """The queue for these settings: in Redis with the Redis adapter, else in memory."""
    if settings.adapter == "redis":
        return RedisQueue(
            connect(settings),
            settings.redis_prefix,
            maxsize=settings.webhook_queue_size,
            lease=max(settings.webhook_lease, settings.webhook_timeout + LEASE_MARGIN),
        )
    return InMemoryQueue(settings.webhook_queue_size)
