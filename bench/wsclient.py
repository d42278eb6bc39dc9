"""A lean WebSocket client connection on an asyncio Protocol.

Messages are handed to a callback straight from `data_received`, with the time they were
read: no per-message task, queue or future, so one process can take in many more messages
per second than with a general-purpose library. Pings are answered, fragmented messages
reassembled, close frames echoed. Plain `ws://` only.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Callable
from typing import cast
from urllib.parse import urlsplit

from bench import wsframes
from bench.clock import now_ns
from bench.wsframes import FrameError

MessageHandler = Callable[[bytes, int], None]
"""(payload of a text or binary message, time read in ns)"""
MAX_HEAD = 16 * 1024
USER_AGENT = "pusher-bench"
IP_BIND_ADDRESS_NO_PORT = getattr(socket, "IP_BIND_ADDRESS_NO_PORT", 24)


class WebSocketClosedError(ConnectionError):
    """Sending on a connection that is closed."""


class Gate:
    """A switch shared by many connections: once closed (from any thread), incoming data is
    dropped unread, so a process flooded with backlog can stop at once."""

    __slots__ = ("open",)

    def __init__(self) -> None:
        self.open = True


class WSConnection(asyncio.Protocol):
    def __init__(
        self, host_header: str, path: str, on_message: MessageHandler, gate: Gate | None = None
    ) -> None:
        self.host_header = host_header
        self.path = path
        self.on_message = on_message
        self.gate = gate
        self.on_lost: Callable[[], None] | None = None
        self.key = wsframes.new_key()
        self.transport: asyncio.Transport | None = None
        loop = asyncio.get_running_loop()
        self.opened: asyncio.Future[None] = loop.create_future()
        self.lost: asyncio.Future[None] = loop.create_future()
        self.close_code: int | None = None
        self._head = bytearray()
        self._parser: wsframes.FrameParser | None = None
        self._fragments: list[bytes] = []
        self._close_sent = False
        self._paused = False
        self._drained: asyncio.Future[None] | None = None

    # --- asyncio.Protocol ------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        self.transport.write(
            wsframes.handshake_request(self.host_header, self.path, self.key, USER_AGENT)
        )

    def data_received(self, data: bytes) -> None:
        if self.gate is not None and not self.gate.open:
            return
        if self._parser is None:
            self._head += data
            end = self._head.find(b"\r\n\r\n")
            if end < 0:
                if len(self._head) > MAX_HEAD:
                    self._fail(FrameError("handshake response too large"))
                return
            try:
                wsframes.check_handshake_response(bytes(self._head[:end]), self.key)
            except FrameError as exc:
                self._fail(exc)
                return
            data = bytes(self._head[end + 4 :])
            self._head = bytearray()
            self._parser = wsframes.FrameParser()
            if not self.opened.done():
                self.opened.set_result(None)
            if not data:
                return
        try:
            frames = self._parser.feed(data)
        except FrameError as exc:
            self._send_close(exc.code)
            self._fail(exc)
            return
        now = now_ns()
        for frame in frames:
            opcode = frame.opcode
            if opcode in (wsframes.OP_TEXT, wsframes.OP_BINARY):
                if frame.fin:
                    self.on_message(frame.payload, now)
                else:
                    self._fragments = [frame.payload]
            elif opcode == wsframes.OP_CONT:
                self._fragments.append(frame.payload)
                if frame.fin:
                    message, self._fragments = b"".join(self._fragments), []
                    self.on_message(message, now)
            elif opcode == wsframes.OP_PING:
                self._write(wsframes.encode_frame(wsframes.OP_PONG, frame.payload))
            elif opcode == wsframes.OP_CLOSE:
                self.close_code, _reason = wsframes.parse_close(frame.payload)
                self._send_close(self.close_code or 1000)
                if self.transport is not None:
                    self.transport.close()
                return

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.opened.done():
            self.opened.set_exception(exc or ConnectionError("closed during the handshake"))
        if not self.lost.done():
            self.lost.set_result(None)
        if self._drained is not None and not self._drained.done():
            self._drained.set_result(None)
        if self.on_lost is not None:
            self.on_lost()

    def pause_writing(self) -> None:
        self._paused = True

    def resume_writing(self) -> None:
        self._paused = False
        if self._drained is not None and not self._drained.done():
            self._drained.set_result(None)

    # --- API -------------------------------------------------------------------------------

    @property
    def is_open(self) -> bool:
        return (
            self.transport is not None
            and not self.transport.is_closing()
            and (not self._close_sent)
        )

    def send_nowait(self, text: str) -> None:
        """Queue one text message (raises WebSocketClosedError when closed)."""
        if not self.is_open:
            raise WebSocketClosedError("connection closed")
        self._write(wsframes.encode_frame(wsframes.OP_TEXT, text.encode()))

    def send_nowait_many(self, texts: list[str]) -> None:
        """Queue several text messages with one write (one syscall where one each would be
        one syscall each: uvloop writes at once when its buffer is empty)."""
        if not self.is_open:
            raise WebSocketClosedError("connection closed")
        encode, op = wsframes.encode_frame, wsframes.OP_TEXT
        self._write(b"".join([encode(op, text.encode()) for text in texts]))

    async def send(self, text: str) -> None:
        """Send one text message, waiting while the transport's buffer is full."""
        self.send_nowait(text)
        if self._paused:
            self._drained = asyncio.get_running_loop().create_future()
            await self._drained

    async def close(self, timeout: float = 1.0) -> None:
        """Close handshake, bounded by `timeout`, then drop the connection."""
        if self.transport is None:
            return
        self._send_close(1000)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(self.lost), timeout)
        self.abort()

    def start_close(self) -> None:
        """Send a close frame without waiting for the answer."""
        self._send_close(1000)

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()

    # --- internals -------------------------------------------------------------------------

    def _write(self, data: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    def _send_close(self, code: int) -> None:
        if not self._close_sent:
            self._close_sent = True
            self._write(wsframes.encode_frame(wsframes.OP_CLOSE, wsframes.close_payload(code)))

    def _fail(self, exc: Exception) -> None:
        if not self.opened.done():
            self.opened.set_exception(exc)
        self.abort()


def bound_socket(source: str) -> socket.socket:
    """A non-blocking IPv4 TCP socket bound to `source` with the port left to connect()."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        with contextlib.suppress(OSError):  # Linux >= 4.2; without it bind picks the port
            sock.setsockopt(socket.IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, 1)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.bind((source, 0))
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


async def open_ws(
    url: str,
    on_message: MessageHandler,
    timeout: float,
    gate: Gate | None = None,
    source: str | None = None,
) -> WSConnection:
    """Connect and complete the opening handshake within `timeout` seconds.

    With `source` (an IPv4 address of this machine, e.g. 127.0.0.3) the connection leaves
    from that address; its port is chosen at connect time (IP_BIND_ADDRESS_NO_PORT), so each
    source address has the whole ephemeral range towards each server port.
    """
    parts = urlsplit(url)
    if parts.scheme != "ws":
        raise ValueError(f"only ws:// URLs are supported, not {parts.scheme}://")
    host = parts.hostname or "127.0.0.1"
    port = parts.port or 80
    path = parts.path + (f"?{parts.query}" if parts.query else "")
    host_header = parts.netloc
    loop = asyncio.get_running_loop()

    def factory() -> WSConnection:
        return WSConnection(host_header, path, on_message, gate)

    async def go() -> WSConnection:
        if source is None:
            _transport, conn = await loop.create_connection(factory, host, port)
        else:
            sock = bound_socket(source)
            try:
                await loop.sock_connect(sock, (host, port))
            except BaseException:
                sock.close()
                raise
            _transport, conn = await loop.create_connection(factory, sock=sock)
        try:
            await conn.opened
        except BaseException:
            conn.abort()
            raise
        return conn

    return await asyncio.wait_for(go(), timeout)
