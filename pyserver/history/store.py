"""The history store contract: what every store (in memory, Redis) answers, and the rules
both apply the same way.

A store keeps, per (app, channel), the newest events that have a history rule, each with its
position (`pyserver.protocol.history`), the time it was published and the payload exactly as
it was sent to subscribers (the frame's JSON), which is what a replay writes again.

Invariants every store keeps (tests/history/test_store_contract.py runs them on both):
- `append` returns only once the event is stored and visible to every reader (on every node,
  for Redis); positions of one channel increase by one per event within an epoch.
- A channel keeps at most `rule.limit` events, none older than `rule.ttl` seconds (an expired
  event is never returned, whether or not it has been purged yet).
- Readers never get part of a gap without being told: `since` either returns every stored
  event after the position (`lost is None`) or none, with the reason (`Loss`).
- `head` of a channel that stored nothing is serial 0 of its current epoch, so a subscriber
  that received nothing can still recover from where it subscribed.
- Every coroutine of a store with `completes_synchronously` finishes without suspending.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import orjson

from pyserver.config import HistoryRule
from pyserver.protocol.history import Position


class Direction(enum.Enum):
    BACKWARD = "backward"
    """Newest first (the HTTP API's default)."""
    FORWARD = "forward"
    """Oldest first."""


class Loss(enum.Enum):
    """Why part of a gap is no longer stored."""

    LIMIT = "limit"
    """More events were published since than the channel keeps."""
    TTL = "ttl"
    """Some of them expired."""
    EPOCH = "epoch"
    """The store started over (restart, lost Redis keys): the position is from before."""
    EVICTED = "evicted"
    """The node's history memory cap evicted them (in-memory store)."""


@dataclass(frozen=True, slots=True)
class StoredEvent:
    """The parts of a stored payload the HTTP API shows."""

    event: str
    data: str
    user_id: str | None


@dataclass(frozen=True, slots=True)
class Entry:
    """One stored event."""

    position: Position
    time_ms: int
    """When it was published (Unix milliseconds), as the API shows it."""
    payload: bytes
    """The frame's JSON exactly as subscribers got it: `{"event","channel","data"[,"user_id"]}`."""

    def fields(self) -> StoredEvent:
        """`event`, `data` and `user_id` read back from the payload (kept once, not twice)."""
        frame = orjson.loads(self.payload)
        data = frame.get("data", "")
        return StoredEvent(
            frame["event"],
            data if isinstance(data, str) else orjson.dumps(data).decode(),
            frame.get("user_id"),
        )


@dataclass(frozen=True, slots=True)
class Head:
    """A channel's newest position (serial 0 when nothing is stored in this epoch)."""

    position: Position

    @property
    def epoch(self) -> str:
        return self.position.epoch


@dataclass(frozen=True, slots=True)
class Replay:
    """The newest events of a channel, oldest first, and the head they end at. Live events
    after `head` are the ones a subscriber gets next."""

    head: Head
    entries: Sequence[Entry]


@dataclass(frozen=True, slots=True)
class CatchUp:
    """Everything stored after a position (oldest first), or nothing and why."""

    head: Head
    entries: Sequence[Entry]
    lost: Loss | None
    """None: `entries` is exactly every event after the position. Otherwise `entries` is
    empty and the subscriber must be told it was not recovered."""


@dataclass(frozen=True, slots=True)
class Page:
    """One page of the HTTP API, in the requested direction."""

    head: Head
    entries: Sequence[Entry]
    next: Position | None
    """Pass as `before` (backward) or `after` (forward) for the next page; None at the end."""


class OtherEpoch(Exception):
    """A position of another epoch than the channel's current one (409 at the API)."""

    def __init__(self, head: Head) -> None:
        super().__init__(f"position from another epoch; the current epoch is {head.epoch}")
        self.head = head


class PositionAhead(Exception):
    """A position of the current epoch that the channel has not reached: never issued."""

    def __init__(self, head: Head) -> None:
        super().__init__("position is newer than the channel's newest event")
        self.head = head


class HistoryStore(Protocol):
    """Where history lives: `MemoryHistoryStore` (one node) or `RedisHistoryStore` (cluster)."""

    completes_synchronously: bool

    async def append(
        self, app_id: str, channel: str, rule: HistoryRule, payload: bytes, time_ms: int
    ) -> Position:
        """Store one published event; returns its position once it is visible to readers."""

    async def head(self, app_id: str, channel: str, rule: HistoryRule) -> Head:
        """The newest position (limit 0 at the API; a new subscription's starting point)."""

    async def last(self, app_id: str, channel: str, rule: HistoryRule, count: int) -> Replay:
        """Rewind: the newest `count` events younger than `rule.ttl`, oldest first."""

    async def since(self, app_id: str, channel: str, rule: HistoryRule, after: Position) -> CatchUp:
        """Catch-up: every event after `after`, or none and the reason (never a part)."""

    async def read(
        self,
        app_id: str,
        channel: str,
        rule: HistoryRule,
        limit: int,
        direction: Direction,
        after: Position | None = None,
        before: Position | None = None,
    ) -> Page:
        """A page for the HTTP API: at most `limit` events strictly between `after` and
        `before`, newest or oldest first. Raises `OtherEpoch` or `PositionAhead` for a
        position the channel cannot have issued in its current epoch."""

    async def close(self) -> None:
        """Release connections (a store keeps nothing that must be flushed)."""


# --- rules both stores apply -------------------------------------------------------------------


def check_position(position: Position | None, head: Head) -> None:
    """Refuse a position this channel's current epoch cannot have issued."""
    if position is None:
        return
    if position.epoch != head.epoch:
        raise OtherEpoch(head)
    if position.serial > head.position.serial:
        raise PositionAhead(head)


def catch_up(
    after: Position,
    head: Head,
    alive_after: Sequence[Entry],
    rule: HistoryRule,
    evicted_through: int = 0,
) -> CatchUp:
    """The catch-up answer from what the store still holds after `after` (alive entries with a
    greater serial, oldest first): all of the gap, or nothing and why."""
    newest = head.position.serial
    if after.epoch != head.epoch or after.serial > newest:
        return CatchUp(head, (), Loss.EPOCH)
    missing = newest - after.serial
    if missing == 0:
        return CatchUp(head, (), None)
    if (
        missing <= rule.limit
        and len(alive_after) == missing
        and alive_after[0].position.serial == after.serial + 1
    ):
        return CatchUp(head, alive_after, None)
    if missing > rule.limit:
        return CatchUp(head, (), Loss.LIMIT)
    if after.serial < evicted_through:
        return CatchUp(head, (), Loss.EVICTED)
    return CatchUp(head, (), Loss.TTL)


def page(head: Head, fetched: Sequence[Entry], limit: int) -> Page:
    """A page from up to `limit + 1` entries fetched in the page's direction: the extra one
    only says that there is a next page."""
    if len(fetched) > limit:
        entries = fetched[:limit]
        return Page(head, entries, entries[-1].position if entries else None)
    return Page(head, fetched, None)
