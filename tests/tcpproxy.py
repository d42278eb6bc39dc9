"""A loopback TCP proxy for tests, pure asyncio, that can go silent like a phone that lost its
network: `freeze()` stops reading and forwarding in both directions without sending a FIN or
a RST, so each side's socket stays open and the peer notices nothing until its own timeouts.

While frozen, the proxy's kernel still acknowledges what fits in its receive buffers (as
nginx or any user-space proxy does while it is not reading), which is exactly what makes the
sender's view of "acknowledged" differ from "received by the client". `receive_buffer` sets
SO_RCVBUF of the proxy's upstream socket (0: the kernel's default and autotuning).
"""

from __future__ import annotations

import asyncio
import fcntl
import socket
import struct
import termios


def queued_in(sock: socket.socket) -> int:
    """Bytes waiting in `sock`'s receive queue (SIOCINQ / FIONREAD)."""
    return int(struct.unpack("i", fcntl.ioctl(sock.fileno(), termios.FIONREAD, b"\0" * 4))[0])


def unacknowledged(sock: socket.socket) -> int:
    """Bytes sent on `sock` that the peer's kernel has not acknowledged (SIOCOUTQ)."""
    return int(struct.unpack("i", fcntl.ioctl(sock.fileno(), termios.TIOCOUTQ, b"\0" * 4))[0])


class _Pipe(asyncio.Protocol):
    def __init__(self, proxy: TcpProxy) -> None:
        self.proxy = proxy
        self.transport: asyncio.Transport | None = None
        self.peer: _Pipe | None = None
        self.pending = bytearray()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.proxy.pipes.append(self)
        if self.proxy.frozen:
            transport.pause_reading()

    def data_received(self, data: bytes) -> None:
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.write(data)
        else:
            self.pending += data

    def connection_lost(self, exc: Exception | None) -> None:
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.close()


class TcpProxy:
    """Listens on a free loopback port and forwards every connection to `target_port`."""

    def __init__(self, target_port: int, receive_buffer: int = 0) -> None:
        self.target_port = target_port
        self.receive_buffer = receive_buffer
        self.frozen = False
        self.pipes: list[_Pipe] = []
        self.upstream_sockets: list[socket.socket] = []
        self._server: asyncio.Server | None = None
        self.port = 0

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(self._accept_factory, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    def _accept_factory(self) -> _Pipe:
        downstream = _Pipe(self)
        asyncio.get_running_loop().create_task(self._connect_upstream(downstream))
        return downstream

    async def _connect_upstream(self, downstream: _Pipe) -> None:
        loop = asyncio.get_running_loop()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if self.receive_buffer:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, self.receive_buffer)
        sock.setblocking(False)
        await loop.sock_connect(sock, ("127.0.0.1", self.target_port))
        self.upstream_sockets.append(sock)
        _, upstream = await loop.create_connection(lambda: _Pipe(self), sock=sock)
        upstream.peer, downstream.peer = downstream, upstream
        if downstream.pending and upstream.transport is not None:
            upstream.transport.write(bytes(downstream.pending))
            downstream.pending.clear()

    def freeze(self) -> None:
        """Stop reading both ways; no FIN, no RST: the connections just go quiet."""
        self.frozen = True
        for pipe in self.pipes:
            if pipe.transport is not None:
                pipe.transport.pause_reading()

    def thaw(self) -> None:
        self.frozen = False
        for pipe in self.pipes:
            if pipe.transport is not None:
                pipe.transport.resume_reading()

    async def close(self) -> None:
        for pipe in self.pipes:
            if pipe.transport is not None:
                pipe.transport.abort()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
