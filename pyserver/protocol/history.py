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
"""

from __future__ import annotations

import re
from collections.abc import Sequence
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
