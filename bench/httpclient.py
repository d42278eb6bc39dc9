"""A minimal HTTP/1.1 keep-alive client on raw asyncio streams, and the signed trigger call.

One `KeepAliveConnection` sends one request at a time over one TCP connection and reconnects
when the server closes it. It understands Content-Length and chunked responses, which is all
Pusher-compatible servers send. Every step has a timeout. A trigger is signed with the
secret's keyed HMAC state copied per request, and its query is built from a template: the
generator's cost per request is what caps the request rates it can measure.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import time
from urllib.parse import quote

from bench import protocol, signing
from bench.protocol import host_for_url

MAX_RESPONSE_BYTES = 1024 * 1024


class HTTPError(Exception):
    """The response could not be read."""


class KeepAliveConnection:
    """One persistent HTTP connection, as an `asyncio.Protocol`.

    The load generator's own cost per request caps what it can measure (it runs on one
    core), so a request costs one `write`, one future and the parse of the answer: no
    stream reader, no Task per request (`asyncio.wait_for` made one), and a single timer per
    connection that checks the deadline of the request in flight.
    """

    def __init__(self, host: str, port: int, timeout: float = 10.0) -> None:
        self.host = host
        self.port = port
        self.timeout = timeout
        self.host_header = f"{host_for_url(host)}:{port}"
        self._protocol: _ResponseReader | None = None
        self.connects = 0

    async def open(self) -> None:
        loop = asyncio.get_running_loop()
        _, protocol = await asyncio.wait_for(
            loop.create_connection(lambda: _ResponseReader(self.timeout), self.host, self.port),
            self.timeout,
        )
        self._protocol = protocol
        self.connects += 1

    async def request(
        self, method: str, target: str, body: bytes = b"", content_type: str = "application/json"
    ) -> tuple[int, bytes]:
        """Send one request; returns (status, body). Raises OSError/HTTPError/TimeoutError."""
        if self._protocol is None or self._protocol.closed:
            await self.open()
        protocol = self._protocol
        assert protocol is not None
        head = (
            f"{method} {target} HTTP/1.1\r\nHost: {self.host_header}\r\n"
            f"Content-Type: {content_type}\r\nContent-Length: {len(body)}\r\n"
            "Connection: keep-alive\r\n\r\n"
        ).encode()
        try:
            status, payload, keep = await protocol.send(head + body)
        except BaseException:
            self.close()
            raise
        if not keep:
            self.close()
        return status, payload

    def close(self) -> None:
        if self._protocol is not None:
            self._protocol.abort()
        self._protocol = None


class _ResponseReader(asyncio.Protocol):
    """Reads the answers of one connection: Content-Length, chunked, or until the close."""

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.waiter: asyncio.Future[tuple[int, bytes, bool]] | None = None
        self.deadline = 0.0
        self.timer: asyncio.TimerHandle | None = None
        self.closed = False
        self.eof = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def send(self, data: bytes) -> asyncio.Future[tuple[int, bytes, bool]]:
        assert self.transport is not None and self.waiter is None
        loop = asyncio.get_running_loop()
        self.waiter = waiter = loop.create_future()
        self.deadline = loop.time() + self.timeout
        if self.timer is None:
            self.timer = loop.call_at(self.deadline, self._check_deadline)
        self.transport.write(data)
        return waiter

    def _check_deadline(self) -> None:
        """One timer per connection: re-armed for the request in flight, if any."""
        self.timer = None
        if self.waiter is None:
            return
        loop = asyncio.get_running_loop()
        if loop.time() < self.deadline:
            self.timer = loop.call_at(self.deadline, self._check_deadline)
            return
        self._fail(TimeoutError("no response in time"))
        self.abort()

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if len(self.buffer) > MAX_RESPONSE_BYTES + 65_536:
            self._fail(HTTPError("response too large"))
            self.abort()
            return
        self._answer()

    def eof_received(self) -> bool | None:
        self.eof = True
        self._answer()
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.eof = True
        self._answer()
        self._fail(HTTPError("connection closed before a response"))
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def abort(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.abort()

    def _fail(self, exc: BaseException) -> None:
        waiter, self.waiter = self.waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_exception(exc)

    def _answer(self) -> None:
        """Resolve the waiter once the buffer holds a whole response."""
        if self.waiter is None:
            return
        try:
            parsed = _parse_response(self.buffer, self.eof)
        except HTTPError as exc:
            self._fail(exc)
            self.abort()
            return
        if parsed is None:
            return
        (status, body, keep), used = parsed
        del self.buffer[:used]
        waiter, self.waiter = self.waiter, None
        if not waiter.done():
            waiter.set_result((status, body, keep))


def _parse_response(buffer: bytearray, eof: bool) -> tuple[tuple[int, bytes, bool], int] | None:
    """((status, body, keep-alive), bytes used) for the response at the start of `buffer`,
    or None while it is incomplete."""
    end = buffer.find(b"\r\n\r\n")
    if end < 0:
        if len(buffer) > 65_536:
            raise HTTPError("response head too large")
        if eof:
            raise HTTPError("connection closed before a response")
        return None
    head = bytes(buffer[:end]).lower()
    if (
        head.startswith(b"http/1.1 ")
        and b"\r\ntransfer-encoding:" not in head
        and head.count(b"\r\ncontent-length:") == 1
        and head[9:12].isdigit()
    ):  # the usual answer, read without splitting the head into headers
        at = head.index(b"\r\ncontent-length:") + 17
        line_end = head.find(b"\r\n", at)
        length = int(head[at:] if line_end < 0 else head[at:line_end])
        if length > MAX_RESPONSE_BYTES:
            raise HTTPError(f"response body of {length} bytes")
        start = end + 4
        if len(buffer) - start < length:
            if eof:
                raise HTTPError("connection closed before the end of the body")
            return None
        keep = b"\r\nconnection: close" not in head
        return (int(head[9:12]), bytes(buffer[start : start + length]), keep), start + length
    lines = bytes(buffer[:end]).decode("latin-1").split("\r\n")
    parts = lines[0].split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not parts[1].isdigit():
        raise HTTPError(f"bad status line {lines[0]!r}")
    status = int(parts[1])
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if sep:
            headers[name.strip().lower()] = value.strip()
    keep = headers.get("connection", "").lower() != "close" and parts[0] != "HTTP/1.0"
    start = end + 4
    if "chunked" in headers.get("transfer-encoding", "").lower():
        chunked = _parse_chunked(buffer, start)
        if chunked is None:
            if eof:
                raise HTTPError("connection closed in a chunked response")
            return None
        body, used = chunked
        return (status, body, keep), used
    if "content-length" in headers:
        length = int(headers["content-length"])
        if length > MAX_RESPONSE_BYTES:
            raise HTTPError(f"response body of {length} bytes")
        if len(buffer) - start < length:
            if eof:
                raise HTTPError("connection closed before the end of the body")
            return None
        return (status, bytes(buffer[start : start + length]), keep), start + length
    if status in (204, 304) or 100 <= status < 200:
        return (status, b"", keep), start
    if not eof:  # the body ends with the connection
        return None
    return (status, bytes(buffer[start:]), False), len(buffer)


def _parse_chunked(buffer: bytearray, at: int) -> tuple[bytes, int] | None:
    body = bytearray()
    while True:
        line_end = buffer.find(b"\r\n", at)
        if line_end < 0:
            return None
        size = int(bytes(buffer[at:line_end]).split(b";", 1)[0].strip() or b"0", 16)
        at = line_end + 2
        if size == 0:
            trailer_end = buffer.find(b"\r\n", at)
            if trailer_end < 0:
                return None
            return bytes(body), trailer_end + 2
        if len(body) + size > MAX_RESPONSE_BYTES:
            raise HTTPError("chunked response too large")
        if len(buffer) < at + size + 2:
            return None
        body += buffer[at : at + size]
        at += size + 2


class Trigger:
    """Signed `POST /apps/{id}/events` over one keep-alive connection."""

    def __init__(
        self, host: str, port: int, app_id: str, key: str, secret: str, timeout: float = 10.0
    ) -> None:
        self.conn = KeepAliveConnection(host, port, timeout)
        self.path = signing.events_path(app_id)
        self.key = key
        self.secret = secret
        # What `signing.signed_path` computes, with the parts that do not change per request
        # made once (tests/bench/test_signing.py checks that both give the same target).
        self._mac = hmac.new(secret.encode(), digestmod=hashlib.sha256)
        self._signed_prefix = f"POST\n{self.path}\nauth_key={key}&auth_timestamp="
        self._target_prefix = f"{self.path}?auth_key={quote(key, safe='')}&auth_timestamp="

    def target(self, body: bytes, timestamp: int) -> str:
        """The signed request target of a trigger with this body."""
        tail = f"{timestamp}&auth_version=1.0&body_md5={hashlib.md5(body).hexdigest()}"
        mac = self._mac.copy()
        mac.update((self._signed_prefix + tail).encode())
        return f"{self._target_prefix}{tail}&auth_signature={mac.hexdigest()}"

    async def send(self, channels: list[str], event: str, data: str) -> tuple[int, bytes]:
        body = protocol.trigger_body(event, channels, data).encode()
        return await self.conn.request("POST", self.target(body, int(time.time())), body)

    def close(self) -> None:
        self.conn.close()
