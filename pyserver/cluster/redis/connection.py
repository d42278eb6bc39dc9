"""Making the Redis client of the cluster: the one place that constructs one.

`connect(settings)` returns a ready (lazily connecting) client; everything else in the
package receives that client. A deployment with Sentinel or Redis Cluster changes only how
the client is built, here.

Invariants:
- Connections come from a blocking pool of `POOL_SIZE`: a caller finding them all busy
  waits up to `POOL_WAIT` seconds instead of failing (a burst of clients queues for Redis).
- A pooled connection that Redis closed (it restarted) fails once and is retried on a fresh
  one before the caller sees an error, or every stale connection would be another outage.
- `is_outage` tells "Redis cannot be reached" (the node goes local-only) from "one command
  failed" or "our own pool stayed busy" (load, not an outage).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

POOL_SIZE = 64
"""Connections to Redis per node; a caller finding them all busy waits for one."""
POOL_WAIT = 30.0
"""Seconds a caller waits for a free connection (commands themselves time out after 5)."""

FAILURES: tuple[type[BaseException], ...] = (RedisError, OSError)
"""What a failed Redis call raises."""


class ConnectSettings(Protocol):
    """What `connect` reads (`pyserver.config.Settings` has it)."""

    @property
    def redis_url(self) -> str: ...


@dataclass(frozen=True, slots=True)
class UrlSettings:
    """`ConnectSettings` for a caller that has only a URL."""

    redis_url: str


def connect(settings: ConnectSettings) -> aioredis.Redis:
    pool = aioredis.BlockingConnectionPool.from_url(
        settings.redis_url,
        max_connections=POOL_SIZE,
        timeout=POOL_WAIT,
        socket_timeout=5,
        socket_connect_timeout=2,
        health_check_interval=10,
        retry=Retry(ExponentialBackoff(cap=0.5, base=0.05), 2),
        retry_on_error=[RedisConnectionError, RedisTimeoutError],
    )
    return aioredis.Redis.from_pool(pool)


def is_outage(exc: BaseException) -> bool:
    """True when `exc` means Redis cannot be reached, not that one command failed."""
    if isinstance(exc, RedisConnectionError) and "No connection available" in str(exc):
        return False  # our own pool stayed busy too long: load, not an outage
    return isinstance(exc, (RedisConnectionError, RedisTimeoutError, OSError))


def text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
