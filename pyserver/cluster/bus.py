"""The cluster bus codec: typed messages between nodes, as bytes, for any transport.

Pure code (no I/O, no clock): a transport (Redis pub/sub today; NATS or sharded pub/sub
tomorrow) carries the bytes `encode` returns and hands received bytes to `decode`.

Wire format, version 1 (all integers big-endian):

    byte 0      VERSION (1)
    byte 1      kind: b"B" broadcast, b"T" terminate, b"K" kick, b"U" user announced
    fields      in the order of the dataclass; a string is a 4-byte length then UTF-8,
                an absent optional string is the length 0xFFFFFFFF with no bytes;
                `online` is one byte, 0 or 1
    rest        only `Broadcast`: the WebSocket frame, to the end of the message

Invariants:
- `decode(encode(m)) == m` for every message `m`; `decode` of any other bytes either
  returns a message or raises `BusDecodeError` (nothing else), so a stray or truncated
  message costs one log line, never the listener.
- A broadcast carries the already-encoded WebSocket frame: every node writes the same bytes
  to its subscribers, and encoding it costs one concatenation (the frame is not copied
  into a JSON string, escaped or parsed).
- `origin` is the sending node's id: a node ignores its own messages (it ran them locally
  before publishing).
- A message of another version is refused (`BusDecodeError`): nodes of two bus versions do
  not share one cluster (see docs/scaling.md on upgrades).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

VERSION = 1
_NONE = 0xFFFFFFFF
_LEN = struct.Struct(">I")


class BusDecodeError(ValueError):
    """The bytes are not a bus message of this version."""


@dataclass(frozen=True, slots=True)
class Broadcast:
    """Write `frame` to every local subscriber of `channel` but `except_socket_id`."""

    origin: str
    app: str
    channel: str
    except_socket_id: str | None
    frame: bytes


@dataclass(frozen=True, slots=True)
class Terminate:
    """Close every local connection signed in as `user`."""

    origin: str
    app: str
    user: str


@dataclass(frozen=True, slots=True)
class Kick:
    """Remove a user's (or one socket's) subscription to `channel`."""

    origin: str
    app: str
    channel: str
    user: str | None
    socket_id: str | None


@dataclass(frozen=True, slots=True)
class UserAnnounced:
    """Tell local watchers that `user` came online or went offline."""

    origin: str
    app: str
    user: str
    online: bool


Message = Broadcast | Terminate | Kick | UserAnnounced

_B, _T, _K, _U = b"B", b"T", b"K", b"U"
_HEAD = {Broadcast: _B, Terminate: _T, Kick: _K, UserAnnounced: _U}
_V = bytes([VERSION])


def _s(value: str) -> bytes:
    raw = value.encode()
    return _LEN.pack(len(raw)) + raw


def _o(value: str | None) -> bytes:
    return _LEN.pack(_NONE) if value is None else _s(value)


def encode_broadcast(
    origin: str, app: str, channel: str, except_socket_id: str | None, frame: bytes
) -> bytes:
    """`encode(Broadcast(...))` without building the dataclass (the publish hot path)."""
    return b"".join((_V, _B, _s(origin), _s(app), _s(channel), _o(except_socket_id), frame))


def encode(message: Message) -> bytes:
    if isinstance(message, Broadcast):
        return encode_broadcast(
            message.origin, message.app, message.channel, message.except_socket_id, message.frame
        )
    head = _V + _HEAD[type(message)] + _s(message.origin) + _s(message.app)
    if isinstance(message, Terminate):
        return head + _s(message.user)
    if isinstance(message, Kick):
        return head + _s(message.channel) + _o(message.user) + _o(message.socket_id)
    return head + _s(message.user) + (b"\x01" if message.online else b"\x00")


class _Reader:
    __slots__ = ("data", "pos")

    def __init__(self, data: bytes, pos: int) -> None:
        self.data = data
        self.pos = pos

    def optional(self) -> str | None:
        end = self.pos + 4
        if end > len(self.data):
            raise BusDecodeError("truncated length")
        (size,) = _LEN.unpack_from(self.data, self.pos)
        if size == _NONE:
            self.pos = end
            return None
        stop = end + size
        if stop > len(self.data):
            raise BusDecodeError("truncated string")
        self.pos = stop
        try:
            return self.data[end:stop].decode()
        except UnicodeDecodeError:
            raise BusDecodeError("a string is not UTF-8") from None

    def string(self) -> str:
        value = self.optional()
        if value is None:
            raise BusDecodeError("a required string is absent")
        return value

    def end(self) -> None:
        if self.pos != len(self.data):
            raise BusDecodeError("trailing bytes")


def decode(data: bytes) -> Message:
    """The message `data` encodes; raises `BusDecodeError` for anything else."""
    if len(data) < 2:
        raise BusDecodeError("too short")
    if data[0] != VERSION:
        raise BusDecodeError(f"bus version {data[0]}, this node speaks {VERSION}")
    kind = data[1:2]
    r = _Reader(data, 2)
    origin, app = r.string(), r.string()
    if kind == _B:
        channel, except_socket_id = r.string(), r.optional()
        return Broadcast(origin, app, channel, except_socket_id, bytes(data[r.pos :]))
    if kind == _T:
        user = r.string()
        r.end()
        return Terminate(origin, app, user)
    if kind == _K:
        channel, user_or_none, socket_id = r.string(), r.optional(), r.optional()
        r.end()
        return Kick(origin, app, channel, user_or_none, socket_id)
    if kind == _U:
        user = r.string()
        if r.pos + 1 != len(data) or data[r.pos] not in (0, 1):
            raise BusDecodeError("bad online flag")
        return UserAnnounced(origin, app, user, data[r.pos] == 1)
    raise BusDecodeError(f"unknown kind {kind!r}")
