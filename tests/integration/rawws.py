"""A deliberately small blocking WebSocket client for exact wire checks.

It does nothing on its own: no automatic pong, no close reply, no JSON decoding unless
asked. Tests use it to send malformed or unusual frames and to read exactly what the server
wrote, close codes included.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import socket
import struct
import time
from typing import Any

from tests.wsframes import client_frame

OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0, 1, 2, 8, 9, 10


class Closed(Exception):
    def __init__(self, code: int | None, reason: str) -> None:
        super().__init__(f"closed with {code}: {reason}")
        self.code = code
        self.reason = reason


class RawWebSocket:
    def __init__(
        self,
        port: int,
        path: str,
        host: str = "127.0.0.1",
        timeout: float = 5,
        headers: dict[str, str] | None = None,
    ) -> None:
        self.sock = socket.create_connection((host, port), timeout=timeout)
        key = base64.b64encode(os.urandom(16)).decode()
        extra = "".join(f"{name}: {value}\r\n" for name, value in (headers or {}).items())
        request = (
            f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
            f"{extra}\r\n"
        )
        self.sock.sendall(request.encode())
        self.buffer = b""
        while b"\r\n\r\n" not in self.buffer:
            chunk = self.sock.recv(4096)
            if not chunk:
                raise ConnectionError("closed during handshake: " + self.buffer.decode())
            self.buffer += chunk
        head, self.buffer = self.buffer.split(b"\r\n\r\n", 1)
        self.status_line = head.split(b"\r\n", 1)[0].decode()
        if " 101 " not in self.status_line:
            raise ConnectionError(head.decode())

    def send_frame(self, opcode: int, payload: bytes, fin: bool = True, mask: bool = True) -> None:
        self.sock.sendall(self.frame(opcode, payload, fin, mask))

    @staticmethod
    def frame(opcode: int, payload: bytes, fin: bool = True, mask: bool = True) -> bytes:
        """One client frame, as bytes (to send many in one write)."""
        return client_frame(opcode, payload, fin, mask)

    def send_text(self, text: str | bytes) -> None:
        self.send_frame(OP_TEXT, text.encode() if isinstance(text, str) else text)

    def send_json(self, value: Any) -> None:
        self.send_text(json.dumps(value))

    def _read(self, n: int, deadline: float) -> bytes:
        while len(self.buffer) < n:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError("no frame from the server in time")
            self.sock.settimeout(remaining)
            chunk = self.sock.recv(65536)
            if not chunk:
                raise Closed(None, "TCP connection closed without a close frame")
            self.buffer += chunk
        data, self.buffer = self.buffer[:n], self.buffer[n:]
        return data

    def recv_frame(self, timeout: float = 5) -> tuple[int, bytes]:
        deadline = time.monotonic() + timeout
        b0, b1 = self._read(2, deadline)
        if b1 & 0x80:
            raise AssertionError("server frames must not be masked")
        n = b1 & 0x7F
        if n == 126:
            n = struct.unpack("!H", self._read(2, deadline))[0]
        elif n == 127:
            n = struct.unpack("!Q", self._read(8, deadline))[0]
        return b0 & 0x0F, self._read(n, deadline)

    def recv(self, timeout: float = 5) -> dict[str, Any]:
        """The next text message as JSON; a close frame raises `Closed`."""
        while True:
            opcode, payload = self.recv_frame(timeout)
            if opcode == OP_TEXT:
                value: dict[str, Any] = json.loads(payload)
                return value
            if opcode == OP_CLOSE:
                code = struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else None
                raise Closed(code, payload[2:].decode())

    def expect_close(self, timeout: float = 5) -> Closed:
        """Read until the server closes; return the close (code and reason)."""
        try:
            while True:
                self.recv(timeout)
        except Closed as closed:
            return closed

    def recv_event(self, event: str, timeout: float = 5) -> dict[str, Any]:
        """Skip messages until one named `event` arrives."""
        deadline = time.monotonic() + timeout
        while True:
            message = self.recv(max(0.01, deadline - time.monotonic()))
            if message.get("event") == event:
                return message

    def assert_silent(self, seconds: float = 0.3) -> None:
        try:
            message = self.recv(seconds)
        except TimeoutError:
            return
        raise AssertionError(f"expected nothing, got {message}")

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()
