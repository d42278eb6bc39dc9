"""RFC 6455 framing for a WebSocket client: pure functions, no I/O.

Client frames are always masked; server frames are normally not (a masked one is unmasked
anyway). `FrameParser` turns a byte stream into complete frames; fragmented messages are
reassembled by the caller (see `bench.wsclient`).
"""

from __future__ import annotations

import base64
import hashlib
import os
from typing import NamedTuple

GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

OP_CONT = 0x0
OP_TEXT = 0x1
OP_BINARY = 0x2
OP_CLOSE = 0x8
OP_PING = 0x9
OP_PONG = 0xA


class FrameError(ValueError):
    """A frame that breaks the protocol; `code` is the close code to send."""

    def __init__(self, message: str, code: int = 1002) -> None:
        super().__init__(message)
        self.code = code


def new_key() -> str:
    """A random Sec-WebSocket-Key."""
    return base64.b64encode(os.urandom(16)).decode()


def accept_for(key: str) -> str:
    """The Sec-WebSocket-Accept a server must answer to `key`."""
    return base64.b64encode(hashlib.sha1((key + GUID).encode()).digest()).decode()


def apply_mask(data: bytes, mask: bytes) -> bytes:
    """XOR `data` with the repeating 4-byte `mask` (masking and unmasking are the same)."""
    n = len(data)
    if n == 0:
        return b""
    key = (mask * (n // 4 + 1))[:n]
    return (int.from_bytes(data, "little") ^ int.from_bytes(key, "little")).to_bytes(n, "little")


def encode_frame(opcode: int, payload: bytes, mask: bytes | None = None, fin: bool = True) -> bytes:
    """One masked client frame."""
    if mask is None:
        mask = os.urandom(4)
    n = len(payload)
    first = (0x80 if fin else 0) | opcode
    if n < 126:
        header = bytes((first, 0x80 | n))
    elif n < 65_536:
        header = bytes((first, 0x80 | 126)) + n.to_bytes(2, "big")
    else:
        header = bytes((first, 0x80 | 127)) + n.to_bytes(8, "big")
    return header + mask + apply_mask(payload, mask)


def close_payload(code: int, reason: str = "") -> bytes:
    return code.to_bytes(2, "big") + reason.encode()[:120]


def parse_close(payload: bytes) -> tuple[int | None, str]:
    """(code, reason) of a close frame's payload."""
    if len(payload) < 2:
        return None, ""
    return int.from_bytes(payload[:2], "big"), payload[2:].decode("utf-8", "replace")


class RawFrame(NamedTuple):
    fin: bool
    opcode: int
    payload: bytes


class FrameParser:
    """Accumulates bytes; `feed()` returns every frame completed so far.

    Frames are cut from the input itself when nothing was left over from the previous feed
    (the usual case: one payload copy per frame), and only an incomplete tail is kept."""

    def __init__(self, max_size: int = 4 * 1024 * 1024) -> None:
        self.buffer = bytearray()
        self.max_size = max_size

    def feed(self, data: bytes | bytearray | memoryview) -> list[RawFrame]:
        buf = self.buffer
        if buf:
            buf += data
            data = buf
        frames: list[RawFrame] = []
        with memoryview(data) as view:
            pos, end = 0, len(view)
            while end - pos >= 2:
                b0, b1 = view[pos], view[pos + 1]
                if b0 & 0x70:
                    raise FrameError("reserved bits set (no extension was negotiated)")
                length = b1 & 0x7F
                header = 2
                if length == 126:
                    if end - pos < 4:
                        break
                    length = int.from_bytes(view[pos + 2 : pos + 4], "big")
                    header = 4
                elif length == 127:
                    if end - pos < 10:
                        break
                    length = int.from_bytes(view[pos + 2 : pos + 10], "big")
                    header = 10
                if length > self.max_size:
                    raise FrameError(f"frame of {length} bytes", 1009)
                masked = b1 & 0x80
                start = pos + header + (4 if masked else 0)
                if end - start < length:
                    break
                payload = view[start : start + length].tobytes()
                if masked:
                    payload = apply_mask(payload, view[start - 4 : start].tobytes())
                frames.append(RawFrame(bool(b0 & 0x80), b0 & 0x0F, payload))
                pos = start + length
            tail = b"" if buf or pos >= end else view[pos:].tobytes()
        if buf:
            del buf[:pos]
        elif tail:
            self.buffer = bytearray(tail)
        return frames


def handshake_request(host_header: str, path: str, key: str, user_agent: str) -> bytes:
    return (
        f"GET {path} HTTP/1.1\r\nHost: {host_header}\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
        f"User-Agent: {user_agent}\r\n\r\n"
    ).encode()


def check_handshake_response(head: bytes, key: str) -> None:
    """Raise `FrameError` unless `head` (status line and headers) accepts the upgrade."""
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ", 2)
    if len(parts) < 2 or parts[1] != "101":
        raise FrameError(f"upgrade refused: {lines[0]!r}")
    headers = {}
    for line in lines[1:]:
        if ":" in line:
            name, value = line.split(":", 1)
            headers[name.strip().lower()] = value.strip()
    if headers.get("sec-websocket-accept") != accept_for(key):
        raise FrameError("bad Sec-WebSocket-Accept")
    if headers.get("sec-websocket-extensions"):
        raise FrameError("server enabled an extension that was not offered")
