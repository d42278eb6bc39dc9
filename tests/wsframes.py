"""The one client-side WebSocket frame encoder of the tests (RFC 6455 §5.2, client to server).

Used by the socket-free unit tests and by the raw-socket client of the integration tests.
"""

from __future__ import annotations

import os
import struct


def client_frame(
    opcode: int, payload: bytes, fin: bool = True, masked: bool = True, key: bytes | None = None
) -> bytes:
    """One frame as a client sends it: masked with a random (or the given 4-byte) key unless
    `masked` is False (which a server must refuse)."""
    first = (0x80 if fin else 0) | opcode
    n = len(payload)
    bit = 0x80 if masked else 0
    if n < 126:
        header = bytes((first, bit | n))
    elif n < 65536:
        header = struct.pack("!BBH", first, bit | 126, n)
    else:
        header = struct.pack("!BBQ", first, bit | 127, n)
    if not masked:
        return header + payload
    key = os.urandom(4) if key is None else key
    if n:
        stream = (key * (n // 4 + 1))[:n]
        payload = (int.from_bytes(payload, "big") ^ int.from_bytes(stream, "big")).to_bytes(
            n, "big"
        )
    return header + key + payload
