"""A node's share of the Redis state: membership records, reaping a dead node, and the
rebuild of this node's share after an outage. The decisions (when to reap, what to
report, the order of a rebuild) are engine-neutral, in `pyserver.cluster.membership` and
`pyserver.cluster.recovery`; this module is their Redis store.

Invariants:
- Every key a node has a field in is named in the node's index of that app
  (`P:index:{app}:node`, in the app's hash slot, so that the scripts that add fields can add
  the entry too), and every app it has an index for in `P:apps:{node}`; reaping replays
  the indexes through the `REAP_*` scripts, then removes them.
- Before the reap scripts run, the node's presence fields are read to learn its users, so
  that `REAP_PRESENCE` is given each pending-leave key it may set in KEYS. Nobody writes
  those fields meanwhile: the node is dead, or it is this node rebuilding, whose calls are
  held by `Recovery` until the rebuild is sent.
- The rebuild removes and re-writes this node's share in one MULTI transaction on a single
  server, and in one per hash slot of apps on a Redis Cluster (all of an app's keys share
  its slot, and a cluster runs a transaction in one slot only), holding the claim
  `P:reaping:{node}` so that no reaper works on it at the same time. The node's calls wait
  until every transaction is sent (`Recovery.rebuilding`).
- Reads of keys of several nodes (the connection counts, the liveness records) are split
  by slot on a cluster (`redis_connect.mget`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping
from typing import Any

import orjson
from redis.asyncio.cluster import RedisCluster
from redis.crc import key_slot

from pyserver import tasks
from pyserver.cluster.adapter import AppPeer, LocalFanout
from pyserver.cluster.leaves import LeaveKey
from pyserver.cluster.recovery import Busy, NodeState, Recovery, read_node_state, report_leaves
from pyserver.cluster.redis.connection import Client, text
from pyserver.cluster.redis.keys import RedisKeys, field
from pyserver.cluster.redis.leaves import RedisLeaveMarkers
from pyserver.cluster.redis.scripts import Scripts
from pyserver.cluster.redis.state import RedisState, entry
from pyserver.cluster.redis.transport import RedisTransport
from pyserver.cluster.redis_connect import mget

log = logging.getLogger("pyserver.cluster.reaping")

LOCK_MS = 60_000
"""How long a `P:reaping:{node}` claim lives if its holder dies before releasing it."""

_Entry = tuple[str, str, str]
"""An index entry: (kind, app, channel or user)."""


class RedisShare:
    """The `MembershipStore` of the Redis engine, and the rebuild (`rejoin`)."""

    def __init__(
        self,
        client: Client,
        keys: RedisKeys,
        scripts: Scripts,
        node: str,
        dead_after: float,
        markers: RedisLeaveMarkers,
        recovery: Recovery,
        state: RedisState,
        transport: RedisTransport,
        fanouts: Mapping[str, LocalFanout],
        peers: Mapping[str, AppPeer],
    ) -> None:
        self.redis = client
        self.keys = keys
        self.scripts = scripts
        self.node = node
        self.dead_after_ms = int(dead_after * 1000)
        self.markers = markers
        self.recovery = recovery
        self.state = state
        self.transport = transport
        self.fanouts = fanouts
        self.peers = peers

    # --- MembershipStore -----------------------------------------------------------------

    async def beat(self, mine: dict[str, int]) -> list[str]:
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.set(self.keys.alive(self.node), b"1", px=self.dead_after_ms)
            pipe.set(self.keys.conns(self.node), orjson.dumps(mine), px=self.dead_after_ms)
            pipe.smembers(self.keys.nodes())
            members = (await pipe.execute())[-1]
        nodes = [text(n) for n in members]
        return [n for n in nodes if n != self.node]

    async def others(self, nodes: list[str]) -> tuple[dict[str, int], list[str]]:
        keys = [self.keys.conns(n) for n in nodes] + [self.keys.alive(n) for n in nodes]
        found = await mget(self.redis, keys)
        totals: dict[str, int] = {}
        for raw in found[: len(nodes)]:
            for app_id, count in (orjson.loads(raw) if raw else {}).items():
                totals[app_id] = totals.get(app_id, 0) + count
        alive = found[len(nodes) :]
        return totals, [node for node, mark in zip(nodes, alive, strict=True) if mark is None]

    async def claim(self, node: str) -> bool:
        # Atomically "still dead?" and "nobody else on it?": a node coming back sets its
        # key first and then takes this same lock to rebuild its state.
        return bool(
            await self.scripts.call(
                "CLAIM_DEAD",
                [self.keys.alive(node), self.keys.reaping(node)],
                [self.node, LOCK_MS],
            )
        )

    async def reap(self, node: str) -> list[LeaveKey]:
        apps, entries, users = await self._read_share(node)
        async with self.redis.pipeline(transaction=False) as pipe:
            self._queue_reap(pipe, node, apps, entries, users)
            pipe.delete(self.keys.apps(node))
            pipe.srem(self.keys.nodes(), node)
            results = await pipe.execute()
        return await self._leaves(entries, users, results)

    async def orphans(self, node: str) -> list[LeaveKey]:
        return await self.markers.orphans(node)

    async def release(self, node: str) -> None:
        await self.redis.delete(self.keys.reaping(node))

    async def leave(self) -> None:
        """This node stops: remove its share now, nobody has to wait for its heartbeat."""
        await self.reap(self.node)
        await self.redis.delete(self.keys.alive(self.node), self.keys.conns(self.node))

    def attached(self, app_id: str) -> None:
        """An app attached while the node runs: list it among the node's apps (at start
        and after an outage `rejoin` lists them all)."""
        if not self.recovery.healthy:
            return

        async def note() -> None:
            with contextlib.suppress(*self.recovery.failures):
                await self.redis.sadd(self.keys.apps(self.node), app_id)

        tasks.run(note(), synchronous=False)

    # --- the rebuild ---------------------------------------------------------------------

    async def rejoin(self) -> None:
        """Join the cluster and make Redis hold exactly this node's state (see
        `pyserver.cluster.recovery`). Raises if Redis is out of reach, `Busy` if a reaper
        is on this node."""
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.sadd(self.keys.nodes(), self.node)
            pipe.set(self.keys.alive(self.node), b"1", px=self.dead_after_ms)
            if self.peers:
                pipe.sadd(self.keys.apps(self.node), *self.peers)
            await pipe.execute()
        await asyncio.wait_for(self.transport.listening.wait(), timeout=5)
        await self.recovery.wait_idle()
        lock = self.keys.reaping(self.node)
        if not await self.redis.set(lock, self.node, nx=True, px=LOCK_MS):
            holder = await self.redis.get(lock)
            if holder is not None and text(holder) != self.node:
                raise Busy(text(holder))
        apps, entries, users = await self._read_share(self.node)
        # From reading the state to the end of the transactions, calls wait.
        state = read_node_state(self.fanouts, self.peers)
        apps = sorted(
            {*apps, *(app for app, _ in state.counts)}
            | {app for app, _ in state.presence}
            | {app for app, _ in state.users}
        )
        by_app: dict[str, list[_Entry]] = {app: [] for app in apps}
        for e in entries:
            by_app.setdefault(e[1], []).append(e)
        groups = self._same_slot(list(by_app))
        with self.recovery.rebuilding():
            replies = await asyncio.gather(
                *(self._rebuild_apps(group, by_app, users, state) for group in groups)
            )
        entries = [e for group in groups for app in group for e in by_app[app]]
        results = [r for reply in replies for r in reply]
        if log.isEnabledFor(logging.DEBUG):
            log.debug(
                "rebuilt node %s: %d channels, %d presence channels, %d users",
                self.node,
                len(state.counts),
                len(state.presence),
                len(state.users),
            )
        report_leaves(self.peers, await self._leaves(entries, users, results), state.kept())
        with contextlib.suppress(*self.recovery.failures):
            await self.redis.delete(lock)

    def _same_slot(self, apps: list[str]) -> list[list[str]]:
        """The apps in groups whose keys one transaction may touch: all of them on one
        server, those of one hash slot on a cluster."""
        if not isinstance(self.redis, RedisCluster):
            return [apps] if apps else []
        groups: dict[int, list[str]] = {}
        for app in apps:
            groups.setdefault(key_slot(self.keys.channels(app).encode()), []).append(app)
        return list(groups.values())

    async def _rebuild_apps(
        self,
        apps: list[str],
        by_app: dict[str, list[_Entry]],
        users: dict[_Entry, list[str]],
        state: NodeState,
    ) -> list[Any]:
        """These apps' shares removed and written back in one transaction; the reap
        scripts' results, one per entry, app after app."""
        results: list[Any] = []
        async with self.redis.pipeline(transaction=True) as pipe:
            counts = []
            for app in apps:
                before = len(pipe)
                self._queue_reap(pipe, self.node, [app], by_app[app], users)
                self._queue_republish(pipe, state, app)
                counts.append((before, len(by_app[app])))
            replies: list[Any] = await pipe.execute()
        for start, count in counts:
            results += replies[start : start + count]
        return results

    def _queue_republish(self, pipe: Any, state: NodeState, app: str) -> None:
        """Queue writing back this node's state of `app`."""
        keys, node = self.keys, self.node
        for (app_id, name), count in state.counts.items():
            if app_id != app:
                continue
            self.scripts.queue(
                pipe,
                "SET_COUNT",
                [keys.subs(app_id, name), keys.channels(app_id), keys.index(app_id, node)],
                [self.node, name, count, entry("count", app_id, name)],
            )
        for (app_id, name), conns in state.presence.items():
            if app_id != app:
                continue
            pipe.sadd(keys.index(app_id, node), entry("presence", app_id, name))
            for socket_id, user_id in conns.items():
                pipe.hset(keys.pconns(app_id, name), field(self.node, socket_id), user_id)
                pipe.hsetnx(
                    keys.pmembers(app_id, name), user_id, self.state.info_of(app_id, name, user_id)
                )
        for (app_id, user_id), sockets in state.users.items():
            if app_id != app:
                continue
            pipe.sadd(keys.index(app_id, node), entry("user", app_id, user_id))
            for socket_id in sockets:
                pipe.hset(keys.user(app_id, user_id), field(self.node, socket_id), b"1")

    # --- reaping -------------------------------------------------------------------------

    async def _read_share(
        self, node: str
    ) -> tuple[list[str], list[_Entry], dict[_Entry, list[str]]]:
        """The node's apps, their index entries, and for each presence entry the users of
        the node's fields. The apps are those the node listed and those attached here (the
        same configuration runs on every node)."""
        listed = {text(a) for a in await self.redis.smembers(self.keys.apps(node))}
        apps = sorted(listed | set(self.peers))
        entries: list[_Entry] = []
        async with self.redis.pipeline(transaction=False) as pipe:
            for app_id in apps:
                pipe.smembers(self.keys.index(app_id, node))
            indexes = await pipe.execute()
        for raws in indexes:
            for raw in raws:
                kind, app_id, name = orjson.loads(raw)
                if kind in ("count", "presence", "user"):
                    entries.append((kind, app_id, name))
        presence = [e for e in entries if e[0] == "presence"]
        users: dict[_Entry, list[str]] = {}
        if presence:
            async with self.redis.pipeline(transaction=False) as pipe:
                for _, app_id, name in presence:
                    pipe.hgetall(self.keys.pconns(app_id, name))
                found = await pipe.execute()
            mine = f"{node}|"
            for e, fields in zip(presence, found, strict=True):
                users[e] = sorted({text(u) for f, u in fields.items() if text(f).startswith(mine)})
        return apps, entries, users

    def _queue_reap(
        self,
        pipe: Any,
        node: str,
        apps: list[str],
        entries: list[_Entry],
        users: dict[_Entry, list[str]],
    ) -> None:
        """Queue removing every field `node` has in the keys its indexes name, then the
        indexes themselves: one result per entry, in order, then the indexes'."""
        keys, ttl, prefix = self.keys, self.markers.ttl_ms, f"{node}|"
        for e in entries:
            kind, app_id, name = e
            if kind == "count":
                self.scripts.queue(
                    pipe,
                    "REAP_COUNT",
                    [
                        keys.subs(app_id, name),
                        keys.channels(app_id),
                        keys.pending(LeaveKey.for_channel(app_id, name)),
                    ],
                    [node, name, ttl],
                )
            elif kind == "presence":
                found = users.get(e, [])
                pending = [keys.pending(LeaveKey.for_member(app_id, name, u)) for u in found]
                self.scripts.queue(
                    pipe,
                    "REAP_PRESENCE",
                    [keys.pconns(app_id, name), keys.pmembers(app_id, name), *pending],
                    [prefix, ttl, *found],
                )
            else:
                self.scripts.queue(
                    pipe,
                    "REAP_USER",
                    [keys.user(app_id, name), keys.pending(LeaveKey.for_user(app_id, name))],
                    [prefix, ttl],
                )
        for app_id in apps:
            pipe.delete(keys.index(app_id, node))

    async def _leaves(
        self, entries: list[_Entry], users: dict[_Entry, list[str]], results: list[Any]
    ) -> list[LeaveKey]:
        """The leaves the reap scripts found, from their results."""
        leaves: list[LeaveKey] = []
        unmarked: list[LeaveKey] = []
        for e, result in zip(entries, results, strict=False):
            kind, app_id, name = e
            if not result:
                continue
            if kind == "count":
                leaves.append(LeaveKey.for_channel(app_id, name))
            elif kind == "user":
                leaves.append(LeaveKey.for_user(app_id, name))
            else:
                read = users.get(e, [])
                for raw in result:
                    key = LeaveKey.for_member(app_id, name, text(raw))
                    leaves.append(key)
                    if key.user not in read:
                        unmarked.append(key)
        if unmarked:
            # A user the script found but was not told of (cannot happen while nobody
            # writes the node's fields): mark its leave now, a moment late.
            async with self.redis.pipeline(transaction=False) as pipe:
                for key in unmarked:
                    pipe.set(self.keys.pending(key), b"1", px=self.markers.ttl_ms, nx=True)
                await pipe.execute()
        return leaves
