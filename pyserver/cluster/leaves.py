"""The leave debounce: "a page reload sends nothing", as one distributed state machine.

Theory of operation
-------------------
A *leave* is one of three cluster-wide transitions, each named by a `LeaveKey`:

- `CHANNEL` (app, channel): the channel's subscriptions went 1 → 0 (`channel_vacated`);
- `MEMBER` (app, channel, user): the user's last connection left a presence channel
  (`member_removed`);
- `USER` (app, user): the user's last signed-in connection closed (`user_offline`).

Each key moves through these states; the Adapter (one Lua script on Redis, one dict locally)
decides every step atomically, so exactly one node in the cluster sees it:

    ABSENT ──leave──▶ PENDING ──return within the marker's life──▶ ABSENT  (RETURNED)
                         │
                         ├──the debounce timer fires and takes the marker──▶ ABSENT  (webhook)
                         └──the marker expires untaken (its node died)──▶ ABSENT  (see below)

1. A leave (`Transition.LEFT`, `presence_leave`/`user_leave` returning True) sets a
   *pending-leave marker* for its key. The node that saw it starts a debounce timer of
   `leave_delay` seconds (`LeaveDebouncer`, used by the webhook dispatcher).
2. An arrival for the same key while the marker lives *takes* it and is reported as
   `Transition.RETURNED`: no arrival webhook, and the pending leave will find no marker.
   Otherwise the arrival is `ARRIVED`.
3. When the timer fires, the dispatcher `take`s the marker: True means nobody came back, so
   the leave webhook goes out; False means a return took it (or the marker store was
   unreachable: the outage rebuild reports that leave instead, once).

The marker must outlive its timer, or the timer would never find it:

- locally, `local_marker_ttl(delay) = delay + LEAVE_MARGIN`;
- on a cluster, a node may die while its timer runs. Every node journals the leaves its
  timers hold (`RedisLeaveMarkers.hold`); the survivor that reaps a dead node re-reports each
  journalled leave whose marker still lives (`orphans`), through the same path as a local
  leave, so it waits the delay again and then takes the marker. So the marker lives
  `cluster_marker_ttl = 2 * delay + dead_after + heartbeat + LEAVE_MARGIN`: the dead node's
  delay, the time until it is declared dead and reaped, then the reaper's own delay.

Which code does what:
- this module: the key, the TTL formulas, the `LeaveMarkers` interface with its local
  implementation, and `LeaveDebouncer` (the timers);
- `pyserver.cluster.redis.leaves`: the Redis implementation (the markers themselves are
  set by the state scripts in `pyserver.cluster.redis.scripts`, atomically with the leave);
- `pyserver.webhooks.dispatcher`: sends the webhook when `LeaveDebouncer` says so.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import time
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

from pyserver import tasks

log = logging.getLogger("pyserver.cluster.leaves")

LEAVE_MARGIN = 2.0
"""Seconds a pending-leave marker outlives the webhook delay, so the timer finds it."""
PURGE_MIN = 10_000
"""Local markers kept before the first purge of expired ones (amortised O(1))."""


def local_marker_ttl(delay: float) -> float:
    """Seconds a marker lives on one node: the debounce delay plus a margin."""
    return delay + LEAVE_MARGIN


def cluster_marker_ttl(delay: float, dead_after: float, heartbeat: float) -> float:
    """Seconds a marker lives on a cluster: long enough for the reaper of a node killed
    during its timer to find the marker, wait the delay itself and take it."""
    return 2 * delay + dead_after + heartbeat + LEAVE_MARGIN


class LeaveKind(enum.Enum):
    CHANNEL = "channel"
    MEMBER = "member"
    USER = "user"


@dataclass(frozen=True, slots=True)
class LeaveKey:
    """What a pending leave is about. Build it with `channel`, `member` or `user`."""

    kind: LeaveKind
    app: str
    channel: str | None = None
    user: str | None = None

    @classmethod
    def for_channel(cls, app: str, channel: str) -> LeaveKey:
        return cls(LeaveKind.CHANNEL, app, channel, None)

    @classmethod
    def for_member(cls, app: str, channel: str, user: str) -> LeaveKey:
        return cls(LeaveKind.MEMBER, app, channel, user)

    @classmethod
    def for_user(cls, app: str, user: str) -> LeaveKey:
        return cls(LeaveKind.USER, app, None, user)

    def parts(self) -> tuple[str, ...]:
        """The key as strings, kind first: ("member", app, channel, user) (stored form)."""
        rest = [p for p in (self.channel, self.user) if p is not None]
        return (self.kind.value, self.app, *rest)

    @classmethod
    def from_parts(cls, parts: list[str] | tuple[str, ...]) -> LeaveKey:
        """The inverse of `parts`; raises ValueError on anything else."""
        if len(parts) < 3 or not all(isinstance(p, str) for p in parts):
            raise ValueError(f"not a leave key: {parts!r}")
        kind = LeaveKind(parts[0])
        if kind is LeaveKind.CHANNEL and len(parts) == 3:
            return cls.for_channel(parts[1], parts[2])
        if kind is LeaveKind.MEMBER and len(parts) == 4:
            return cls.for_member(parts[1], parts[2], parts[3])
        if kind is LeaveKind.USER and len(parts) == 3:
            return cls.for_user(parts[1], parts[2])
        raise ValueError(f"not a leave key: {parts!r}")


class LeaveMarkers(ABC):
    """Where pending-leave markers live. Setting one is part of the leave transition itself
    (the Adapter's state change), so the interface is what the debounce needs afterwards."""

    @abstractmethod
    async def take(self, key: LeaveKey) -> bool:
        """Remove the marker `key`; True when it was still there (the leave stands)."""


class PurgeSchedule:
    """When to sweep a dict of expiring entries: once it has doubled since the last sweep,
    so each insert costs O(1) amortised however many expire unread (purging on every insert
    above a fixed size made a mass disconnect quadratic: 40,000 leaves took 10 s)."""

    __slots__ = ("above", "floor")

    def __init__(self, floor: int) -> None:
        self.floor = floor
        self.above = floor

    def due(self, size: int) -> bool:
        return size > self.above

    def swept(self, size: int) -> None:
        self.above = max(self.floor, 2 * size)


class LocalLeaveMarkers(LeaveMarkers):
    """Markers with an expiry in one dict: the whole cluster is this process."""

    def __init__(self, ttl: float) -> None:
        self.ttl = ttl
        self._expiry: dict[LeaveKey, float] = {}
        self._purge = PurgeSchedule(PURGE_MIN)

    def mark(self, key: LeaveKey) -> None:
        now = time.monotonic()
        self._expiry[key] = now + self.ttl
        if self._purge.due(len(self._expiry)):
            self._expiry = {k: t for k, t in self._expiry.items() if t > now}
            self._purge.swept(len(self._expiry))

    def take_now(self, key: LeaveKey) -> bool:
        expiry = self._expiry.pop(key, None)
        return expiry is not None and expiry > time.monotonic()

    async def take(self, key: LeaveKey) -> bool:
        return self.take_now(key)

    def returned(self, key: LeaveKey) -> bool:
        """An arrival for `key`: True when it cancels a pending leave (RETURNED)."""
        return self.take_now(key)


class Cancellable(Protocol):
    def cancel(self) -> None: ...


CallLater = Callable[[float, Callable[[], None]], Cancellable]
"""Run a callback after some seconds (the event loop's `call_later`; a fake clock in tests)."""


def loop_call_later(delay: float, callback: Callable[[], None]) -> Cancellable:
    return asyncio.get_running_loop().call_later(delay, callback)


class LeaveDebouncer:
    """The timers of the leaves this node saw: `leave(key, send)` calls `send()` after
    `delay` seconds if the marker is still there then. A second leave of the same key
    replaces the first timer (its marker was set again)."""

    def __init__(
        self,
        delay: float,
        take: Callable[[LeaveKey], Awaitable[bool]],
        synchronous: bool,
        call_later: CallLater = loop_call_later,
    ) -> None:
        self.delay = delay
        self._take = take
        self._synchronous = synchronous
        self._call_later = call_later
        self._timers: dict[LeaveKey, tuple[Cancellable, Callable[[], None]]] = {}
        self._asking: set[asyncio.Future[None]] = set()
        """One future per marker being taken (a distributed store answers later)."""
        self.closing = False
        """Set by `flush`: from then on a leave is decided at once, no timer would fire."""

    def __len__(self) -> int:
        return len(self._timers)

    def leave(self, key: LeaveKey, send: Callable[[], None]) -> None:
        previous = self._timers.pop(key, None)
        if previous is not None:
            previous[0].cancel()

        def fire() -> None:
            self._timers.pop(key, None)
            self._ask(key, send)

        if self.closing:
            fire()
            return
        handle = self._call_later(self.delay, fire)
        self._timers[key] = (handle, fire)

    def _ask(self, key: LeaveKey, send: Callable[[], None]) -> None:
        async def send_if_still_gone() -> None:
            if await self._take(key):
                if log.isEnabledFor(logging.DEBUG):
                    log.debug("leave %s stands after the delay: reporting it", key.parts())
                send()
            elif log.isEnabledFor(logging.DEBUG):
                log.debug("leave %s was taken back (a return): nothing sent", key.parts())

        if self._synchronous:
            tasks.run(send_if_still_gone(), True)
            return
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._asking.add(done)

        def finished() -> None:
            self._asking.discard(done)
            if not done.done():
                done.set_result(None)

        tasks.run(send_if_still_gone(), False, on_done=finished)

    async def flush(self, timeout: float) -> None:
        """Decide every pending leave now (shutting down) and wait up to `timeout` seconds
        for the marker store's answers."""
        self.closing = True
        for handle, fire in list(self._timers.values()):
            handle.cancel()
            fire()
        if self._asking and timeout > 0:
            await asyncio.wait(list(self._asking), timeout=timeout)
