"""A minimal HTTP/1.1 keep-alive client on raw asyncio streams, and the signed trigger call.

One `KeepAliveConnection` sends one request at a time over one TCP connection and reconnects
when the server closes it. It understands Content-Length and chunked responses, which is all
Pusher-compatible servers send. Every step has a timeout.
"""

from __future__ import annotations

import asyncio
import time

from bench import protocol, signing
from bench.protocol import host_for_url

MAX_RESPONSE_BYTES = 1024 * 1024


class HTTPError(Exception):
    """The response could not be read."""


class KeepAliveConnection:
    """One persistent HTTP connection."""

    def __init__(self, host: str, port: int, timeout: float = 10.0) -> None:
        self.host = host
        self.port = port
        self.timeout = timeout
        self.host_header = f"{host_for_url(host)}:{port}"
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self.connects = 0

    async def open(self) -> None:
        self._reader, self._writer = await asyncio.wait_for(
            asyncio.open_connection(self.host, self.port), self.timeout
        )
        self.connects += 1

    async def request(
        self, method: str, target: str, body: bytes = b"", content_type: str = "application/json"
    ) -> tuple[int, bytes]:
        """Send one request; returns (status, body). Raises OSError/HTTPError/TimeoutError."""
        if self._writer is None or self._writer.is_closing():
            await self.open()
        assert self._reader is not None and self._writer is not None
        head = (
            f"{method} {target} HTTP/1.1\r\nHost: {self.host_header}\r\n"
            f"Content-Type: {content_type}\r\nContent-Length: {len(body)}\r\n"
            "Connection: keep-alive\r\n\r\n"
        ).encode()
        try:
            self._writer.write(head + body)
            status, payload, keep = await asyncio.wait_for(self._read_response(), self.timeout)
        except BaseException:
            self.close()
            raise
        if not keep:
            self.close()
        return status, payload

    async def _read_response(self) -> tuple[int, bytes, bool]:
        assert self._reader is not None
        reader = self._reader
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError as exc:
            raise HTTPError("connection closed before a response") from exc
        except asyncio.LimitOverrunError as exc:
            raise HTTPError("response head too large") from exc
        lines = head.decode("latin-1").split("\r\n")
        parts = lines[0].split(" ", 2)
        if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not parts[1].isdigit():
            raise HTTPError(f"bad status line {lines[0]!r}")
        status = int(parts[1])
        headers: dict[str, str] = {}
        for line in lines[1:]:
            if ":" in line:
                name, value = line.split(":", 1)
                headers[name.strip().lower()] = value.strip()
        keep = headers.get("connection", "").lower() != "close" and parts[0] != "HTTP/1.0"
        if "chunked" in headers.get("transfer-encoding", "").lower():
            return status, await self._read_chunked(reader), keep
        if "content-length" in headers:
            length = int(headers["content-length"])
            if length > MAX_RESPONSE_BYTES:
                raise HTTPError(f"response body of {length} bytes")
            return status, await reader.readexactly(length), keep
        if status in (204, 304) or 100 <= status < 200:
            return status, b"", keep
        return status, await reader.read(MAX_RESPONSE_BYTES), False

    async def _read_chunked(self, reader: asyncio.StreamReader) -> bytes:
        body = bytearray()
        while True:
            size_line = await reader.readuntil(b"\r\n")
            size = int(size_line.split(b";", 1)[0].strip() or b"0", 16)
            if size == 0:
                await reader.readuntil(b"\r\n")
                return bytes(body)
            if len(body) + size > MAX_RESPONSE_BYTES:
                raise HTTPError("chunked response too large")
            body += await reader.readexactly(size)
            await reader.readexactly(2)

    def close(self) -> None:
        if self._writer is not None:
            self._writer.transport.abort()
        self._writer = None
        self._reader = None


class Trigger:
    """Signed `POST /apps/{id}/events` over one keep-alive connection."""

    def __init__(
        self, host: str, port: int, app_id: str, key: str, secret: str, timeout: float = 10.0
    ) -> None:
        self.conn = KeepAliveConnection(host, port, timeout)
        self.path = signing.events_path(app_id)
        self.key = key
        self.secret = secret

    async def send(self, channels: list[str], event: str, data: str) -> tuple[int, bytes]:
        body = protocol.trigger_body(event, channels, data)
        target = signing.signed_path(
            "POST", self.path, self.key, self.secret, int(time.time()), body
        )
        return await self.conn.request("POST", target, body.encode())

    def close(self) -> None:
        self.conn.close()
