"""The `redis` Adapter driver: N nodes that behave exactly like one.

It composes the engine-neutral parts of `pyserver.cluster` (the bus codec, membership,
recovery, the leave debounce) with their Redis implementations in this package; read the
package docstring for the map.

Invariants:
- The node that triggers delivers to its local subscribers at once and ignores its own
  message when it comes back from the bus; control messages (terminate, kick, watchlist)
  likewise run locally first.
- Broadcasts cross nodes as the already-encoded WebSocket frame: one publish per trigger,
  and each node writes the same bytes to its own subscribers.
- At most `IN_FLIGHT` state calls run at once; the rest of the pool is for the bus
  listener, the outbox writer, heartbeats, reaping and recovery.
- While Redis is unreachable the node serves its own clients from local knowledge and
  reports `healthy = False` (`pyserver.cluster.recovery`).
- Redis is reached through one `RedisLink` (a single server, Sentinel or Cluster): when the
  Sentinels name a new master, the node rebuilds its state there exactly as after an
  outage, since a failover may lose the last writes that had not reached the replica.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import uuid
from collections.abc import Iterable, Mapping
from typing import Any

from pyserver import tasks
from pyserver.cluster import bus
from pyserver.cluster.adapter import (
    Adapter,
    AppPeer,
    CachedEvent,
    ChannelCounts,
    CountChange,
    LocalFanout,
    PresenceJoin,
    Transition,
)
from pyserver.cluster.leaves import LeaveKey, cluster_marker_ttl
from pyserver.cluster.membership import Membership
from pyserver.cluster.recovery import Busy, Recovery
from pyserver.cluster.redis.connection import (
    FAILURES,
    POOL_SIZE,
    RedisLink,
    UrlSettings,
    connect,
    explain,
    is_outage,
)
from pyserver.cluster.redis.keys import RedisKeys
from pyserver.cluster.redis.leaves import RedisLeaveMarkers
from pyserver.cluster.redis.reaping import RedisShare
from pyserver.cluster.redis.scripts import Scripts
from pyserver.cluster.redis.state import RedisState
from pyserver.cluster.redis.transport import RedisTransport
from pyserver.config import mask_url

log = logging.getLogger("pyserver.cluster.redis")
bus_log = logging.getLogger("pyserver.cluster.bus")

IN_FLIGHT = POOL_SIZE - 8
"""State calls running at once."""
_JOIN_FAILURES: tuple[type[BaseException], ...] = (*FAILURES, Busy)


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
        client: RedisLink | None = None,
    ) -> None:
        """`client`, the link to Redis (`connection.connect(settings)`), replaces the one
        made from `url` (a single server); the adapter closes it in `close`."""
        self.link: RedisLink = client or connect(UrlSettings(url))
        self.url = mask_url(url) if self.link.mode != "sentinel" else self.link.describe()
        """Where Redis is, for log lines (with Sentinel, the master's name); never the
        password of `url`."""
        self.node = node_id or f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self.redis = self.link.client
        self.keys = RedisKeys(prefix)
        self._fanouts: dict[str, LocalFanout] = {}
        self._peers: dict[str, AppPeer] = {}
        self.recovery = Recovery(
            self._rejoin,
            is_outage,
            FAILURES,
            "redis adapter",
            "Redis",
            self.url,
            limit=IN_FLIGHT,
            describe=explain,
        )
        self.link.on_master_change(self._master_changed)
        ttl_ms = int(cluster_marker_ttl(leave_delay, dead_after, heartbeat) * 1000)
        scripts = Scripts(self.redis)
        self.markers = RedisLeaveMarkers(self.redis, self.keys, self.node, ttl_ms, self.recovery)
        self.state = RedisState(
            self.redis, self.keys, scripts, self.node, self.markers, self.recovery, self._fanouts
        )
        self.transport = RedisTransport(self.link, prefix, self._received, self.recovery)
        self.share = RedisShare(
            self.redis,
            self.keys,
            scripts,
            self.node,
            dead_after,
            self.markers,
            self.recovery,
            self.state,
            self.transport,
            self._fanouts,
            self._peers,
        )
        self.membership = Membership(self.share, self._peers, self.recovery, heartbeat)
        self._origin = self.node.encode()
        self._tasks: list[asyncio.Task[None]] = []
        self._debug = False
        """Whether bus traffic is logged (read once at start: free on the hot path)."""

    @property
    def healthy(self) -> bool:
        return self.recovery.healthy

    @healthy.setter
    def healthy(self, value: bool) -> None:
        self.recovery.healthy = value

    @property
    def pending_ttl_ms(self) -> int:
        return self.markers.ttl_ms

    # --- lifecycle -------------------------------------------------------------------------

    def attach(self, app_id: str, registry: LocalFanout, peer: AppPeer) -> None:
        self._fanouts[app_id] = registry
        self._peers[app_id] = peer
        self.share.attached(app_id)

    async def start(self) -> None:
        self._debug = bus_log.isEnabledFor(logging.DEBUG)
        self.state.start()
        await self.link.start()
        loop = asyncio.get_running_loop()
        self._tasks = [
            loop.create_task(self.transport.listen()),
            loop.create_task(self.transport.write_outbox()),
            loop.create_task(self.membership.run()),
        ]
        try:
            await self._rejoin()
        except _JOIN_FAILURES as exc:
            self.recovery.healthy = False
            self.recovery.lost(exc)
        else:
            log.info(
                "redis adapter: node %s joined the cluster at %s (%s)",
                self.node,
                self.url,
                self.link.describe(),
            )

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.recovery.close()
        with contextlib.suppress(*FAILURES):
            await self.share.leave()
        await self.link.aclose()

    async def _rejoin(self) -> None:
        await self.share.rejoin()

    def _master_changed(self, old: str, new: str) -> None:
        """The Sentinels promoted another server: rebuild this node's state on it."""
        self.recovery.moved(f"the Sentinels moved the master from {old} to {new}")

    def _lost(self, exc: BaseException) -> None:
        """Redis was found unreachable (also the tests' way to simulate an outage)."""
        self.recovery.lost(exc)

    def connections_elsewhere(self, app_id: str) -> int:
        return self.membership.connections_elsewhere(app_id)

    # --- delivery --------------------------------------------------------------------------

    def publish(
        self, app_id: str, channel: str, frame: bytes, except_socket_id: str | None
    ) -> None:
        self._fanouts[app_id].broadcast(channel, frame, except_socket_id)
        if self.recovery.healthy:
            self.transport.send(
                self.transport.channel(app_id, channel),
                bus.encode_broadcast(self.node, app_id, channel, except_socket_id, frame),
            )
            if self._debug:
                bus_log.debug("sent broadcast %s/%s (%d bytes)", app_id, channel, len(frame))

    def terminate_user(self, app_id: str, user_id: str) -> None:
        self._peers[app_id].terminate_local(user_id)
        self._send(bus.Terminate(self.node, app_id, user_id))

    def kick(self, app_id: str, channel: str, user_id: str | None, socket_id: str | None) -> None:
        self._peers[app_id].kick_local(channel, user_id, socket_id)
        self._send(bus.Kick(self.node, app_id, channel, user_id, socket_id), channel)

    def announce_user(self, app_id: str, user_id: str, online: bool) -> None:
        self._peers[app_id].user_announced(user_id, online)
        self._send(bus.UserAnnounced(self.node, app_id, user_id, online))

    def _send(self, message: bus.Message, channel: str | None = None) -> None:
        if self.recovery.healthy:
            self.transport.send(self.transport.channel(message.app, channel), bus.encode(message))
            if self._debug:
                bus_log.debug("sent %r", message)

    def _received(self, data: bytes) -> None:
        if bus.sent_by(data, self._origin):
            return  # ran locally before it was published
        try:
            message = bus.decode(data)
        except bus.BusDecodeError as exc:
            bus_log.warning(
                "redis adapter: ignored a malformed bus message (%d bytes): %s", len(data), exc
            )
            return
        if message.origin == self.node:
            return
        if self._debug:
            if isinstance(message, bus.Broadcast):
                bus_log.debug(
                    "received broadcast %s/%s from %s (%d bytes)",
                    message.app,
                    message.channel,
                    message.origin,
                    len(message.frame),
                )
            else:
                bus_log.debug("received %r", message)
        if isinstance(message, bus.Broadcast):
            fanout = self._fanouts.get(message.app)
            if fanout is not None:
                fanout.broadcast(message.channel, message.frame, message.except_socket_id)
            return
        peer = self._peers.get(message.app)
        if peer is None:
            return
        if isinstance(message, bus.Terminate):
            peer.terminate_local(message.user)
        elif isinstance(message, bus.Kick):
            peer.kick_local(message.channel, message.user, message.socket_id)
        else:
            peer.user_announced(message.user, message.online)

    # --- state -----------------------------------------------------------------------------

    async def subscribe(self, app_id: str, channel: str, socket_id: str) -> CountChange:
        return await self.state.count(app_id, channel, 1)

    async def unsubscribe(self, app_id: str, channel: str, socket_id: str) -> CountChange:
        return await self.state.count(app_id, channel, -1)

    async def presence_join(
        self, app_id: str, channel: str, socket_id: str, user_id: str, user_info: Any
    ) -> PresenceJoin:
        return await self.state.presence_join(app_id, channel, socket_id, user_id, user_info)

    async def presence_leave(self, app_id: str, channel: str, socket_id: str, user_id: str) -> bool:
        return await self.state.presence_leave(app_id, channel, socket_id, user_id)

    async def user_join(self, app_id: str, user_id: str, socket_id: str) -> Transition:
        return await self.state.user_join(app_id, user_id, socket_id)

    async def user_leave(self, app_id: str, user_id: str, socket_id: str) -> bool:
        return await self.state.user_leave(app_id, user_id, socket_id)

    async def take_pending_leave(self, key: LeaveKey) -> bool:
        return await self.markers.take(key)

    def cache_put(self, app_id: str, channel: str, event: CachedEvent) -> None:
        if self.recovery.healthy:
            tasks.run(self.state.cache_put(app_id, channel, event), synchronous=False)

    async def cache_get(self, app_id: str, channel: str) -> CachedEvent | None:
        return await self.state.cache_get(app_id, channel)

    # --- queries ---------------------------------------------------------------------------

    async def users_online(self, app_id: str, user_ids: Iterable[str]) -> set[str]:
        return await self.state.users_online(app_id, user_ids)

    async def presence_members(self, app_id: str, channel: str) -> Mapping[str, Any]:
        return await self.state.presence_members(app_id, channel)

    async def channel_counts(self, app_id: str, channel: str) -> ChannelCounts:
        return await self.state.channel_counts(app_id, channel)

    async def occupied_channels(self, app_id: str, prefix: str) -> dict[str, ChannelCounts]:
        return await self.state.occupied_channels(app_id, prefix)
