"""RFC 6455 framing for the server side, sans-I/O: bytes in, messages out; frames as bytes.

We keep `websockets` for what it does best (the C `apply_mask`) and own the small remainder:
one `FrameReader` per connection costs a few slots instead of a full `ServerProtocol`
(about 3.7 KB each, see `docs/performance.md`), and server frames are plain bytes so one frame
can be written to every subscriber of a broadcast.

Invariants:
- Client frames must be masked; server frames never are.
- `FrameReader.feed` returns complete messages only: data messages reassembled from their
  fragments, control frames (ping, pong, close) as they come, in order.
- A message larger than `max_size` is refused from its header, before it is buffered.
- Protocol violations raise `WebSocketError` carrying the close code to send (1002, 1009).
- permessage-deflate (RFC 7692) is only ever negotiated without context takeover in either
  direction, so every compressed message stands alone: a broadcast is compressed once and
  the same bytes go to every compressing subscriber (`Deflater`), and no per-connection zlib
  state is kept between messages.
"""

from __future__ import annotations

import base64
import hashlib
import struct
import zlib

try:
    from websockets.speedups import apply_mask
except ImportError:  # pragma: no cover - websockets always ships it on CPython wheels

    def apply_mask(data: bytes | bytearray | memoryview, mask: bytes | bytearray) -> bytes:
        n = len(data)
        key = (bytes(mask) * (n // 4 + 1))[:n]
        return (int.from_bytes(data, "big") ^ int.from_bytes(key, "big")).to_bytes(n, "big")


OP_CONTINUATION = 0x0
OP_TEXT = 0x1
OP_BINARY = 0x2
OP_CLOSE = 0x8
OP_PING = 0x9
OP_PONG = 0xA

CLOSE_NORMAL = 1000
CLOSE_PROTOCOL_ERROR = 1002
CLOSE_UNSUPPORTED_DATA = 1003
CLOSE_TOO_BIG = 1009
MAX_FRAGMENTS = 1_024
"""Frames one message may be split into (their sizes are capped together separately)."""

_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
_pack_16 = struct.Struct("!BBH").pack
_pack_64 = struct.Struct("!BBQ").pack


DEFLATE_RESPONSE = "permessage-deflate; server_no_context_takeover; client_no_context_takeover"
"""The only permessage-deflate agreement we make (no context takeover either way)."""
_DEFLATE_TAIL = b"\x00\x00\xff\xff"


def offers_deflate(extensions_header: str) -> bool:
    """Whether a `Sec-WebSocket-Extensions` request header offers permessage-deflate."""
    return any(
        offer.split(";", 1)[0].strip().lower() == "permessage-deflate"
        for offer in extensions_header.split(",")
    )


class Deflater:
    """Compresses server text frames; remembers the last one, since a broadcast hands the
    same frame object to every subscriber in a row."""

    __slots__ = ("_last_in", "_last_out")

    def __init__(self) -> None:
        self._last_in = b""
        self._last_out = b""

    def frame(self, frame: bytes) -> bytes:
        """The compressed form of an unmasked, unfragmented text frame (others unchanged)."""
        if frame is self._last_in:
            return self._last_out
        if frame[0] != 0x80 | OP_TEXT:
            return frame
        length = frame[1]
        start = 2 if length < 126 else 4 if length == 126 else 10
        compressor = zlib.compressobj(zlib.Z_DEFAULT_COMPRESSION, zlib.DEFLATED, -15)
        body = compressor.compress(frame[start:]) + compressor.flush(zlib.Z_SYNC_FLUSH)
        out = encode_frame(OP_TEXT, body[:-4] if body.endswith(_DEFLATE_TAIL) else body)
        out = bytes((out[0] | 0x40,)) + out[1:]  # RSV1: this message is compressed
        self._last_in, self._last_out = frame, out
        return out


def inflate(payload: bytes, max_size: int) -> bytes:
    """Decompress one client message sent without context takeover."""
    decompressor = zlib.decompressobj(-15)
    try:
        data = decompressor.decompress(payload + _DEFLATE_TAIL, max_size + 1)
    except zlib.error as exc:
        raise WebSocketError(CLOSE_PROTOCOL_ERROR, f"Bad compressed message: {exc}") from None
    if len(data) > max_size:
        raise WebSocketError(CLOSE_TOO_BIG, f"Message larger than {max_size} bytes")
    return data


class WebSocketError(Exception):
    """The peer broke RFC 6455; `close_code` is what to close with."""

    def __init__(self, close_code: int, reason: str) -> None:
        super().__init__(reason)
        self.close_code = close_code
        self.reason = reason


def accept_key(client_key: str) -> str:
    """The `Sec-WebSocket-Accept` value for a `Sec-WebSocket-Key`."""
    return base64.b64encode(hashlib.sha1(client_key.encode() + _GUID).digest()).decode()


def encode_frame(opcode: int, payload: bytes) -> bytes:
    """One unfragmented, unmasked server frame."""
    n = len(payload)
    first = 0x80 | opcode
    if n < 126:
        return bytes((first, n)) + payload
    if n < 65536:
        return _pack_16(first, 126, n) + payload
    return _pack_64(first, 127, n) + payload


def text_frame(payload: bytes) -> bytes:
    """`encode_frame(OP_TEXT, payload)` without the extra call (every relayed client event
    and every broadcast is framed here)."""
    n = len(payload)
    if n < 126:
        return bytes((0x81, n)) + payload
    if n < 65536:
        return _pack_16(0x81, 126, n) + payload
    return _pack_64(0x81, 127, n) + payload


def close_frame(code: int, reason: str = "") -> bytes:
    """A close frame; the reason is cut to the 123 bytes a control frame allows, on a
    character boundary (a reason that is not valid UTF-8 fails the close for the client)."""
    body = struct.pack("!H", code) + reason.encode()[:123].decode(errors="ignore").encode()
    return encode_frame(OP_CLOSE, body)


def close_code_allowed(code: int) -> bool:
    """Whether a peer may send `code` in a close frame (RFC 6455 7.4; else answer 1002)."""
    return 1000 <= code <= 1003 or 1007 <= code <= 1014 or 3000 <= code <= 4999


def parse_close(payload: bytes) -> tuple[int | None, str]:
    """The code and reason of a close frame's payload (no code when the payload is empty)."""
    if len(payload) < 2:
        return None, ""
    return struct.unpack("!H", payload[:2])[0], payload[2:].decode(errors="replace")


class FrameReader:
    """Incremental reader of client frames. Feed it bytes; it returns finished messages."""

    __slots__ = (
        "_buffer",
        "_compressed",
        "_fragment_opcode",
        "_fragment_size",
        "_fragments",
        "deflate",
        "max_size",
    )

    def __init__(self, max_size: int, deflate: bool = False) -> None:
        self.max_size = max_size
        self.deflate = deflate
        """permessage-deflate was agreed: RSV1 marks a compressed message."""
        self._compressed = False
        self._buffer = b""
        self._fragments: list[bytes] | None = None
        self._fragment_opcode = 0
        self._fragment_size = 0

    def lone_empty_pong(self, data: bytes) -> bool:
        """`data` is exactly one masked empty pong (an idle client's answer to a ping) and
        nothing is buffered before it: `feed(data)` would return `[(OP_PONG, b"")]`."""
        return len(data) == 6 and data[0] == 0x8A and data[1] == 0x80 and not self._buffer

    def feed(self, data: bytes) -> list[tuple[int, bytes]]:
        """Return the complete messages in `data` plus what was buffered, as (opcode, payload)."""
        buf = self._buffer + data if self._buffer else data
        size = len(buf)
        pos = 0
        out: list[tuple[int, bytes]] = []
        while size - pos >= 2:
            b0 = buf[pos]
            b1 = buf[pos + 1]
            if b0 & 0x70 and (b0 & 0x70 != 0x40 or not self.deflate):
                raise WebSocketError(CLOSE_PROTOCOL_ERROR, "Reserved bits must be 0")
            if not b1 & 0x80:
                raise WebSocketError(CLOSE_PROTOCOL_ERROR, "Client frames must be masked")
            opcode = b0 & 0x0F
            length = b1 & 0x7F
            header = 2
            if length == 126:
                if size - pos < 4:
                    break
                length = int.from_bytes(buf[pos + 2 : pos + 4], "big")
                header = 4
            elif length == 127:
                if size - pos < 10:
                    break
                length = int.from_bytes(buf[pos + 2 : pos + 10], "big")
                header = 10
            if opcode >= OP_CLOSE:
                if opcode > OP_PONG:
                    raise WebSocketError(CLOSE_PROTOCOL_ERROR, f"Unknown opcode {opcode}")
                if length > 125 or not b0 & 0x80:
                    raise WebSocketError(CLOSE_PROTOCOL_ERROR, "Invalid control frame")
            elif length + self._fragment_size > self.max_size:
                raise WebSocketError(CLOSE_TOO_BIG, f"Message larger than {self.max_size} bytes")
            start = pos + header + 4
            end = start + length
            if end > size:
                break
            payload = apply_mask(buf[start:end], buf[start - 4 : start])
            pos = end
            if opcode >= OP_CLOSE:
                if b0 & 0x40:
                    raise WebSocketError(CLOSE_PROTOCOL_ERROR, "Control frames are not compressed")
                out.append((opcode, payload))
            elif b0 == 0x81 and self._fragments is None:  # the usual: one whole text frame
                out.append((OP_TEXT, payload))
            else:
                if b0 & 0x40:
                    if opcode == OP_CONTINUATION:
                        raise WebSocketError(CLOSE_PROTOCOL_ERROR, "RSV1 on a continuation")
                    self._compressed = True
                before = len(out)
                self._data_frame(bool(b0 & 0x80), opcode, payload, out)
                if len(out) > before and self._compressed:
                    done_opcode, data = out[-1]
                    out[-1] = (done_opcode, inflate(data, self.max_size))
                    self._compressed = False
        self._buffer = buf[pos:] if pos < size else b""
        return out

    def _data_frame(
        self, fin: bool, opcode: int, payload: bytes, out: list[tuple[int, bytes]]
    ) -> None:
        fragments = self._fragments
        if opcode == OP_CONTINUATION:
            if fragments is None:
                raise WebSocketError(CLOSE_PROTOCOL_ERROR, "Unexpected continuation frame")
            if len(fragments) >= MAX_FRAGMENTS:  # empty fragments would grow memory for ever
                raise WebSocketError(CLOSE_TOO_BIG, f"Message in more than {MAX_FRAGMENTS} frames")
            fragments.append(payload)
            self._fragment_size += len(payload)
            if fin:
                out.append((self._fragment_opcode, b"".join(fragments)))
                self._fragments = None
                self._fragment_size = 0
        elif opcode in (OP_TEXT, OP_BINARY):
            if fragments is not None:
                raise WebSocketError(CLOSE_PROTOCOL_ERROR, "Expected a continuation frame")
            if fin:
                out.append((opcode, payload))
            else:
                self._fragments = [payload]
                self._fragment_opcode = opcode
                self._fragment_size = len(payload)
        else:
            raise WebSocketError(CLOSE_PROTOCOL_ERROR, f"Unknown opcode {opcode}")
