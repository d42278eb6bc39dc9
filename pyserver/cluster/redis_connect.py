"""Reaching Redis: one place that turns the settings into a command client and a pub/sub bus,
for a single server, a master behind Redis Sentinel, or a Redis Cluster.

`connect(settings)` returns a `RedisLink`:

- `link.client` runs commands, scripts and pipelines. A `redis.asyncio.Redis` for a single
  server and for Sentinel (its pool asks the Sentinels for the master on every new
  connection), a `redis.asyncio.cluster.RedisCluster` for a cluster (it routes each command
  by the slot of its keys, so a script's keys must share one hash tag).
- `link.bus_channels(prefix)` names the bus channels every node subscribes to and
  `link.bus_channel(prefix, app_id, channel)` the one a message about that Pusher channel is
  published on: one `P:bus` channel, or on a cluster `BUS_SHARDS` channels whose hash tags
  are spread evenly over the 16384 slots, so that publishing spreads over the shards.
- `await link.publish(channel, data)` / `await link.publish_many([(channel, data), ...])`:
  `PUBLISH`, or `SPUBLISH` on a cluster (sharded pub/sub, Redis 7: a message goes to the
  shard that owns the channel's slot only, instead of to every node of the cluster).
- `link.subscriber(channels, handler, on_lost=..., on_restored=..., nudges_only=...)` returns
  a `BusSubscriber`; `await subscriber.run()` (run it as a task) subscribes and calls
  `handler(channel, data)` for each message until `aclose()`. It never gives up: on a
  connection error it calls `on_lost(exc)` once, retries with backoff (each attempt asks
  the Sentinels or the cluster afresh where to go), and calls `on_restored()` once it is
  subscribed again. `subscriber.ready` is set while it is subscribed. With Sentinel, its
  reader looks for a master move every `SENTINEL_READ` seconds, or every `IDLE_READ` for a
  subscriber whose messages are only hints with a fallback of their own (`nudges_only`).
- `link.on_master_change(callback)`: with Sentinel, `callback(old, new)` runs when the
  Sentinels name a different master than the one connected so far ("host:port" each).
  A failover may lose the last writes that had not reached the replica, so the adapter
  must rebuild its state on the new master then, as after an outage.
- `queue_script(pipe, script, keys, args)` queues a registered Lua script on a pipeline of
  either kind, and `await mget(client, keys)` reads keys of any slots.
- `explain(exc)` is the text of a failed Redis call for a log line: redis-py's own, and
  when a server's TLS certificate did not verify, which option names its CA (with its
  environment variable) and that the certificate must name the host connected to. Every
  place that logs a Redis failure uses it; a Sentinel's certificate is explained where
  the Sentinels are asked (`_Sentinel.discover_master`), naming the Sentinels' options.
- `await link.start()` once, in the event loop: with Sentinel it asks the Sentinels every
  `SENTINEL_POLL` seconds which server is the master (see `start`); `await link.aclose()`
  at the end.

Invariants:
- Commands and the bus follow a Sentinel failover without a restart. Every new connection
  asks the Sentinels for the master. A dead master breaks connections; a demoted one kills
  its clients or answers READONLY, which redis-py turns into a connection error. A master
  that is replaced but still writable (the ~10 s after `SENTINEL FAILOVER` before the
  Sentinels demote it) is noticed by `start`'s polling: idle connections are dropped,
  connections in use are dropped when released (`_BlockingSentinelPool.release`: redis-py
  8.2 returns them to the pool still connected to the old master), and subscribers
  resubscribe. redis-py's own PubSub also reconnects silently inside `get_message`;
  `BusSubscriber` notices that (a connect callback) and reports it through
  `on_lost`/`on_restored` too, since messages published meanwhile are gone.
- On a cluster, each primary gets its own subscriber connection holding the SSUBSCRIBEs of
  the channels whose slots it owns (one SSUBSCRIBE per slot: Redis refuses CROSSSLOT).
  A shard's reader waits on its own socket, so one idle shard does not delay another.
  When a shard fails, or Redis unsubscribes a channel whose slot moved, the slot map is
  read again; shards whose channels stayed put keep their connection and keep delivering,
  the others are subscribed anew on their new owner (`on_lost`/`on_restored` as above).
  redis-py 8.2 has an async `ClusterPubSub` with sharded pub/sub, but it polls the shards
  in turn with one timeout, so an idle shard delays the others: not used for the bus.
- Nothing here knows the adapter's data model; this module never reads the clock except
  for backoff sleeps.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections import defaultdict
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any, Literal, Protocol

import redis.asyncio as aioredis
from redis.asyncio.cluster import ClusterNode, ClusterPipeline, RedisCluster
from redis.asyncio.connection import BlockingConnectionPool, parse_url
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import MasterNotFoundError, Sentinel, SentinelConnectionPool
from redis.backoff import ExponentialBackoff
from redis.commands.core import AsyncScript
from redis.crc import REDIS_CLUSTER_HASH_SLOTS, key_slot
from redis.exceptions import AuthenticationError, RedisClusterException, RedisError, ResponseError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from pyserver.config import sentinel_address

log = logging.getLogger("pyserver.redis")

Mode = Literal["single", "sentinel", "cluster"]
Client = aioredis.Redis | RedisCluster
"""A command client of any topology (`RedisLink.client`)."""
FAILURES: tuple[type[BaseException], ...] = (RedisError, RedisClusterException, OSError)
"""What a failed Redis call may raise: a cluster's own errors (`RedisClusterException`) are
not `RedisError`s, so every place that handles an outage catches all three."""
SERVER_TLS_HINT = (
    "check TLS: redis_url must name the CA that signed the server's certificate as "
    "?ssl_ca_certs=/path/ca.pem (PYSERVER_REDIS_URL), the certificate must name the host "
    "connected to and must not have expired"
)
"""Appended to a failure whose cause is a Redis server's certificate that did not verify
(a single server, the master the Sentinels name, a cluster node)."""
SENTINEL_TLS_HINT = (
    "check TLS: redis_sentinel_tls_ca (PYSERVER_REDIS_SENTINEL_TLS_CA) must name the CA "
    "that signed the Sentinel's certificate, the certificate must name the host as "
    "redis_sentinels writes it and must not have expired"
)
"""Appended, once, to the "no master" error when a Sentinel's certificate did not verify."""


def _certificate_failure(exc: BaseException) -> ssl.SSLCertVerificationError | None:
    """The certificate verification failure behind `exc`, if any: redis-py raises its own
    `ConnectionError` from the `ssl` error (unknown CA, host name mismatch, expired)."""
    seen: set[int] = set()
    cause: BaseException | None = exc
    while cause is not None and id(cause) not in seen:
        if isinstance(cause, ssl.SSLCertVerificationError):
            return cause
        seen.add(id(cause))
        cause = cause.__cause__ or cause.__context__
    return None


def explain(exc: BaseException) -> str:
    """`exc` as a log line shows it, with what to do about a server certificate that did
    not verify (see the module docstring)."""
    text = str(exc) or type(exc).__name__
    if _certificate_failure(exc) is None:
        return text
    return f"{text} ({SERVER_TLS_HINT})"


Handler = Callable[[bytes, bytes], None]
"""Called with (channel, data) for each bus message; must not block."""

POOL_SIZE = 64
"""Connections to Redis per node (per cluster node on a cluster): the adapter, the webhook
queue and the console share them; a caller finding them all busy waits for one."""
CLUSTER_POOL_SIZE = 2 * POOL_SIZE
"""Connections per cluster node. redis-py's cluster client never waits for a free connection
(it raises `MaxConnectionsError` at once), so its ceiling lies above what a node's callers
can hold at the same time: the adapter's `POOL_SIZE - 8` state calls, the bus writer,
heartbeats, the webhook queue's claimer, writer and reports, and the console."""
POOL_WAIT = 30.0
"""Seconds a caller waits for a free connection (commands themselves time out after 5)."""
BUS_SHARDS = 16
"""Bus channels on a Redis Cluster; their hash tags lie in 16 equal slot ranges, so any
even split of the slots over up to 16 shards gives each shard a share of the bus."""
SENTINEL_POLL = 0.5
"""Seconds between a node's questions to the Sentinels about which server is the master."""
_BACKOFF_FIRST = 0.1
_BACKOFF_CAP = 2.0
_CLUSTER_BACKOFF_CAP = 0.5
"""The cap of a cluster subscriber's retries. A shard whose master died comes back when the
cluster promotes its replica (about `cluster-node-timeout` plus an election), and each retry
reads the slot map from a live node (one CLUSTER SLOTS) and connects to the owner it names.
With the 2 s cap the promotion was noticed up to 2 s late (`tests/cluster/test_failover.py`:
triggers crossed again 1.3-1.8 s after it); at 0.5 s, 0.15-0.45 s after it, for at most two
retries a second per node while the shard is down."""
HEALTH_CHECK_EVERY = 10
"""Seconds of silence after which a pooled connection is PINGed before its next use; the
bus connection is PINGed that often while idle."""
IDLE_READ = float(HEALTH_CHECK_EVERY)
"""Longest wait of a bus reader for a message (a single server or a cluster shard): the
socket wakes it for each message, so this only paces the idle PINGs; a shorter wait would
wake an idle node every second for nothing."""
SENTINEL_READ = 0.2
"""Longest wait of a bus reader with Sentinel: how late a master move found by `start`'s
polling is acted on."""


def _bus_tags(count: int) -> list[str]:
    """Hash tags, the i-th the first `b<n>` whose slot lies in the i-th of `count` equal
    slot ranges: fixed by this code, so every node picks the same channels."""
    tags = []
    width = REDIS_CLUSTER_HASH_SLOTS / count
    for index in range(count):
        n = 0
        while not index * width <= key_slot(f"b{n}".encode()) < (index + 1) * width:
            n += 1
        tags.append(f"b{n}")
    return tags


_TAGS = _bus_tags(BUS_SHARDS)


class LinkSettings(Protocol):
    """What `connect` reads (`pyserver.config.Settings` has it)."""

    @property
    def redis_url(self) -> str: ...
    @property
    def redis_sentinels(self) -> list[str]: ...
    @property
    def redis_sentinel_master(self) -> str: ...
    @property
    def redis_sentinel_password(self) -> str | None: ...
    @property
    def redis_sentinel_tls(self) -> bool: ...
    @property
    def redis_sentinel_tls_ca(self) -> str | None: ...
    def redis_mode(self) -> Mode: ...


def _retrying() -> dict[str, Any]:
    return {
        "socket_timeout": 5,
        "socket_connect_timeout": 2,
        "health_check_interval": HEALTH_CHECK_EVERY,
        # A pooled connection the server closed (restart, failover) fails once: retry on a
        # fresh one, which asks the Sentinels again, before calling it an outage.
        "retry": Retry(ExponentialBackoff(cap=0.5, base=0.05), 2),
        "retry_on_error": [RedisConnectionError, RedisTimeoutError],
    }


class _Sentinel(Sentinel):
    """redis-py's Sentinel manager with a readable "no master" error: one short entry per
    Sentinel (its address and what went wrong, a wrong password or a certificate that did
    not verify named with the option to check) instead of the repr of every Sentinel
    client, kilobytes each."""

    async def discover_master(self, service_name: str) -> tuple[str, int]:
        errors: list[str] = []
        hint = ""
        for index, sentinel in enumerate(self.sentinels):
            where = "{host}:{port}".format(**sentinel.connection_pool.connection_kwargs)
            try:
                masters = await sentinel.sentinel_masters()
            except AuthenticationError as exc:
                reason = str(exc).rstrip(".")
                errors.append(f"{where}: {reason} (check redis_sentinel_password)")
                continue
            except (RedisConnectionError, ResponseError, RedisTimeoutError) as exc:
                errors.append(f"{where}: {type(exc).__name__}: {exc}")
                if _certificate_failure(exc) is not None:
                    hint = f" ({SENTINEL_TLS_HINT})"  # once, however many Sentinels failed
                continue
            state = masters.get(service_name) if isinstance(masters, dict) else None
            if state and self.check_master_state(state, service_name):
                # Ask this Sentinel first next time, as redis-py does.
                self.sentinels[0], self.sentinels[index] = sentinel, self.sentinels[0]
                return state["ip"], int(state["port"])
            errors.append(f"{where}: knows no healthy master {service_name!r}")
        raise MasterNotFoundError(f"no master {service_name!r}: " + "; ".join(errors) + hint)


class _BlockingSentinelPool(SentinelConnectionPool, BlockingConnectionPool):
    """A Sentinel pool that makes a caller wait for a free connection, as the single-server
    pool does, and reports a change of master."""

    def __init__(self, service_name: str, sentinel_manager: Sentinel, **kwargs: Any) -> None:
        self.master_changed: list[Callable[[str, str], None]] = []
        self._announced: tuple[str, int] | None = None
        """The master last reported; concurrent lookups report a change once."""
        super().__init__(service_name, sentinel_manager, **kwargs)  # type: ignore[no-untyped-call]

    async def get_master_address(self) -> Any:
        address = await super().get_master_address()  # type: ignore[no-untyped-call]
        before, self._announced = self._announced, (address[0], int(address[1]))
        if before is not None and before != self._announced:
            old, new = f"{before[0]}:{before[1]}", f"{address[0]}:{address[1]}"
            log.warning("redis: Sentinel names a new master %s (was %s)", new, old)
            for callback in list(self.master_changed):
                callback(old, new)
        return address

    def _stale(self, connection: Any) -> bool:
        """Connected, but to a server the Sentinels no longer name as the master."""
        address = self.master_address
        return (
            address is not None
            and connection.is_connected
            and (connection.host, connection.port) != tuple(address)
        )

    async def release(self, connection: Any) -> None:
        # redis-py's pool no longer drops a released connection to a former master
        # (`owns_connection` is not consulted on release): a connection that was in use
        # when the master moved would go back to the pool still talking to the old one,
        # and the next caller (a bus resubscription, say) would keep using it.
        if self._stale(connection):
            with contextlib.suppress(RedisError, OSError):
                await connection.disconnect()
        await super().release(connection)

    async def get_connection(self, *args: Any, **options: Any) -> Any:
        connection = await super().get_connection(*args, **options)  # type: ignore[no-untyped-call]
        if self._stale(connection):
            try:
                await connection.disconnect()
                await connection.connect()
            except BaseException:
                await self.release(connection)
                raise
        return connection


class RedisLink:
    """The command client and the bus of one node; see the module docstring."""

    def __init__(
        self,
        mode: Mode,
        client: aioredis.Redis | RedisCluster,
        *,
        sentinel: Sentinel | None = None,
        sentinel_pool: _BlockingSentinelPool | None = None,
    ) -> None:
        self.mode: Mode = mode
        self.client = client
        self.sentinel = sentinel
        self._sentinel_pool = sentinel_pool
        self._watcher: asyncio.Task[None] | None = None
        self._subscribers = 0
        """Subscribers made by `subscriber` (on a cluster, each holds a connection per shard
        outside the command pools)."""

    async def start(self) -> None:
        """Begin following the Sentinels (a no-op for a single server or a cluster).

        Needed because a `SENTINEL FAILOVER` promotes the replica while the old master
        keeps accepting writes until the Sentinels demote it, about 10 s later: without
        asking, a node would go on writing to and listening on the old master. With it,
        the move is noticed within `SENTINEL_POLL`, idle connections are dropped, in-use
        ones are dropped when released, and subscribers resubscribe on the new master."""
        if self._sentinel_pool is not None and self._watcher is None:
            self._watcher = asyncio.create_task(self._watch_master(self._sentinel_pool))

    async def _watch_master(self, pool: _BlockingSentinelPool) -> None:
        while True:
            try:
                await pool.get_master_address()
            except (RedisError, OSError) as exc:
                log.debug("redis: no Sentinel answered (%r)", exc)
            await asyncio.sleep(SENTINEL_POLL)

    def most_connections(self) -> int:
        """The most connections to Redis this node may hold at once: what its descriptor
        budget keeps for Redis (`server.capacity.Budget`).

        A single server or Sentinel: the command pool's `POOL_SIZE` (a subscriber takes its
        connection from that pool and waits for one like any caller) and one per Sentinel
        asked. A cluster: per shard, its pool's `CLUSTER_POOL_SIZE` and each subscriber's
        own connection; the shards are those of the slot map read so far, so ask after the
        first command (a cluster not reached yet counts as one shard)."""
        if self.mode == "cluster":
            assert isinstance(self.client, RedisCluster)
            shards = max(1, len(self.client.get_primaries()))
            return shards * (CLUSTER_POOL_SIZE + self._subscribers)
        sentinels = len(self.sentinel.sentinels) if self.sentinel is not None else 0
        return POOL_SIZE + sentinels

    # --- naming -------------------------------------------------------------------------

    def bus_channels(self, prefix: str) -> list[bytes]:
        """Every bus channel a node subscribes to."""
        if self.mode != "cluster":
            return [f"{prefix}:bus".encode()]
        return [f"{prefix}:bus:{{{tag}}}".encode() for tag in _TAGS]

    def bus_channel(self, prefix: str, app_id: str, channel: str | None = None) -> bytes:
        """The bus channel for messages about one Pusher channel (or one app, for control
        messages): the same one always, so their order is kept."""
        if self.mode != "cluster":
            return f"{prefix}:bus".encode()
        shard = key_slot(f"{app_id}\0{channel or ''}".encode()) % BUS_SHARDS
        return f"{prefix}:bus:{{{_TAGS[shard]}}}".encode()

    # --- commands -----------------------------------------------------------------------

    async def publish(self, channel: bytes, data: bytes) -> None:
        if self.mode == "cluster":
            await self.client.spublish(channel, data)
        else:
            await self.client.publish(channel, data)

    async def publish_many(self, messages: Sequence[tuple[bytes, bytes]]) -> None:
        """One round trip per node for a batch (a pipeline; a cluster pipeline splits it by
        shard). Raises RedisError/OSError when the batch could not be sent."""
        async with self.client.pipeline(transaction=False) as pipe:
            for channel, data in messages:
                if self.mode == "cluster":
                    pipe.spublish(channel, data)
                else:
                    pipe.publish(channel, data)
            await pipe.execute()

    def on_master_change(self, callback: Callable[[str, str], None]) -> None:
        """With Sentinel, call `callback(old, new)` when the master moves; else never."""
        if self._sentinel_pool is not None:
            self._sentinel_pool.master_changed.append(callback)

    def follows(self, host: str, port: int) -> bool:
        """With Sentinel, whether host:port is the master the Sentinels named last."""
        pool = self._sentinel_pool
        return pool is not None and pool._announced == (host, int(port))

    def _forget_master_change(self, callback: Callable[[str, str], None]) -> None:
        if self._sentinel_pool is not None:
            with contextlib.suppress(ValueError):
                self._sentinel_pool.master_changed.remove(callback)

    def describe(self) -> str:
        if self.mode == "sentinel" and self._sentinel_pool is not None:
            address = self._sentinel_pool.master_address
            where = f" at {address[0]}:{address[1]}" if address else ""
            return f"Sentinel master {self._sentinel_pool.service_name}{where}"
        return self.mode

    # --- the bus ------------------------------------------------------------------------

    def subscriber(
        self,
        channels: Iterable[bytes],
        handler: Handler,
        *,
        on_lost: Callable[[BaseException], None] | None = None,
        on_restored: Callable[[], None] | None = None,
        nudges_only: bool = False,
    ) -> BusSubscriber:
        kind = _ShardedSubscriber if self.mode == "cluster" else _PlainSubscriber
        self._subscribers += 1
        return kind(self, list(channels), handler, on_lost, on_restored, nudges_only)

    async def aclose(self) -> None:
        if self._watcher is not None:
            self._watcher.cancel()
            await asyncio.gather(self._watcher, return_exceptions=True)
            self._watcher = None
        await self.client.aclose()
        if self.sentinel is not None:
            await self.sentinel.aclose()


class BusSubscriber:
    """Keeps a set of bus channels subscribed across outages and failovers."""

    def __init__(
        self,
        link: RedisLink,
        channels: list[bytes],
        handler: Handler,
        on_lost: Callable[[BaseException], None] | None,
        on_restored: Callable[[], None] | None,
        nudges_only: bool = False,
    ) -> None:
        self.link = link
        self.channels = channels
        self.handler = handler
        self._on_lost = on_lost
        self._on_restored = on_restored
        self.ready = asyncio.Event()
        """Set while every channel is subscribed."""
        self.outages = 0
        """Times the subscription was lost (errors and silent reconnects)."""
        self._lost = False
        self._closing = False
        self._master_moved = False
        self._subscribed = False
        self.nudges_only = nudges_only
        """Its messages are hints with a fallback: a master move may wait `IDLE_READ`."""
        link.on_master_change(self._moved)

    def _moved(self, old: str, new: str) -> None:
        self._master_moved = True

    def _report_lost(self, exc: BaseException) -> None:
        self.ready.clear()
        if self._lost:
            return
        self._lost = True
        self.outages += 1
        log.warning(
            "redis bus: subscription lost (%s: %s); resubscribing", type(exc).__name__, explain(exc)
        )
        if self._on_lost is not None:
            self._on_lost(exc)

    def _report_ready(self) -> None:
        self._subscribed = True
        self.ready.set()
        if self._lost:
            self._lost = False
            log.warning("redis bus: subscribed again")
            if self._on_restored is not None:
                self._on_restored()

    def _deliver(self, message: dict[str, Any] | None) -> None:
        if message is None or message.get("type") not in ("message", "smessage"):
            return
        channel, data = message["channel"], message["data"]
        try:
            self.handler(channel, data)
        except Exception:  # a bad message must not stop the bus
            log.exception("redis bus: handling a message failed")

    async def run(self) -> None:
        """Subscribe and deliver until `aclose()`; reconnect with backoff on errors."""
        delay = _BACKOFF_FIRST
        while not self._closing:
            # A move reported before this session asks for the master needs no restart.
            self._master_moved = False
            self._subscribed = False
            try:
                await self._session()
            except (RedisError, RedisClusterException, OSError) as exc:
                if self._closing:
                    break
                if self._subscribed:
                    delay = _BACKOFF_FIRST  # it worked until now: retry soon
                self._report_lost(exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, _BACKOFF_CAP)

    async def _session(self) -> None:
        raise NotImplementedError

    async def aclose(self) -> None:
        self._closing = True
        self.ready.clear()
        self.link._forget_master_change(self._moved)


class _PlainSubscriber(BusSubscriber):
    """SUBSCRIBE on one connection: a single server, or the master Sentinel names."""

    async def _session(self) -> None:
        client = self.link.client
        assert isinstance(client, aioredis.Redis)
        pubsub = client.pubsub(ignore_subscribe_messages=True)
        try:
            await pubsub.subscribe(*self.channels)
            connection = pubsub.connection
            assert connection is not None
            connection.register_connect_callback(self._reconnected)
            if self.link.follows(connection.host, connection.port):
                self._master_moved = False  # the move was found by this very connection
            self._report_ready()
            # With Sentinel, look at the master-moved flag often between messages; else
            # wait on the socket (`IDLE_READ` only paces the health check's PINGs).
            sentinel = self.link.mode == "sentinel" and not self.nudges_only
            wait = SENTINEL_READ if sentinel else IDLE_READ
            while not self._closing:
                self._deliver(await pubsub.get_message(timeout=wait))
                if self._master_moved:
                    # Subscribed on the old master, which no longer gets the publishes.
                    self._master_moved = False
                    raise RedisConnectionError("Sentinel names a new master")
        finally:
            if pubsub.connection is not None:
                pubsub.connection.deregister_connect_callback(self._reconnected)
            with contextlib.suppress(RedisError, OSError):
                await pubsub.aclose()

    async def _reconnected(self, _connection: Any) -> None:
        """redis-py re-made the bus connection inside `get_message` and resubscribes on its
        own; what was published meanwhile is lost, so the caller hears of an outage."""
        self._report_lost(RedisConnectionError("the bus connection was re-made"))
        self._report_ready()


class _Shard:
    """One primary's subscriber connection: the SSUBSCRIBEs of the bus channels whose slots
    it owns, and the task that reads them."""

    def __init__(self, pubsub: Any, channels: tuple[bytes, ...]) -> None:
        self.pubsub = pubsub
        self.channels = channels
        self.task: asyncio.Task[None] | None = None

    @classmethod
    async def open(
        cls,
        node: ClusterNode,
        channels: tuple[bytes, ...],
        kwargs: dict[str, Any],
        deliver: Callable[[dict[str, Any] | None], None],
        closing: Callable[[], bool],
    ) -> _Shard:
        client = aioredis.Redis(host=node.host, port=int(node.port), **kwargs)
        shard = cls(client.pubsub(), channels)
        try:
            by_slot: dict[int, list[bytes]] = defaultdict(list)
            for channel in channels:
                by_slot[key_slot(channel)].append(channel)
            for same_slot in by_slot.values():
                await shard.pubsub.ssubscribe(*same_slot)
        except BaseException:
            await shard.close()
            raise

        async def read() -> None:
            while not closing():
                message = await shard.pubsub.get_sharded_message(timeout=IDLE_READ)
                if message is not None and message["type"] == "sunsubscribe":
                    # We never unsubscribe: Redis dropped the channel because its slot moved
                    # to another node (resharding, or this node became a replica).
                    raise RedisConnectionError(f"{message['channel']!r} moved off this shard")
                deliver(message)

        shard.task = asyncio.create_task(read())
        return shard

    async def close(self) -> None:
        if self.task is not None:
            self.task.cancel()
            await asyncio.gather(self.task, return_exceptions=True)
        with contextlib.suppress(RedisError, OSError):
            await self.pubsub.aclose()
        if self.pubsub.connection_pool is not None:
            with contextlib.suppress(RedisError, OSError):
                await self.pubsub.connection_pool.disconnect()


class _ShardedSubscriber(BusSubscriber):
    """SSUBSCRIBE on one connection per primary, each holding the channels of its slots.

    A failing shard costs only its own channels: the slot map is read again, shards whose
    channels did not move keep their connection and go on delivering, and the others are
    made anew (on the replica promoted meanwhile, once the cluster has done so)."""

    async def run(self) -> None:
        cluster = self.link.client
        assert isinstance(cluster, RedisCluster)
        kwargs = _shard_kwargs(cluster)
        shards: dict[str, _Shard] = {}
        delay = _BACKOFF_FIRST
        refresh = False
        try:
            while not self._closing:
                try:
                    if refresh:
                        # The slot map the client has may name a shard that is gone.
                        await cluster.nodes_manager.initialize()
                    else:
                        await cluster.initialize()
                    wanted: dict[str, tuple[ClusterNode, tuple[bytes, ...]]] = {}
                    for channel in self.channels:
                        node = cluster.nodes_manager.get_node_from_slot(key_slot(channel))
                        owned = wanted.get(node.name, (node, ()))[1]
                        wanted[node.name] = (node, (*owned, channel))
                    for name, shard in list(shards.items()):
                        task_done = shard.task is None or shard.task.done()
                        if task_done or wanted.get(name, (None, ()))[1] != shard.channels:
                            del shards[name]
                            await shard.close()
                    for name, (node, channels) in wanted.items():
                        if name not in shards:
                            shards[name] = await _Shard.open(
                                node, channels, kwargs, self._deliver, lambda: self._closing
                            )
                    self._report_ready()
                    delay = _BACKOFF_FIRST
                    tasks = [shard.task for shard in shards.values() if shard.task is not None]
                    done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
                    if self._closing:
                        break
                    for task in done:
                        task.result()  # raises the shard's error
                    raise RedisConnectionError("a shard reader stopped")
                except (RedisError, RedisClusterException, OSError) as exc:
                    if self._closing:
                        break
                    self._report_lost(exc)
                    refresh = True
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, _CLUSTER_BACKOFF_CAP)
        finally:
            for shard in shards.values():
                await shard.close()


def _shard_kwargs(cluster: RedisCluster) -> dict[str, Any]:
    """Connection options of the cluster's nodes (password, TLS) for a shard's own
    subscriber connection; no retry, so that a failure ends the session at once."""
    node_kwargs = dict(cluster.nodes_manager.connection_kwargs)
    wanted = (
        "username",
        "password",
        "credential_provider",
        "ssl",
        "ssl_keyfile",
        "ssl_certfile",
        "ssl_cert_reqs",
        "ssl_ca_certs",
        "ssl_ca_data",
        "ssl_check_hostname",
        "socket_connect_timeout",
    )
    kwargs = {k: v for k, v in node_kwargs.items() if k in wanted and v is not None}
    if "connection_class" in node_kwargs and node_kwargs["connection_class"].__name__.startswith(
        "SSL"
    ):
        kwargs["ssl"] = True
    kwargs["retry"] = Retry(ExponentialBackoff(), 0)
    return kwargs


def queue_script(pipe: Any, script: AsyncScript, keys: Sequence[Any], args: Sequence[Any]) -> None:
    """Queue a registered script on a pipeline. A plain pipeline sends EVALSHA and loads the
    scripts it lacks first (`pipe.scripts`: a restarted Redis has none); a cluster pipeline
    cannot, so it sends the script's text (EVAL), routed by the slot of its keys."""
    if isinstance(pipe, ClusterPipeline):
        pipe.eval(script.script, len(keys), *keys, *args)  # type: ignore[arg-type]
    else:
        pipe.scripts.add(script)
        pipe.evalsha(script.sha, len(keys), *keys, *args)


async def mget(client: Client, keys: Sequence[Any]) -> list[Any]:
    """GET of many keys in one call; on a cluster split by slot (MGET refuses CROSSSLOT)."""
    if isinstance(client, RedisCluster):
        return list(await client.mget_nonatomic(list(keys)))
    return list(await client.mget(list(keys)))


def connect(settings: LinkSettings) -> RedisLink:
    """The Redis link the settings describe; connects lazily, on the first command."""
    mode = settings.redis_mode()
    if mode == "cluster":
        cluster = RedisCluster.from_url(
            settings.redis_url,
            max_connections=CLUSTER_POOL_SIZE,
            socket_timeout=5,
            socket_connect_timeout=2,
        )
        return RedisLink("cluster", cluster)
    if mode == "sentinel":
        return _connect_sentinel(settings)
    pool = BlockingConnectionPool.from_url(
        settings.redis_url, max_connections=POOL_SIZE, timeout=POOL_WAIT, **_retrying()
    )
    return RedisLink("single", aioredis.Redis.from_pool(pool))


def _connect_sentinel(settings: LinkSettings) -> RedisLink:
    master_kwargs: dict[str, Any] = dict(parse_url(settings.redis_url))
    for key in ("host", "port", "path"):
        master_kwargs.pop(key, None)  # the Sentinels name the master
    connection_class = master_kwargs.pop("connection_class", None)
    if connection_class is not None and connection_class.__name__.startswith("SSL"):
        master_kwargs["ssl"] = True
    sentinel_kwargs: dict[str, Any] = {"socket_timeout": 2, "socket_connect_timeout": 2}
    if settings.redis_sentinel_password is not None:
        sentinel_kwargs["password"] = settings.redis_sentinel_password
    if settings.redis_sentinel_tls:
        sentinel_kwargs["ssl"] = True
        if settings.redis_sentinel_tls_ca is not None:
            sentinel_kwargs["ssl_ca_certs"] = settings.redis_sentinel_tls_ca
    sentinel = _Sentinel(
        [sentinel_address(entry) for entry in settings.redis_sentinels],
        sentinel_kwargs=sentinel_kwargs,
    )
    pool_kwargs = {**master_kwargs, **_retrying()}
    pool = _BlockingSentinelPool(
        settings.redis_sentinel_master,
        sentinel,
        is_master=True,
        max_connections=POOL_SIZE,
        timeout=POOL_WAIT,
        **pool_kwargs,
    )
    client = aioredis.Redis.from_pool(pool)
    return RedisLink("sentinel", client, sentinel=sentinel, sentinel_pool=pool)


async def wait_ready(link: RedisLink, timeout: float = 10.0) -> None:
    """PING until it answers (a helper for start-up and tests)."""

    async def ping() -> Awaitable[Any] | Any:
        return await link.client.ping()

    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        try:
            await ping()
            return
        except (RedisError, OSError):
            if asyncio.get_running_loop().time() > deadline:
                raise
            await asyncio.sleep(0.1)
