"""The Redis link of the cluster: `connect(settings)` is the one way the package gets one.

The link itself (a single server, a master behind Sentinel, or a Redis Cluster; pools,
retries, the bus subscriber) is `pyserver.cluster.redis_connect`; everything in this
package receives the `RedisLink` it returns, or its `client`. A deployment with Sentinel
or Redis Cluster changes only which link `connect` builds.

Invariants:
- Connections come from one pool per Redis server of `POOL_SIZE` (`redis_connect`), shared
  by the adapter, the webhook queue and the console: a caller finding them all busy waits
  instead of failing (a burst of clients queues for Redis).
- A pooled connection that Redis closed (it restarted, or a failover) fails once and is
  retried on a fresh one before the caller sees an error, or every stale connection would
  be another outage.
- `is_outage` tells "Redis cannot be reached" (the node goes local-only) from "one command
  failed" or "our own pool stayed busy" (load, not an outage). On a cluster "cannot be
  reached" includes a shard that is down or a slot nobody serves yet (a failover under
  way): the calls that failed then are made whole by the rebuild.
- `FAILURES` is what any Redis call may raise: `RedisClusterException` is not a
  `RedisError`, so both are caught wherever an outage is handled.
- `explain` is how a failure is shown in a log line: redis-py's text, plus what to do when
  a server's TLS certificate did not verify (the CA option, its environment variable, the
  host name); the outage log and the bus log both use it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from redis.exceptions import (
    ClusterDownError,
    MaxConnectionsError,
    RedisClusterException,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from pyserver.cluster.redis_connect import (
    FAILURES,
    POOL_SIZE,
    POOL_WAIT,
    Client,
    LinkSettings,
    Mode,
    RedisLink,
    explain,
)
from pyserver.cluster.redis_connect import connect as _connect

__all__ = [
    "FAILURES",
    "POOL_SIZE",
    "POOL_WAIT",
    "Client",
    "RedisLink",
    "UrlSettings",
    "connect",
    "explain",
    "is_outage",
    "text",
]


@dataclass(frozen=True, slots=True)
class UrlSettings:
    """`LinkSettings` for a caller that has only a URL (a single server, or with
    `cluster=True` any node of a Redis Cluster)."""

    redis_url: str
    cluster: bool = False
    redis_sentinels: list[str] = field(default_factory=list)
    redis_sentinel_master: str = "mymaster"
    redis_sentinel_password: str | None = None
    redis_sentinel_tls: bool = False
    redis_sentinel_tls_ca: str | None = None

    def redis_mode(self) -> Mode:
        mode: Literal["single", "sentinel", "cluster"] = "single"
        if self.redis_sentinels:
            mode = "sentinel"
        elif self.cluster:
            mode = "cluster"
        return mode


def connect(settings: LinkSettings) -> RedisLink:
    """The link the settings describe (connects lazily; call `await link.start()`)."""
    return _connect(settings)


def is_outage(exc: BaseException) -> bool:
    """True when `exc` means Redis cannot be reached, not that one command failed."""
    if isinstance(exc, MaxConnectionsError):
        return False  # our own pool is full: load, not an outage
    if isinstance(exc, RedisConnectionError) and "No connection available" in str(exc):
        return False  # our own pool stayed busy too long: load, not an outage
    return isinstance(
        exc,
        (RedisConnectionError, RedisTimeoutError, ClusterDownError, RedisClusterException, OSError),
    )


def text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
