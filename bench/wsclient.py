"""Opening WebSocket client connections, and the one that runs on an asyncio Protocol.

Messages are handed to a callback straight from the read, with the time they count as
received: no per-message task, queue or future, so one process can take in many more
messages per second than with a general-purpose library. Pings are answered, fragmented
messages reassembled, close frames echoed (`bench.wscore`). Plain `ws://` only.

`open_ws` returns, by the latency clock asked for (`bench.rxclock`):
- "kernel-receive": a `bench.rawws.RawWSConnection`, whose messages carry the time the
  kernel queued their bytes on the socket (Linux);
- "read": a `WSConnection` on an asyncio (uvloop) transport, whose messages carry the time
  this process read them.
Both have the same public surface (`bench.wscore.WSCore`).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from typing import Any, cast
from urllib.parse import urlsplit

from bench import rxclock
from bench.rawws import RawWSConnection
from bench.wscore import Gate, MessageHandler, WebSocketClosedError, WSCore

__all__ = ["Gate", "MessageHandler", "WSConnection", "WSCore", "WebSocketClosedError", "open_ws"]

IP_BIND_ADDRESS_NO_PORT = getattr(socket, "IP_BIND_ADDRESS_NO_PORT", 24)


class WSConnection(WSCore, asyncio.Protocol):
    """A connection on an asyncio transport: messages count as received when they are read."""

    def __init__(
        self, host_header: str, path: str, on_message: MessageHandler, gate: Gate | None = None
    ) -> None:
        super().__init__(host_header, path, on_message, gate)
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        self.transport.write(self.request_bytes())

    async def close(self, timeout: float = 1.0) -> None:
        if self.transport is not None:
            await super().close(timeout)

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()

    def _write(self, data: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    def _closing(self) -> bool:
        return self.transport is None or self.transport.is_closing()

    def _close_transport(self) -> None:
        if self.transport is not None:
            self.transport.close()


def plain_socket(family: int) -> socket.socket:
    """A non-blocking TCP socket of `family` with Nagle off (as asyncio's transports have)."""
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


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
    latency_clock: str = rxclock.READ,
) -> WSCore:
    """Connect and complete the opening handshake within `timeout` seconds.

    With `source` (an IPv4 address of this machine, e.g. 127.0.0.3) the connection leaves
    from that address; its port is chosen at connect time (IP_BIND_ADDRESS_NO_PORT), so each
    source address has the whole ephemeral range towards each server port.
    `latency_clock` is `rxclock.KERNEL` (only where `rxclock.supported()`) or `rxclock.READ`.
    """
    if latency_clock not in rxclock.LATENCY_CLOCKS:
        raise ValueError(f"unknown latency clock {latency_clock!r}")
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

    async def connected_socket() -> socket.socket:
        candidates: list[tuple[int, Any]]
        if source is not None:
            candidates = [(socket.AF_INET, (host, port))]
        else:
            infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
            candidates = [(family, address) for family, _t, _p, _c, address in infos]
        error: OSError = OSError(f"no address for {host}")
        for family, address in candidates:
            sock = bound_socket(source) if source is not None else plain_socket(family)
            try:
                if latency_clock == rxclock.KERNEL:
                    rxclock.enable(sock)
                await loop.sock_connect(sock, address)
            except OSError as exc:
                sock.close()
                error = exc
                continue
            except BaseException:
                sock.close()
                raise
            return sock
        raise error

    async def go() -> WSCore:
        conn: WSCore
        if latency_clock == rxclock.KERNEL:
            rxclock.OFFSET.keep_fresh(loop)
            raw = RawWSConnection(await connected_socket(), host_header, path, on_message, gate)
            raw.start()
            conn = raw
        elif source is None:
            _transport, conn = await loop.create_connection(factory, host, port)
        else:
            _transport, conn = await loop.create_connection(factory, sock=await connected_socket())
        try:
            await conn.opened
        except BaseException:
            conn.abort()
            raise
        return conn

    return await asyncio.wait_for(go(), timeout)
