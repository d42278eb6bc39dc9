"""The cluster bus codec: typed messages between nodes, as bytes, for any transport.

Pure code (no I/O, no clock): a transport (Redis pub/sub today; NATS or sharded pub/sub
tomorrow) carries the bytes `encode` returns and hands received bytes to `decode`.

Wire format, version 1 (integers big-endian):

    byte 0      VERSION (1)
    byte 1      kind: b"B" broadcast, b"T" terminate, b"K" kick, b"U" user announced
    lengths     one 4-byte length per string field of the kind, in the order of the
                dataclass (B: 4, T: 3, K: 5, U: 3); 0xFFFFFFFF marks an absent optional
                string
    strings     their UTF-8 bytes, back to back
    rest        B: the WebSocket frame, to the end of the message; U: one byte, 1 online,
                0 offline; T and K: nothing

Invariants:
- `decode(encode(m)) == m` for every message `m`; `decode` of any other bytes either
  returns a message or raises `BusDecodeError` (nothing else), so a stray or truncated
  message costs one log line, never the listener.
- A broadcast carries the already-encoded WebSocket frame: every node writes the same bytes
  to its subscribers; the frame is not escaped or parsed, and the lengths come first so
  that decoding is one `struct` unpack and a few slices (about as cheap as the JSON header
  it replaced).
- Messages are plain slotted dataclasses, not frozen ones: building a frozen dataclass
  costs four times as much, on every message received. Treat them as values.
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


class BusDecodeError(ValueError):
    """The bytes are not a bus message of this version."""


@dataclass(slots=True)
class Broadcast:
    """Write `frame` to every local subscriber of `channel` but `except_socket_id`."""

    origin: str
    app: str
    channel: str
    except_socket_id: str | None
    frame: bytes


@dataclass(slots=True)
class Terminate:
    """Close every local connection signed in as `user`."""

    origin: str
    app: str
    user: str


@dataclass(slots=True)
class Kick:
    """Remove a user's (or one socket's) subscription to `channel`."""

    origin: str
    app: str
    channel: str
    user: str | None
    socket_id: str | None


@dataclass(slots=True)
class UserAnnounced:
    """Tell local watchers that `user` came online or went offline."""

    origin: str
    app: str
    user: str
    online: bool


Message = Broadcast | Terminate | Kick | UserAnnounced

_B, _T, _K, _U = b"B", b"T", b"K", b"U"
_HEAD4 = struct.Struct(">Bc4I")
_HEAD3 = struct.Struct(">Bc3I")
_HEAD5 = struct.Struct(">Bc5I")
_LENS4 = struct.Struct(">4I")
_LENS3 = struct.Struct(">3I")
_LENS5 = struct.Struct(">5I")


def encode_broadcast(
    origin: str, app: str, channel: str, except_socket_id: str | None, frame: bytes
) -> bytes:
    """`encode(Broadcast(...))` without building the dataclass (the publish hot path)."""
    o, a, c = origin.encode(), app.encode(), channel.encode()
    if except_socket_id is None:
        head = _HEAD4.pack(VERSION, _B, len(o), len(a), len(c), _NONE)
        return b"".join((head, o, a, c, frame))
    e = except_socket_id.encode()
    head = _HEAD4.pack(VERSION, _B, len(o), len(a), len(c), len(e))
    return b"".join((head, o, a, c, e, frame))


def _fields(values: tuple[str | None, ...]) -> tuple[list[int], bytes]:
    raw = [v.encode() if v is not None else None for v in values]
    lengths = [len(r) if r is not None else _NONE for r in raw]
    return lengths, b"".join(r for r in raw if r is not None)


def encode(message: Message) -> bytes:
    if isinstance(message, Broadcast):
        return encode_broadcast(
            message.origin, message.app, message.channel, message.except_socket_id, message.frame
        )
    if isinstance(message, Terminate):
        lengths, body = _fields((message.origin, message.app, message.user))
        return _HEAD3.pack(VERSION, _T, *lengths) + body
    if isinstance(message, Kick):
        lengths, body = _fields(
            (message.origin, message.app, message.channel, message.user, message.socket_id)
        )
        return _HEAD5.pack(VERSION, _K, *lengths) + body
    lengths, body = _fields((message.origin, message.app, message.user))
    return _HEAD3.pack(VERSION, _U, *lengths) + body + (b"\x01" if message.online else b"\x00")


def _strings(data: bytes, lens: struct.Struct, required: int) -> tuple[list[str | None], int]:
    """The string fields after the kind byte, and where the rest starts."""
    pos = 2 + lens.size
    if len(data) < pos:
        raise BusDecodeError("truncated lengths")
    values: list[str | None] = []
    for i, size in enumerate(lens.unpack_from(data, 2)):
        if size == _NONE:
            if i < required:
                raise BusDecodeError("a required string is absent")
            values.append(None)
            continue
        end = pos + size
        if end > len(data):
            raise BusDecodeError("truncated string")
        try:
            values.append(data[pos:end].decode())
        except UnicodeDecodeError:
            raise BusDecodeError("a string is not UTF-8") from None
        pos = end
    return values, pos


_HEAD_SIZE = {_B[0]: _HEAD4.size, _T[0]: _HEAD3.size, _K[0]: _HEAD5.size, _U[0]: _HEAD3.size}


def sent_by(data: bytes, origin: bytes) -> bool:
    """Whether `data` is a message of this version whose origin is `origin` (UTF-8): a node
    skips its own messages without decoding them. False for anything else."""
    if len(data) < 6 or data[0] != VERSION:
        return False
    start = _HEAD_SIZE.get(data[1])
    if start is None:
        return False
    end = start + len(origin)
    return int.from_bytes(data[2:6], "big") == len(origin) and data[start:end] == origin


def decode(data: bytes) -> Message:
    """The message `data` encodes; raises `BusDecodeError` for anything else."""
    if len(data) < 2:
        raise BusDecodeError("too short")
    if data[0] != VERSION:
        raise BusDecodeError(f"bus version {data[0]}, this node speaks {VERSION}")
    kind = data[1:2]
    if kind == _B:  # the receive hot path, unrolled
        if len(data) < _HEAD4.size:
            raise BusDecodeError("truncated lengths")
        lo, la, lc, le = _LENS4.unpack_from(data, 2)
        if _NONE in (lo, la, lc):
            raise BusDecodeError("a required string is absent")
        p1 = _HEAD4.size + lo
        p2 = p1 + la
        p3 = p2 + lc
        p4 = p3 if le == _NONE else p3 + le
        if p4 > len(data):
            raise BusDecodeError("truncated string")
        try:
            return Broadcast(
                data[_HEAD4.size : p1].decode(),
                data[p1:p2].decode(),
                data[p2:p3].decode(),
                None if le == _NONE else data[p3:p4].decode(),
                data[p4:],
            )
        except UnicodeDecodeError:
            raise BusDecodeError("a string is not UTF-8") from None
    if kind == _T:
        v, pos = _strings(data, _LENS3, 3)
        if pos != len(data):
            raise BusDecodeError("trailing bytes")
        return Terminate(v[0], v[1], v[2])  # type: ignore[arg-type]
    if kind == _K:
        v, pos = _strings(data, _LENS5, 3)
        if pos != len(data):
            raise BusDecodeError("trailing bytes")
        return Kick(v[0], v[1], v[2], v[3], v[4])  # type: ignore[arg-type]
    if kind == _U:
        v, pos = _strings(data, _LENS3, 3)
        if pos + 1 != len(data) or data[pos] not in (0, 1):
            raise BusDecodeError("bad online flag")
        return UserAnnounced(v[0], v[1], v[2], data[pos] == 1)  # type: ignore[arg-type]
    raise BusDecodeError(f"unknown kind {kind!r}")
