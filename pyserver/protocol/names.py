"""Channel, event and user names: what is valid and what a channel prefix means.

Invariants (`spec/protocol.md` §5.1-§5.3, §6):
- Channel names use `[A-Za-z0-9_\\-=@,.;]` and are at most `MAX_CHANNEL_NAME` long; only
  `#server-to-user-<id>` may use `#`.
- Prefixes are matched with their dash, most specific first, anchored at the start.
- Only private channels can be encrypted.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass

MAX_CHANNEL_NAME = 200
"""Hosted documents 164; the official SDKs accept 200, so we accept what they send."""

MAX_EVENT_NAME = 200
MAX_USER_ID = 128
RESERVED_EVENT_PREFIXES = ("pusher:", "pusher_internal:")
"""Event names of the protocol itself (§6.2): an app triggering one would forge it."""

_NAME_CHARS = re.compile(r"[A-Za-z0-9_\-=@,.;]+")
SERVER_TO_USER_PREFIX = "#server-to-user-"


class ChannelKind(enum.Enum):
    PUBLIC = "public"
    PRIVATE = "private"
    PRESENCE = "presence"
    ENCRYPTED = "private-encrypted"
    SERVER_TO_USER = "server-to-user"


@dataclass(frozen=True, slots=True)
class ChannelType:
    """What a channel name's prefix says about it."""

    kind: ChannelKind
    cache: bool

    @property
    def needs_auth(self) -> bool:
        return self.kind in (ChannelKind.PRIVATE, ChannelKind.PRESENCE, ChannelKind.ENCRYPTED)

    @property
    def is_presence(self) -> bool:
        return self.kind is ChannelKind.PRESENCE

    @property
    def allows_client_events(self) -> bool:
        return self.kind in (ChannelKind.PRIVATE, ChannelKind.PRESENCE)


# Most specific first; each prefix carries its dash.
_PREFIXES: tuple[tuple[str, ChannelType], ...] = (
    ("private-encrypted-cache-", ChannelType(ChannelKind.ENCRYPTED, True)),
    ("private-encrypted-", ChannelType(ChannelKind.ENCRYPTED, False)),
    ("private-cache-", ChannelType(ChannelKind.PRIVATE, True)),
    ("presence-cache-", ChannelType(ChannelKind.PRESENCE, True)),
    ("cache-", ChannelType(ChannelKind.PUBLIC, True)),
    ("private-", ChannelType(ChannelKind.PRIVATE, False)),
    ("presence-", ChannelType(ChannelKind.PRESENCE, False)),
    (SERVER_TO_USER_PREFIX, ChannelType(ChannelKind.SERVER_TO_USER, False)),
)
_PUBLIC = ChannelType(ChannelKind.PUBLIC, False)
CACHE_PREFIXES = tuple(prefix for prefix, kind in _PREFIXES if kind.cache)
"""`name.startswith(CACHE_PREFIXES)` is `channel_type(name).cache`, in one call."""
CACHE_MARK = "cache-"
"""In every one of `CACHE_PREFIXES`: `CACHE_MARK in name` (an operator, no call) rules out
almost every other name before `startswith` runs over the tuple."""
RESERVED_MARK = "pusher"
"""In every one of `RESERVED_EVENT_PREFIXES`, for the same use."""


_TYPED_STARTS = ("private-", "presence-", "cache-", "#")
_PRIVATE_SUBTYPES = ("private-encrypted-", "private-cache-")
_PRIVATE = ChannelType(ChannelKind.PRIVATE, False)


def channel_type(name: str) -> ChannelType:
    """The type of a channel, from its prefix (§5.3)."""
    if not name.startswith(_TYPED_STARTS):  # most channels: one C call
        return _PUBLIC
    if name.startswith("private-") and not name.startswith(_PRIVATE_SUBTYPES):
        return _PRIVATE  # the usual typed channel: two more C calls
    for prefix, kind in _PREFIXES:
        if name.startswith(prefix):
            return kind
    return _PUBLIC


def channel_name_problem(name: object) -> str | None:
    """Why `name` is not a valid channel name, or None when it is valid."""
    if not isinstance(name, str) or not name:
        return "Channel name must be a non-empty string"
    if len(name) > MAX_CHANNEL_NAME:
        return f"Channel name is longer than {MAX_CHANNEL_NAME} characters"
    body = name
    if name.startswith(SERVER_TO_USER_PREFIX):
        body = name[len(SERVER_TO_USER_PREFIX) :]
        if not body:
            return "Server-to-user channel names need a user id"
    if _NAME_CHARS.fullmatch(body) is None:
        return "Channel name contains characters outside [A-Za-z0-9_-=@,.;]"
    return None


def user_id_problem(user_id: object) -> str | None:
    """Why `user_id` cannot identify a user (§6.3), or None."""
    if not isinstance(user_id, str) or not user_id:
        return "user id must be a non-empty string"
    if len(user_id) > MAX_USER_ID:
        return f"user id is longer than {MAX_USER_ID} characters"
    if _NAME_CHARS.fullmatch(user_id) is None:
        return "user id contains characters outside [A-Za-z0-9_-=@,.;]"
    return None


def event_name_problem(name: object) -> str | None:
    """Why `name` is not a valid event name for the HTTP API (§6.2), or None."""
    if not isinstance(name, str) or not name:
        return "Event name must be a non-empty string"
    if len(name) > MAX_EVENT_NAME:
        return f"Event name is longer than {MAX_EVENT_NAME} characters"
    if name.startswith(RESERVED_EVENT_PREFIXES):
        return "Event names starting with 'pusher:' or 'pusher_internal:' are reserved"
    return None
