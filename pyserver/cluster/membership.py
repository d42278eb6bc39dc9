"""Cluster membership for any distributed engine: heartbeats, liveness and reaping.

Theory of operation
-------------------
- Every `heartbeat` seconds a healthy node refreshes its liveness (a record that expires
  after `dead_after`), reports its connections per app and sums the other nodes' reports
  (`connections_elsewhere`, for the cluster-wide `max_connections`).
- A node whose liveness expired is dead. Every survivor tries to *claim* it; the claim is
  atomic ("still dead, and nobody else on it"), so exactly one survivor reaps it: it
  removes the dead node's subscriptions, presence memberships and users, and reports each
  leave that implies once (`report_leaves`). It then re-reports the leaves the dead node's
  debounce timers still held (`orphans`, see `pyserver.cluster.leaves`), so their webhooks
  are not lost with the node. A survivor claims only the nodes whose liveness it found
  expired (read with their counts, at each heartbeat), not every other node: a healthy
  cluster's heartbeat costs each node two round trips, whatever its size.
- A node coming back sets its liveness first and then takes the same claim to rebuild its
  own share (`pyserver.cluster.recovery`); a reaper never removes a live node.
- A node that stops cleanly reaps itself, so nobody waits for its heartbeat to expire.

The engine supplies the storage (`MembershipStore`); this module decides when and what.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import Protocol

from pyserver.cluster.adapter import AppPeer
from pyserver.cluster.leaves import LeaveKey
from pyserver.cluster.recovery import Recovery, report_leaves

log = logging.getLogger("pyserver.cluster.membership")


class MembershipStore(Protocol):
    """What membership needs of an engine. Every call may raise the engine's failures."""

    async def beat(self, mine: dict[str, int]) -> list[str]:
        """Refresh this node's liveness and report its connections per app (`mine`);
        return the other nodes of the cluster."""
        ...

    async def others(self, nodes: list[str]) -> tuple[dict[str, int], list[str]]:
        """The connections per app of `nodes`, summed, and those of them whose liveness
        has expired (a hint: the claim decides)."""
        ...

    async def claim(self, node: str) -> bool:
        """True when `node` is dead and now this node's to reap."""
        ...

    async def reap(self, node: str) -> list[LeaveKey]:
        """Remove everything `node` contributed; return the leaves that caused."""
        ...

    async def orphans(self, node: str) -> list[LeaveKey]:
        """The leaves `node`'s debounce timers held whose markers still stand."""
        ...

    async def release(self, node: str) -> None:
        """Drop the claim on `node`."""
        ...


class Membership:
    def __init__(
        self,
        store: MembershipStore,
        peers: Mapping[str, AppPeer],
        recovery: Recovery,
        heartbeat: float,
    ) -> None:
        self.store = store
        self.peers = peers
        self.recovery = recovery
        self.heartbeat = heartbeat
        self.elsewhere: dict[str, int] = {}
        """App id → its connections on the other nodes, summed at every heartbeat."""

    def connections_elsewhere(self, app_id: str) -> int:
        return self.elsewhere.get(app_id, 0)

    async def run(self) -> None:
        """The heartbeat loop (a Task for the node's life)."""
        while True:
            await asyncio.sleep(self.heartbeat)
            if not self.recovery.healthy:
                continue
            try:
                await self.beat()
            except self.recovery.failures as exc:
                self.recovery.failed(exc)
            except Exception:  # a bug must not stop the heartbeat: the node would be reaped
                log.exception("%s: heartbeat round failed", self.recovery.label)

    async def beat(self) -> None:
        mine = {app_id: peer.connection_count() for app_id, peer in self.peers.items()}
        others = await self.store.beat(mine)
        self.elsewhere, silent = await self.store.others(others) if others else ({}, [])
        for node in silent:
            if await self.store.claim(node):
                log.warning(
                    "%s: node %s stopped answering; removing its state", self.recovery.label, node
                )
                await self.reap(node)
                orphans = await self.store.orphans(node)
                if orphans:
                    log.debug("node %s held %d pending leaves; re-reporting", node, len(orphans))
                report_leaves(self.peers, orphans, set())
                await self.store.release(node)

    async def reap(self, node: str) -> None:
        """Remove `node`'s share and report each leave it implies once."""
        leaves = await self.store.reap(node)
        log.debug("reaped node %s: %d leaves", node, len(leaves))
        report_leaves(self.peers, leaves, set())
