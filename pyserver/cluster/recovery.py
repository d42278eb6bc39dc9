"""Outage detection and the rebuild after it, for any distributed engine.

Theory of operation
-------------------
A node of a distributed engine is *healthy* while its state calls reach the engine and its
bus listener hears. When a call finds the engine unreachable (`lost`), the node:

1. turns unhealthy at once: every state call answers from local knowledge (its fallback),
   publishes stop (local delivery still happens), `/ready` says 503;
2. retries `rejoin` with backoff (0.25 s doubling to 10 s; at once when `nudge`d: the bus
   is subscribed again, or a new master was named) until one completes with no loss during
   it;
3. `rejoin` (the engine's) makes the engine hold exactly this node's current state: it
   removes what the engine holds for the node, as the reaper would for a dead node, and
   writes `read_node_state()` back, in one transaction; each leave the removal implies and
   the node does not hold any more is reported once (`report_leaves`), like a reap.

A failover (`moved`: the Sentinels name another master, which may lack the last writes
that had not reached it) is handled as an outage: the node rebuilds its state there.

The node's state is read from its owners when the rebuild starts (the apps' fan-out tables
for subscription counts, the apps themselves for presence memberships and signed-in users):
no driver keeps a copy of it.

Ordering during a rebuild (`Recovery.safely` and `rebuilding`):
- calls still in flight from before the loss land first (`rejoin` waits for `in_flight`);
- from the moment the state is read to the end of the transaction, new calls wait
  (`settled`), so they reach the engine after the rebuild, never before it;
- at most `limit` calls run at once; a call still queued when the engine is lost takes the
  fallback at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TypeVar

from pyserver.cluster.adapter import AppPeer, LocalFanout
from pyserver.cluster.leaves import LeaveKey, LeaveKind

log = logging.getLogger("pyserver.cluster.recovery")

T = TypeVar("T")


class Busy(Exception):
    """Another node is removing this node's state: rebuild once it has finished."""


@dataclass(slots=True)
class NodeState:
    """What this node holds, read from its owners (`read_node_state`)."""

    counts: dict[tuple[str, str], int] = field(default_factory=dict)
    """(app, channel) → local subscriptions, for channels with at least one."""
    presence: dict[tuple[str, str], dict[str, str]] = field(default_factory=dict)
    """(app, channel) → socket id → user id, per local presence connection."""
    users: dict[tuple[str, str], list[str]] = field(default_factory=dict)
    """(app, user) → local signed-in socket ids."""

    def kept(self) -> set[LeaveKey]:
        """The leaves this state contradicts: a reap of them must not be reported."""
        kept = {LeaveKey.for_channel(app, channel) for app, channel in self.counts}
        for (app, channel), conns in self.presence.items():
            kept.update(LeaveKey.for_member(app, channel, user) for user in conns.values())
        kept.update(LeaveKey.for_user(app, user) for app, user in self.users)
        return kept


def read_node_state(fanouts: Mapping[str, LocalFanout], peers: Mapping[str, AppPeer]) -> NodeState:
    state = NodeState()
    for app_id, fanout in fanouts.items():
        for name in fanout.channels:
            count = fanout.count(name)
            if count > 0:
                state.counts[(app_id, name)] = count
    for app_id, peer in peers.items():
        for channel, socket_id, user_id in peer.local_presence():
            state.presence.setdefault((app_id, channel), {})[socket_id] = user_id
        for user_id, socket_id in peer.local_users():
            state.users.setdefault((app_id, user_id), []).append(socket_id)
    return state


def report_leaves(
    peers: Mapping[str, AppPeer], leaves: Iterable[LeaveKey], kept: set[LeaveKey]
) -> None:
    """Tell each app about the leaves a reap or a rebuild found, but those in `kept`."""
    for key in leaves:
        peer = peers.get(key.app)
        if peer is None or key in kept:
            continue
        log.debug("reporting leave %s of a removed node share", key.parts())
        if key.kind is LeaveKind.CHANNEL and key.channel is not None:
            peer.remote_channel_left(key.channel)
        elif key.kind is LeaveKind.MEMBER and key.channel is not None and key.user is not None:
            peer.remote_member_left(key.channel, key.user)
        elif key.kind is LeaveKind.USER and key.user is not None:
            peer.remote_user_left(key.user)


class Recovery:
    """The outage state machine of one node (see the module's theory)."""

    def __init__(
        self,
        rejoin: Callable[[], Awaitable[None]],
        is_outage: Callable[[BaseException], bool],
        failures: tuple[type[BaseException], ...],
        label: str,
        engine: str,
        where: str,
        limit: int,
        describe: Callable[[BaseException], str] = str,
    ) -> None:
        self._rejoin = rejoin
        self._is_outage = is_outage
        self._describe = describe
        """The engine's text of a failure for the outage log line (it may add what to do)."""
        self.failures = failures
        self._retry: tuple[type[BaseException], ...] = (*failures, Busy)
        self.label = label
        """Who logs ("redis adapter"), the engine ("Redis") and where it is, for log lines."""
        self.engine = engine
        self.where = where
        self.healthy = False
        self.losses = 0
        """How many times the engine was found unreachable; a rebuild during which this
        changed does not count."""
        self._task: asyncio.Task[None] | None = None
        self._gate = asyncio.Semaphore(limit)
        self.in_flight = 0
        self._settled = asyncio.Event()
        """Cleared while the rebuild transaction is on its way (see the theory)."""
        self._settled.set()
        self._nudged = asyncio.Event()
        """Set when the engine looks reachable again: the next rebuild goes at once."""

    @property
    def recovering(self) -> bool:
        return self._task is not None

    def failed(self, exc: BaseException) -> None:
        """A call failed: an outage if the engine is out of reach, else just logged."""
        if self._is_outage(exc):
            self.lost(exc)
        else:
            log.error("%s: a %s command failed: %r", self.label, self.engine, exc)

    def moved(self, why: str) -> None:
        """The engine was replaced under the node (a failover to a replica, which may lack
        the last writes): rebuild the node's state on it, exactly as after an outage."""
        log.warning("%s: %s; rebuilding this node's state there", self.label, why)
        self._lose()
        self.nudge()

    def nudge(self) -> None:
        """The engine looks reachable again (the bus resubscribed, a new master was
        named): a rebuild waiting out its backoff starts now."""
        if self._task is not None:
            self._nudged.set()

    def lost(self, exc: BaseException) -> None:
        if self.healthy or self._task is None:
            log.error(
                "%s: %s at %s is unreachable (%s); serving local clients only until it is back",
                self.label,
                self.engine,
                self.where,
                self._describe(exc),
            )
        self._lose()

    def _lose(self) -> None:
        self.losses += 1
        self.healthy = False
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._recover())

    async def _recover(self) -> None:
        """Retry, with backoff, until one rebuild completes with no loss during it."""
        delay = 0.25
        try:
            while True:
                try:
                    await asyncio.wait_for(self._nudged.wait(), delay)
                    delay = 0.25
                except TimeoutError:
                    delay = min(10.0, delay * 2)
                self._nudged.clear()
                losses = self.losses
                try:
                    await self._rejoin()
                except self._retry as exc:
                    log.debug("%s: still cut off from %s (%r)", self.label, self.engine, exc)
                    continue
                except Exception:  # a bug must not leave the node cut off for good
                    self.healthy = False
                    log.exception("%s: re-joining the cluster failed; retrying", self.label)
                    continue
                if losses != self.losses:  # lost again meanwhile: the rebuild may be partial
                    self.healthy = False
                    continue
                log.warning("%s: %s is back; this node's state rebuilt", self.label, self.engine)
                return
        finally:
            self._task = None

    async def wait_idle(self) -> None:
        """Until the calls sent before the loss have landed (the rebuild goes after them)."""
        while self.in_flight:
            await asyncio.sleep(0.05)

    @contextlib.contextmanager
    def rebuilding(self) -> Iterator[None]:
        """Around sending the rebuild transaction, entered right after the node's state was
        read: the node is healthy again, and calls made from now on wait for the exit."""
        self._settled.clear()
        self.healthy = True
        try:
            yield
        except BaseException:
            self.healthy = False
            raise
        finally:
            self._settled.set()

    async def safely(self, call: Callable[[], Awaitable[T]], fallback: Callable[[], T]) -> T:
        """Run an engine call; while the engine is away, answer from local knowledge."""
        if self.healthy:
            if not self._settled.is_set():
                await self._settled.wait()
            async with self._gate:
                if self.healthy:
                    self.in_flight += 1
                    try:
                        return await call()
                    except self.failures as exc:
                        self.failed(exc)
                    finally:
                        self.in_flight -= 1
        return fallback()

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
