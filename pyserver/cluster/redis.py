"""The `redis` Adapter driver: N nodes that behave exactly like one.

Cluster-wide truth lives in Redis data structures (see `redis_scripts.py` for the data model)
and every transition is decided by one Lua script, so exactly one node sees each
occupied/vacated/member/user change and webhooks go out once per cluster. Broadcasts cross
nodes on one pub/sub channel as the already-encoded WebSocket frame: one publish per
trigger, and each node writes the same bytes to its own subscribers.

Invariants:
- The node that triggers delivers to its local subscribers at once and ignores its own
  broadcast when it comes back from Redis; control messages (terminate, kick, watchlist)
  likewise run locally first.
- Publishes are queued and written by one task in pipelines, in order; the hot path never
  waits for Redis.
- Every node refreshes `P:alive:{node}` and its per-app connection counts `P:conns:{node}`
  every `heartbeat` seconds (and sums the other nodes' counts for `max_connections`); a
  node whose key expired (`dead_after`) is reaped by exactly one survivor (a lock), which
  removes its subscriptions, presence memberships and users and reports the transitions.
- Connections come from a blocking pool of `POOL_SIZE`, and at most `_IN_FLIGHT` state
  calls run at once: a burst of clients queues for Redis instead of failing. Only a failure
  to reach the server (a connection error or a timeout) counts as an outage.
- When Redis is unreachable the node keeps serving its own clients from local knowledge,
  logs loudly, reports `healthy = False`, and retries with backoff until it is back. It then
  rebuilds its contribution authoritatively, in one transaction: everything Redis holds for
  it is removed with the reaper's scripts and its current local state (subscriptions,
  presence memberships, signed-in users) is written again, so nothing a client did during
  the outage is lost or left behind; each leave this implies cluster-wide is reported once,
  as for a dead node. A loss during the rebuild starts another round.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
import uuid
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any, TypeVar, cast

import orjson
import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from pyserver import tasks
from pyserver.channels.registry import ChannelRegistry
from pyserver.cluster import redis_scripts as lua
from pyserver.cluster.adapter import (
    Adapter,
    AppPeer,
    CachedEvent,
    ChannelCounts,
    CountChange,
    LeaveKey,
    PresenceJoin,
    Transition,
)
from pyserver.cluster.local import LEAVE_MARGIN

log = logging.getLogger("pyserver.redis")

T = TypeVar("T")

_TRANSITIONS = {
    b"none": Transition.NONE,
    b"arrived": Transition.ARRIVED,
    b"left": Transition.LEFT,
    b"returned": Transition.RETURNED,
}
_BROADCAST = b"B"
_CONTROL = b"C"

POOL_SIZE = 64
"""Connections to Redis per node; a caller finding them all busy waits for one."""
_POOL_WAIT = 30.0
"""Seconds a caller waits for a free connection (commands themselves time out after 5)."""
_IN_FLIGHT = POOL_SIZE - 8
"""State calls running at once; the rest of the pool is for the bus listener, the outbox
writer, heartbeats, reaping and recovery."""
_LOCK_MS = 60_000
"""How long a `P:reaping:{node}` lock lives if its holder dies before releasing it."""


class _Busy(Exception):
    """Another node is reaping this one: rebuild once it has finished."""


def _is_outage(exc: BaseException) -> bool:
    """True when `exc` means Redis cannot be reached, not that one command failed."""
    if isinstance(exc, RedisConnectionError) and "No connection available" in str(exc):
        return False  # our own pool stayed busy too long: load, not an outage
    return isinstance(exc, (RedisConnectionError, RedisTimeoutError, OSError))


class RedisAdapter(Adapter):
    completes_synchronously = False

    def __init__(
        self,
        url: str,
        prefix: str = "pyserver",
        *,
        leave_delay: float = 3.0,
        heartbeat: float = 5.0,
        dead_after: float = 15.0,
        node_id: str | None = None,
    ) -> None:
        self.url = url
        self.p = prefix
        self.node = node_id or f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        # A marker outlives its node's debounce timer long enough for the reaper of a node
        # killed meanwhile to find it (`_leaving`), wait the delay itself and take it.
        self.pending_ttl_ms = int((2 * leave_delay + dead_after + heartbeat + LEAVE_MARGIN) * 1000)
        self.heartbeat = heartbeat
        self.dead_after = dead_after
        self.bus = f"{prefix}:bus".encode()
        self.healthy = False
        pool = aioredis.BlockingConnectionPool.from_url(
            url,
            max_connections=POOL_SIZE,
            timeout=_POOL_WAIT,
            socket_timeout=5,
            socket_connect_timeout=2,
            health_check_interval=10,
            # A pooled connection that Redis closed (it restarted) fails once: retry on a
            # fresh one before calling it an outage, or every stale connection is another
            # outage and rebuild, and the others may reap this node meanwhile.
            retry=Retry(ExponentialBackoff(cap=0.5, base=0.05), 2),
            retry_on_error=[RedisConnectionError, RedisTimeoutError],
        )
        self.redis: aioredis.Redis = aioredis.Redis.from_pool(pool)
        self._scripts = {
            name: self.redis.register_script(getattr(lua, name))
            for name in (
                "COUNT",
                "SET_COUNT",
                "PRESENCE_JOIN",
                "PRESENCE_LEAVE",
                "USER_JOIN",
                "USER_LEAVE",
                "REAP_COUNT",
                "REAP_PRESENCE",
                "REAP_USER",
                "CLAIM_DEAD",
            )
        }
        self._registries: dict[str, ChannelRegistry] = {}
        self._peers: dict[str, AppPeer] = {}
        self._elsewhere: dict[str, int] = {}
        """App id → its connections on the other nodes, summed at every heartbeat."""
        # What this node contributes, to re-publish after an outage.
        self._presence: dict[tuple[str, str], dict[str, tuple[str, bytes]]] = {}
        self._users: dict[tuple[str, str], set[str]] = {}
        self._outbox: deque[bytes] = deque()
        self._outbox_ready = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._recovery: asyncio.Task[None] | None = None
        self._losses = 0
        """How many times Redis was found unreachable; a rebuild during which this changed
        does not count."""
        self._gate = asyncio.Semaphore(_IN_FLIGHT)
        self._in_flight = 0
        self._settled = asyncio.Event()
        """Cleared while the rebuild transaction is on its way: calls made after its snapshot
        of the local state wait for it, so that they reach Redis after it."""
        self._settled.set()
        self._listening = asyncio.Event()
        """Set while the bus subscription is live: a node is healthy only when it hears."""

    # --- keys ------------------------------------------------------------------------------

    def _subs(self, app: str, channel: str) -> str:
        return f"{self.p}:subs:{app}:{channel}"

    def _channels(self, app: str) -> str:
        return f"{self.p}:channels:{app}"

    def _pconns(self, app: str, channel: str) -> str:
        return f"{self.p}:pconns:{app}:{channel}"

    def _pmembers(self, app: str, channel: str) -> str:
        return f"{self.p}:pmembers:{app}:{channel}"

    def _user(self, app: str, user: str) -> str:
        return f"{self.p}:users:{app}:{user}"

    def _pending(self, key: LeaveKey) -> str:
        return f"{self.p}:pending:" + ":".join(key)

    def _index(self, node: str) -> str:
        return f"{self.p}:index:{node}"

    def _alive(self, node: str) -> str:
        return f"{self.p}:alive:{node}"

    def _conns(self, node: str) -> str:
        return f"{self.p}:conns:{node}"

    def _leaving(self, node: str) -> str:
        return f"{self.p}:leaving:{node}"

    def _reaping(self, node: str) -> str:
        return f"{self.p}:reaping:{node}"

    def _field(self, socket_id: str) -> str:
        return f"{self.node}|{socket_id}"

    # --- lifecycle -------------------------------------------------------------------------

    def attach(self, app_id: str, registry: ChannelRegistry, peer: AppPeer) -> None:
        self._registries[app_id] = registry
        self._peers[app_id] = peer

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._tasks = [
            loop.create_task(self._listen()),
            loop.create_task(self._write_outbox()),
            loop.create_task(self._keep_alive()),
        ]
        try:
            await self._rejoin()
        except (RedisError, OSError, _Busy) as exc:
            self.healthy = False
            self._lost(exc)
        else:
            log.info("redis adapter: node %s joined the cluster at %s", self.node, self.url)

    async def close(self) -> None:
        tasks_ = [*self._tasks, *([self._recovery] if self._recovery else [])]
        for task in tasks_:
            task.cancel()
        await asyncio.gather(*tasks_, return_exceptions=True)
        try:
            await self._reap(self.node)  # leave cleanly: nobody has to wait for the heartbeat
            await self.redis.delete(self._alive(self.node), self._conns(self.node))
        except (RedisError, OSError):
            pass
        await self.redis.aclose()

    def _failed(self, exc: BaseException) -> None:
        """A Redis call failed: an outage if the server is out of reach, else just logged."""
        if _is_outage(exc):
            self._lost(exc)
        else:
            log.error("redis adapter: a Redis command failed: %r", exc)

    def _lost(self, exc: BaseException) -> None:
        self._losses += 1
        if self.healthy or self._recovery is None:
            log.error(
                "redis adapter: Redis at %s is unreachable (%s); serving local clients only "
                "until it is back",
                self.url,
                exc,
            )
        self.healthy = False
        if self._recovery is None:
            self._recovery = asyncio.get_running_loop().create_task(self._recover())

    async def _recover(self) -> None:
        """Retry, with backoff, until one rebuild completes with no loss during it."""
        delay = 0.25
        try:
            while True:
                await asyncio.sleep(delay)
                delay = min(10.0, delay * 2)
                losses = self._losses
                try:
                    await self._rejoin()
                except (RedisError, OSError, _Busy) as exc:
                    log.debug("redis adapter: still cut off from Redis (%r)", exc)
                    continue
                except Exception:  # a bug must not leave the node cut off for good
                    self.healthy = False
                    log.exception("redis adapter: re-joining the cluster failed; retrying")
                    continue
                if losses != self._losses:  # lost again meanwhile: the rebuild may be partial
                    self.healthy = False
                    continue
                log.warning("redis adapter: Redis is back; this node's state rebuilt")
                return
        finally:
            self._recovery = None

    async def _rejoin(self) -> None:
        """Join the cluster and make Redis hold exactly this node's local state: remove what
        it holds for this node, as the reaper would for a dead one, and write the local state
        again, in one transaction; then report the leaves this implies (like the reaper).
        Sets `healthy` when the transaction is sent; raises if Redis is out of reach."""
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.sadd(f"{self.p}:nodes", self.node)
            pipe.set(self._alive(self.node), b"1", px=int(self.dead_after * 1000))
            await pipe.execute()
        await asyncio.wait_for(self._listening.wait(), timeout=5)
        while self._in_flight:  # calls sent before the loss may still land: rebuild after them
            await asyncio.sleep(0.05)
        lock = self._reaping(self.node)
        if not await self.redis.set(lock, self.node, nx=True, px=_LOCK_MS):
            holder = await self.redis.get(lock)
            if holder is not None and _text(holder) != self.node:
                raise _Busy(_text(holder))
        entries = await self.redis.smembers(self._index(self.node))
        async with self.redis.pipeline(transaction=True) as pipe:
            # From the snapshot to the end of the transaction, calls wait (see `_safely`).
            reaped = self._queue_reap(pipe, self.node, entries)
            kept = self._queue_republish(pipe)
            self._settled.clear()
            self.healthy = True
            try:
                results = await pipe.execute()
            except BaseException:
                self.healthy = False
                raise
            finally:
                self._settled.set()
        self._report_reaped(reaped, results, kept)
        with contextlib.suppress(RedisError, OSError):
            await self.redis.delete(lock)

    def _queue_republish(self, pipe: Any) -> set[tuple[str, str, str, str]]:
        """Queue writing this node's local state; return what it holds as reap entries plus a
        user id for presence ones, so that `_report_reaped` skips what is still there."""
        kept: set[tuple[str, str, str, str]] = set()
        for app_id, registry in self._registries.items():
            for name, channel in registry.channels.items():
                count = len(channel.subscribers)
                if count <= 0:
                    continue
                kept.add(("count", app_id, name, ""))
                self._queue(
                    pipe,
                    "SET_COUNT",
                    [self._subs(app_id, name), self._channels(app_id), self._index(self.node)],
                    [self.node, name, count, orjson.dumps(["count", app_id, name])],
                )
        for (app_id, name), conns in self._presence.items():
            pipe.sadd(self._index(self.node), orjson.dumps(["presence", app_id, name]))
            for socket_id, (user_id, info) in conns.items():
                kept.add(("presence", app_id, name, user_id))
                pipe.hset(self._pconns(app_id, name), self._field(socket_id), user_id)
                pipe.hsetnx(self._pmembers(app_id, name), user_id, info)
        for (app_id, user_id), sockets in self._users.items():
            if not sockets:
                continue
            kept.add(("user", app_id, user_id, ""))
            pipe.sadd(self._index(self.node), orjson.dumps(["user", app_id, user_id]))
            for socket_id in sockets:
                pipe.hset(self._user(app_id, user_id), self._field(socket_id), b"1")
        return kept

    def _queue(self, pipe: Any, script: str, keys: list[Any], args: list[Any]) -> None:
        """Queue a script call on a pipeline (which loads missing scripts before it runs)."""
        registered = self._scripts[script]
        pipe.scripts.add(registered)
        pipe.evalsha(registered.sha, len(keys), *keys, *args)

    async def _safely(self, call: Callable[[], Awaitable[T]], fallback: Callable[[], T]) -> T:
        """Run a Redis call; while Redis is away, answer from local knowledge instead.

        At most `_IN_FLIGHT` calls run at once and the others queue; a call still queued
        when Redis is found unreachable takes the fallback at once."""
        if self.healthy:
            if not self._settled.is_set():
                await self._settled.wait()
            async with self._gate:
                if self.healthy:
                    self._in_flight += 1
                    try:
                        return await call()
                    except (RedisError, OSError) as exc:
                        self._failed(exc)
                    finally:
                        self._in_flight -= 1
        return fallback()

    # --- delivery --------------------------------------------------------------------------

    def publish(
        self, app_id: str, channel: str, frame: bytes, except_socket_id: str | None
    ) -> None:
        self._registries[app_id].broadcast(channel, frame, except_socket_id)
        header = orjson.dumps([self.node, app_id, channel, except_socket_id])
        self._send(_BROADCAST + header + b"\n" + frame)

    def terminate_user(self, app_id: str, user_id: str) -> None:
        self._peers[app_id].terminate_local(user_id)
        self._control("terminate", app_id, user_id)

    def kick(self, app_id: str, channel: str, user_id: str | None, socket_id: str | None) -> None:
        self._peers[app_id].kick_local(channel, user_id, socket_id)
        self._control("kick", app_id, channel, user_id, socket_id)

    def announce_user(self, app_id: str, user_id: str, online: bool) -> None:
        self._peers[app_id].user_announced(user_id, online)
        self._control("user", app_id, user_id, online)

    def _control(self, *fields: Any) -> None:
        self._send(_CONTROL + orjson.dumps([self.node, *fields]))

    def _send(self, message: bytes) -> None:
        if not self.healthy:
            return  # local delivery already happened; other nodes are out of reach
        self._outbox.append(message)
        self._outbox_ready.set()

    async def _write_outbox(self) -> None:
        while True:
            await self._outbox_ready.wait()
            self._outbox_ready.clear()
            while self._outbox:
                batch = [self._outbox.popleft() for _ in range(min(len(self._outbox), 512))]
                try:
                    async with self.redis.pipeline(transaction=False) as pipe:
                        for message in batch:
                            pipe.publish(self.bus, message)
                        await pipe.execute()
                except (RedisError, OSError) as exc:
                    self._failed(exc)
                    if not self.healthy:
                        self._outbox.clear()
                except Exception:  # a bug must cost this batch, not every later publish
                    log.exception("redis adapter: publishing %d messages failed", len(batch))

    async def _listen(self) -> None:
        while True:
            pubsub = self.redis.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(self.bus)
                self._listening.set()
                while True:
                    message = await pubsub.get_message(timeout=1.0)
                    if message is not None and message["type"] == "message":
                        self._received(message["data"])
            except (RedisError, OSError) as exc:
                self._listening.clear()
                if self.healthy or self._recovery is not None:
                    self._failed(exc)
                await asyncio.sleep(0.25)
            except Exception:  # a bug must not silence the bus for good
                self._listening.clear()
                log.exception("redis adapter: bus listener failed; restarting it")
                await asyncio.sleep(0.25)
            finally:
                with contextlib.suppress(RedisError, OSError):
                    await pubsub.aclose()

    def _received(self, data: bytes) -> None:
        kind = data[:1]
        try:
            if kind == _BROADCAST:
                header, _, frame = data[1:].partition(b"\n")
                origin, app_id, channel, except_socket_id = orjson.loads(header)
                registry = self._registries.get(app_id)
                if origin != self.node and registry is not None:
                    registry.broadcast(channel, frame, except_socket_id)
            elif kind == _CONTROL:
                origin, what, app_id, *args = orjson.loads(data[1:])
                peer = self._peers.get(app_id)
                if origin == self.node or peer is None:
                    return
                if what == "terminate":
                    peer.terminate_local(args[0])
                elif what == "kick":
                    peer.kick_local(args[0], args[1], args[2])
                elif what == "user":
                    peer.user_announced(args[0], bool(args[1]))
        except (ValueError, IndexError, TypeError):
            log.warning("redis adapter: ignored a malformed bus message (%d bytes)", len(data))

    # --- liveness and reaping --------------------------------------------------------------

    async def _keep_alive(self) -> None:
        while True:
            await asyncio.sleep(self.heartbeat)
            if not self.healthy:
                continue
            try:
                await self.redis.set(self._alive(self.node), b"1", px=int(self.dead_after * 1000))
                nodes = [_text(n) for n in await self.redis.smembers(f"{self.p}:nodes")]
                others = [n for n in nodes if n != self.node]
                await self._exchange_connection_counts(others)
                await self._reap_dead_nodes(others)
            except (RedisError, OSError) as exc:
                self._failed(exc)
            except Exception:  # a bug must not stop the heartbeat: the node would be reaped
                log.exception("redis adapter: heartbeat round failed")

    def connections_elsewhere(self, app_id: str) -> int:
        return self._elsewhere.get(app_id, 0)

    async def _exchange_connection_counts(self, others: list[str]) -> None:
        """Report this node's connections per app (a key that dies with the node) and sum
        the other nodes' reports, for the cluster-wide `max_connections`."""
        mine = {app_id: peer.connection_count() for app_id, peer in self._peers.items()}
        ttl = int(self.dead_after * 1000)
        await self.redis.set(self._conns(self.node), orjson.dumps(mine), px=ttl)
        totals: dict[str, int] = {}
        if others:
            for raw in await self.redis.mget([self._conns(n) for n in others]):
                for app_id, count in (orjson.loads(raw) if raw else {}).items():
                    totals[app_id] = totals.get(app_id, 0) + count
        self._elsewhere = totals

    async def _reap_dead_nodes(self, others: list[str]) -> None:
        for node in others:
            # Atomically "still dead?" and "nobody else on it?": a node coming back sets its
            # key first and then takes this same lock to rebuild its state.
            claimed = await self._scripts["CLAIM_DEAD"](
                keys=[self._alive(node), self._reaping(node)], args=[self.node, _LOCK_MS]
            )
            if claimed:
                log.warning("redis adapter: node %s stopped answering; removing its state", node)
                await self._reap(node)
                await self._send_orphaned(node)
                await self.redis.delete(self._reaping(node))

    async def _reap(self, node: str) -> None:
        """Remove everything `node` contributed and report each transition once."""
        entries = await self.redis.smembers(self._index(node))
        async with self.redis.pipeline(transaction=False) as pipe:
            reaped = self._queue_reap(pipe, node, entries)
            pipe.srem(f"{self.p}:nodes", node)
            results = await pipe.execute()
        self._report_reaped(reaped, results, set())

    def _queue_reap(
        self, pipe: Any, node: str, entries: Iterable[bytes | str]
    ) -> list[tuple[str, str, str]]:
        """Queue removing every field `node` has in the keys its index names, then the index
        itself; return the entries in the order of their results."""
        prefix = f"{node}|"
        reaped = []
        for raw in entries:
            kind, app_id, name = orjson.loads(raw)
            if kind == "count":
                self._queue(
                    pipe,
                    "REAP_COUNT",
                    [
                        self._subs(app_id, name),
                        self._channels(app_id),
                        self._pending(("channel", app_id, name)),
                    ],
                    [node, name, self.pending_ttl_ms],
                )
            elif kind == "presence":
                self._queue(
                    pipe,
                    "REAP_PRESENCE",
                    [self._pconns(app_id, name), self._pmembers(app_id, name)],
                    [prefix, self._pending(("member", app_id, name)) + ":", self.pending_ttl_ms],
                )
            elif kind == "user":
                self._queue(
                    pipe,
                    "REAP_USER",
                    [self._user(app_id, name), self._pending(("user", app_id, name))],
                    [prefix, self.pending_ttl_ms],
                )
            else:
                continue
            reaped.append((kind, app_id, name))
        pipe.delete(self._index(node))
        return reaped

    def _report_reaped(
        self,
        reaped: list[tuple[str, str, str]],
        results: list[Any],
        kept: set[tuple[str, str, str, str]],
    ) -> None:
        """Report the leaves the reap scripts found, except for what `kept` wrote back."""
        for (kind, app_id, name), result in zip(reaped, results, strict=False):
            peer = self._peers.get(app_id)
            if peer is None or not result:
                continue
            if kind == "count" and (kind, app_id, name, "") not in kept:
                peer.remote_channel_left(name)
            elif kind == "presence":
                for raw in result:
                    user = _text(raw)
                    if (kind, app_id, name, user) not in kept:
                        peer.remote_member_left(name, user)
            elif kind == "user" and (kind, app_id, name, "") not in kept:
                peer.remote_user_left(name)

    # --- state -----------------------------------------------------------------------------

    async def _count(self, app_id: str, channel: str, delta: int) -> CountChange:
        async def call() -> CountChange:
            total, transition = await self._scripts["COUNT"](
                keys=[
                    self._subs(app_id, channel),
                    self._channels(app_id),
                    self._pending(("channel", app_id, channel)),
                    self._index(self.node),
                ],
                args=[
                    self.node,
                    channel,
                    delta,
                    self.pending_ttl_ms,
                    orjson.dumps(["count", app_id, channel]),
                ],
            )
            change = CountChange(int(total), _TRANSITIONS[transition])
            if change.transition is Transition.LEFT:
                await self._note_leaving(("channel", app_id, channel))
            return change

        return await self._safely(
            call,
            lambda: CountChange(self._registries[app_id].count(channel), Transition.NONE),
        )

    async def subscribe(self, app_id: str, channel: str, socket_id: str) -> CountChange:
        return await self._count(app_id, channel, 1)

    async def unsubscribe(self, app_id: str, channel: str, socket_id: str) -> CountChange:
        return await self._count(app_id, channel, -1)

    async def presence_join(
        self, app_id: str, channel: str, socket_id: str, user_id: str, user_info: Any
    ) -> PresenceJoin:
        info = orjson.dumps(user_info)
        mine = self._presence.setdefault((app_id, channel), {})
        mine[socket_id] = (user_id, info)

        async def call() -> PresenceJoin:
            transition, flat = await self._scripts["PRESENCE_JOIN"](
                keys=[
                    self._pconns(app_id, channel),
                    self._pmembers(app_id, channel),
                    self._pending(("member", app_id, channel, user_id)),
                    self._index(self.node),
                ],
                args=[
                    self._field(socket_id),
                    user_id,
                    info,
                    orjson.dumps(["presence", app_id, channel]),
                ],
            )
            members = {flat[i].decode(): orjson.loads(flat[i + 1]) for i in range(0, len(flat), 2)}
            state = _TRANSITIONS[transition]
            return PresenceJoin(state is not Transition.NONE, state, members)

        def local() -> PresenceJoin:
            members: dict[str, Any] = {}
            for uid, raw in mine.values():
                members.setdefault(uid, orjson.loads(raw))
            first = sum(1 for uid, _ in mine.values() if uid == user_id) == 1
            return PresenceJoin(first, Transition.NONE, members)

        return await self._safely(call, local)

    async def presence_leave(self, app_id: str, channel: str, socket_id: str, user_id: str) -> bool:
        mine = self._presence.get((app_id, channel), {})
        mine.pop(socket_id, None)
        if not mine:
            self._presence.pop((app_id, channel), None)

        async def call() -> bool:
            last = await self._scripts["PRESENCE_LEAVE"](
                keys=[
                    self._pconns(app_id, channel),
                    self._pmembers(app_id, channel),
                    self._pending(("member", app_id, channel, user_id)),
                ],
                args=[self._field(socket_id), user_id, self.pending_ttl_ms],
            )
            if last:
                await self._note_leaving(("member", app_id, channel, user_id))
            return bool(last)

        return await self._safely(call, lambda: all(u != user_id for u, _ in mine.values()))

    async def user_join(self, app_id: str, user_id: str, socket_id: str) -> Transition:
        sockets = self._users.setdefault((app_id, user_id), set())
        sockets.add(socket_id)

        async def call() -> Transition:
            transition = await self._scripts["USER_JOIN"](
                keys=[
                    self._user(app_id, user_id),
                    self._pending(("user", app_id, user_id)),
                    self._index(self.node),
                ],
                args=[self._field(socket_id), orjson.dumps(["user", app_id, user_id])],
            )
            return _TRANSITIONS[transition]

        return await self._safely(
            call, lambda: Transition.ARRIVED if len(sockets) == 1 else Transition.NONE
        )

    async def user_leave(self, app_id: str, user_id: str, socket_id: str) -> bool:
        sockets = self._users.get((app_id, user_id), set())
        sockets.discard(socket_id)
        if not sockets:
            self._users.pop((app_id, user_id), None)

        async def call() -> bool:
            last = await self._scripts["USER_LEAVE"](
                keys=[self._user(app_id, user_id), self._pending(("user", app_id, user_id))],
                args=[self._field(socket_id), self.pending_ttl_ms],
            )
            if last:
                await self._note_leaving(("user", app_id, user_id))
            return bool(last)

        return await self._safely(call, lambda: not sockets)

    async def _note_leaving(self, key: LeaveKey) -> None:
        """Remember a leave whose webhook this node's debounce timer holds, so that if the
        node dies before the timer fires its reaper sends the webhook (`_send_orphaned`)."""
        now_ms = int(time.time() * 1000)
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.zadd(self._leaving(self.node), {orjson.dumps(key): now_ms + self.pending_ttl_ms})
            pipe.zremrangebyscore(self._leaving(self.node), "-inf", now_ms)
            pipe.pexpire(self._leaving(self.node), self.pending_ttl_ms)
            await pipe.execute()

    async def _send_orphaned(self, node: str) -> None:
        """Report the leaves a dead node still held in its debounce timers: the same path as
        a local leave, so the webhook goes out after the delay unless the member, user or
        channel returns first (which takes the marker)."""
        now_ms = int(time.time() * 1000)
        raw = await self.redis.zrangebyscore(self._leaving(node), now_ms, "+inf")
        await self.redis.delete(self._leaving(node))
        for item in raw:
            key: LeaveKey = tuple(orjson.loads(cast(bytes, item)))
            peer = self._peers.get(key[1])
            if peer is None or not await self.redis.exists(self._pending(key)):
                continue  # sent by the node before it died, or taken by a return
            if key[0] == "channel":
                peer.remote_channel_left(key[2])
            elif key[0] == "member":
                peer.remote_member_left(key[2], key[3])
            else:
                peer.remote_user_left(key[2])

    async def take_pending_leave(self, key: LeaveKey) -> bool:
        async def call() -> bool:
            return bool(await self.redis.delete(self._pending(key)))

        # While Redis is away, no: the rebuild reports each leave of the outage once, and a
        # webhook sent now as well would be its second.
        return await self._safely(call, lambda: False)

    def cache_put(self, app_id: str, channel: str, event: CachedEvent) -> None:
        value = orjson.dumps([event.payload.decode(), event.event, event.data])
        key = f"{self.p}:cache:{app_id}:{channel}"

        async def put() -> None:
            await self.redis.set(key, value, px=int(event.ttl * 1000))

        if self.healthy:
            tasks.run(self._safely(put, lambda: None), synchronous=False)

    async def cache_get(self, app_id: str, channel: str) -> CachedEvent | None:
        key = f"{self.p}:cache:{app_id}:{channel}"

        async def call() -> CachedEvent | None:
            async with self.redis.pipeline(transaction=False) as pipe:
                pipe.get(key)
                pipe.pttl(key)
                raw, ttl_ms = await pipe.execute()
            if raw is None or ttl_ms <= 0:
                return None
            payload, event, data = orjson.loads(raw)
            return CachedEvent(payload.encode(), event, data, ttl_ms / 1000)

        return await self._safely(call, lambda: None)

    # --- queries ---------------------------------------------------------------------------

    async def users_online(self, app_id: str, user_ids: Iterable[str]) -> set[str]:
        ids = list(user_ids)

        async def call() -> set[str]:
            async with self.redis.pipeline(transaction=False) as pipe:
                for user_id in ids:
                    pipe.exists(self._user(app_id, user_id))
                found = await pipe.execute()
            return {u for u, present in zip(ids, found, strict=True) if present}

        return await self._safely(call, lambda: {u for u in ids if (app_id, u) in self._users})

    async def presence_members(self, app_id: str, channel: str) -> Mapping[str, Any]:
        async def call() -> Mapping[str, Any]:
            raw = await self.redis.hgetall(self._pmembers(app_id, channel))
            return {_text(k): orjson.loads(v) for k, v in raw.items()}

        def local() -> Mapping[str, Any]:
            members: dict[str, Any] = {}
            for uid, info in self._presence.get((app_id, channel), {}).values():
                members.setdefault(uid, orjson.loads(info))
            return members

        return await self._safely(call, local)

    async def channel_counts(self, app_id: str, channel: str) -> ChannelCounts:
        async def call() -> ChannelCounts:
            async with self.redis.pipeline(transaction=False) as pipe:
                pipe.hvals(self._subs(app_id, channel))
                pipe.hlen(self._pmembers(app_id, channel))
                counts, users = await pipe.execute()
            return ChannelCounts(sum(int(c) for c in counts), int(users))

        def local() -> ChannelCounts:
            users = {u for u, _ in self._presence.get((app_id, channel), {}).values()}
            return ChannelCounts(self._registries[app_id].count(channel), len(users))

        return await self._safely(call, local)

    async def occupied_channels(self, app_id: str, prefix: str) -> dict[str, ChannelCounts]:
        async def call() -> dict[str, ChannelCounts]:
            names = sorted(
                n
                for n in (_text(m) for m in await self.redis.smembers(self._channels(app_id)))
                if n.startswith(prefix)
            )
            async with self.redis.pipeline(transaction=False) as pipe:
                for name in names:
                    pipe.hvals(self._subs(app_id, name))
                    pipe.hlen(self._pmembers(app_id, name))
                found = await pipe.execute()
            result = {}
            for i, name in enumerate(names):
                total = sum(int(c) for c in found[2 * i])
                if total:
                    result[name] = ChannelCounts(total, int(found[2 * i + 1]))
            return result

        def local() -> dict[str, ChannelCounts]:
            registry = self._registries[app_id]
            return {
                name: ChannelCounts(len(ch.subscribers), 0)
                for name, ch in registry.channels.items()
                if name.startswith(prefix)
            }

        return await self._safely(call, local)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
