"""Channel history, the sans-I/O part: which rule applies to a channel, and positions.

A position names one stored event of one channel. On the wire it is an opaque string
`<epoch>.<serial>.<stamp>`:

- `epoch`: the history store's incarnation for this channel (`[0-9a-z]`, 1-24 characters). It
  changes whenever the store starts empty (a process start for the in-memory store, lost keys
  for Redis), so a position from before is recognised instead of mis-served.
- `serial`: the event's number in the channel, length-prefixed base 36 (one base-36 digit
  giving the number of digits, then the digits), so that within one epoch the strings sort
  exactly like the numbers.
- `stamp`: the store's clock in milliseconds when it stored the event (base 36). Redis needs it
  to address the stream entry; it never takes part in the order.

Invariants:
- Only characters URL-unreserved in RFC 3986 (`[0-9a-z.]` here): the SDKs put query values into
  URLs unescaped, and this needs no escaping.
- Each position has exactly one spelling: `decode(text)` accepts only what `encode` produces
  (no leading zeros, no upper case), so equal positions are equal strings.
- Within one epoch, positions are totally ordered by `serial`, and so are their strings.
- Serial 0 means "before the first event": the head of a channel that stored nothing yet.

`RuleBook` finds a channel's rule: the first whose `channels` pattern matches the whole name
(`fnmatchcase`), cached per name in a bounded cache.

`ConnectionHistory` is one connection's part: which position each of its history
subscriptions is known to have received (confirmed by the pong to a ping written after the
events), and its resume token.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import Generic, Protocol, TypeVar

DIGITS = "0123456789abcdefghijklmnopqrstuvwxyz"
MAX_SERIAL = 2**63 - 1
"""Redis counts in signed 64-bit integers; no channel gets anywhere near it."""
MAX_STAMP = 36**12 - 1
MAX_EPOCH_LENGTH = 24

_POSITION = re.compile(r"([0-9a-z]{1,24})\.([1-9a-z])([0-9a-z]+)\.(0|[1-9a-z][0-9a-z]{0,11})")
_EPOCH = re.compile(r"[0-9a-z]{1,24}")


class BadPosition(ValueError):
    """Text that is not a position (400 at the HTTP API)."""


def base36(number: int) -> str:
    if number < 0:
        raise ValueError("negative")
    if number == 0:
        return "0"
    digits = []
    while number:
        number, digit = divmod(number, 36)
        digits.append(DIGITS[digit])
    return "".join(reversed(digits))


@dataclass(frozen=True, slots=True)
class Position:
    """One event's place in a channel's history (see the module docstring)."""

    epoch: str
    serial: int
    stamp: int = 0

    def encode(self) -> str:
        digits = base36(self.serial)
        return f"{self.epoch}.{DIGITS[len(digits)]}{digits}.{base36(self.stamp)}"

    __str__ = encode

    def follows(self, other: Position) -> bool:
        """True when `self` is later than `other` in the same epoch."""
        return self.epoch == other.epoch and self.serial > other.serial


def decode_position(text: str) -> Position:
    """The position `text` spells, or `BadPosition`."""
    match = _POSITION.fullmatch(text)
    if match is None:
        raise BadPosition("not a history position")
    epoch, length, digits, stamp = match.groups()
    if DIGITS.index(length) != len(digits) or (len(digits) > 1 and digits[0] == "0"):
        raise BadPosition("not a history position")
    serial = int(digits, 36)
    if serial > MAX_SERIAL:
        raise BadPosition("not a history position")
    return Position(epoch, serial, int(stamp, 36))


def valid_epoch(epoch: str) -> bool:
    return _EPOCH.fullmatch(epoch) is not None


def new_epoch(time_us: int, nonce: int) -> str:
    """An epoch unlikely ever to repeat: the creator's clock in microseconds and a random
    nonce (callers supply both, so this stays free of clock reads)."""
    return f"{base36(time_us)}{base36(nonce % 36**4).rjust(4, '0')}"


# --- rules -----------------------------------------------------------------------------------


class Rule(Protocol):
    @property
    def channels(self) -> str: ...


R = TypeVar("R", bound=Rule)

RULE_CACHE_SIZE = 10_000
"""Channel names whose rule is remembered; the cache starts over when it is full, so random
names cannot grow it without bound."""


class RuleBook(Generic[R]):
    """An app's history rules, in configuration order."""

    __slots__ = ("_cache", "rules")

    def __init__(self, rules: Sequence[R]) -> None:
        self.rules = tuple(rules)
        self._cache: dict[str, R | None] = {}

    def __bool__(self) -> bool:
        return bool(self.rules)

    def rule_for(self, channel: str) -> R | None:
        """The first rule whose pattern matches all of `channel`, or None (no history)."""
        try:
            return self._cache[channel]
        except KeyError:
            pass
        found = next((r for r in self.rules if fnmatchcase(channel, r.channels)), None)
        if len(self._cache) >= RULE_CACHE_SIZE:
            self._cache.clear()
        self._cache[channel] = found
        return found


# --- tagged frames --------------------------------------------------------------------------


def tag(position: Position, frame: bytes) -> bytes:
    """A WebSocket frame tagged with its history position: `b"\\0<epoch>:<serial>:<stamp>\\0"`
    then the frame (the Redis append script builds the same bytes). No WebSocket frame starts
    with a zero byte, so a tagged frame is recognised by its first byte."""
    return f"\0{position.epoch}:{position.serial}:{position.stamp}\0".encode() + frame


def untag(tagged: bytes) -> tuple[Position, bytes]:
    """The position and the WebSocket frame of a tagged frame."""
    end = tagged.index(0, 1)
    epoch, serial, stamp = tagged[1:end].split(b":")
    return Position(epoch.decode(), int(serial), int(stamp)), tagged[end + 1 :]


# --- one connection's history state (sans-I/O; kept by its PusherSession) -----------------


class Mark:
    """What one history subscription of a connection is known to have received."""

    __slots__ = ("confirmed", "probed", "written")

    def __init__(self, start: Position, written: Position | None = None) -> None:
        self.confirmed = start
        """Every event of the channel up to here reached the client: it answered a ping
        written after them (or it is where the subscription started)."""
        self.written = start if written is None else written
        """The newest event written to the subscription by its own replay (the rewind or
        catch-up and the live events held meanwhile), which the channel's newest live
        position may not cover yet. Written is not received: like a live event, it is
        confirmed only by the pong to a ping sent after it."""
        self.probed: Position | None = None
        """The newest event written before the outstanding ping, confirmed by its pong."""


def newer(candidate: Position | None, current: Position) -> Position:
    """The later of two positions of one channel; a position of another epoch replaces the
    current one (the store started over, and nothing of the old epoch can be recovered)."""
    if candidate is None:
        return current
    if candidate.epoch != current.epoch or candidate.serial > current.serial:
        return candidate
    return current


class ConnectionHistory:
    """Per connection of an app with history rules: the recovery marks of its history
    subscriptions, the ping probe that confirms them, and its resume token.

    "Delivered" means the position at the client's last sign of life: a WebSocket ping is
    written after the events; its pong proves, TCP delivering in order, that the client read
    everything written before it (docs/history.md, "What counts as delivered").
    """

    __slots__ = ("marks", "probe", "probe_ticks", "resume", "resume_failed", "token", "unanswered")

    def __init__(self, token: str) -> None:
        self.token = token
        """This connection's resume token (sent in `pusher_internal:resume_token`)."""
        self.marks: dict[str, Mark] = {}
        """History channel → its mark, for joined subscriptions."""
        self.probe = 0
        """Number of the newest ping probe sent (its payload); 0 before the first."""
        self.probe_ticks = 0
        self.unanswered = False
        """The newest probe is still waiting for its pong: the client may be gone."""
        self.resume: dict[str, Position] | None = None
        """Positions a `pusher:resume` handed over: channel → where catch-up starts."""
        self.resume_failed = 0
        """Sweep ticks left during which history subscribes are told `pusher:recovery_failed`
        (reason `window`): a `pusher:resume` named an unknown or expired token, and the
        re-subscribes that follow it cannot be recovered."""

    def track(self, channel: str, start: Position, written: Position | None = None) -> None:
        """A subscription joined the fan-out. `start`: what it is known to have received
        (where its catch-up started, or the head it subscribed at); `written`: the newest
        event its replay wrote, confirmed by the next answered ping like any live event."""
        self.marks[channel] = Mark(start, written)

    def untrack(self, channel: str) -> None:
        self.marks.pop(channel, None)

    def probe_due(self, ping_after: int) -> bool:
        """One sweep tick: whether a probe ping is due even though the client is active (a
        client that talks all the time is never pinged for idleness)."""
        if not self.marks:
            return False
        self.probe_ticks += 1
        if self.probe_ticks < ping_after:
            return False
        self.probe_ticks = 0
        return True

    def start_probe(self, latest: Callable[[str], Position | None]) -> bytes:
        """A ping goes out now: note, per subscription, the newest event written before it
        (`latest(channel)`). Returns the ping's payload, which the pong must echo."""
        self.probe += 1
        self.probe_ticks = 0
        self.unanswered = True
        for channel, mark in self.marks.items():
            mark.probed = newer(latest(channel), mark.written)
        return str(self.probe).encode()

    def ponged(self, payload: bytes) -> bool:
        """A pong arrived: if it answers the newest probe, its positions are confirmed (True;
        at most once per probe, so at most once per ping interval)."""
        if not self.unanswered or payload != str(self.probe).encode():
            return False
        self.unanswered = False
        for mark in self.marks.values():
            if mark.probed is not None:
                mark.confirmed = mark.written = mark.probed
                mark.probed = None
        return True

    def delivered(self) -> dict[str, Position]:
        """channel → the last position the client is known to have received."""
        return {channel: mark.confirmed for channel, mark in self.marks.items()}
