"""A WebSocket client connection on a raw non-blocking socket, timed by the kernel.

asyncio and uvloop transports read with `recv`, which drops the kernel's receive timestamp.
`RawWSConnection` reads with `recvmsg_into` from a callback registered with
`loop.add_reader` (uvloop and the default loop alike), so each read comes with the time the
kernel queued its bytes (`bench.rxclock`), and that time, on the run's clock, is what
`on_message` gets: latency then measures the server, not how long this process took to get
round to reading. Reads without a timestamp fall back to the read time.

Writes (handshake, subscribe, pongs, close) are small: `send` at once, and what the kernel
does not take is queued and written when the socket is writable (`add_writer`); above
`HIGH_WATER` queued bytes `send()` waits for the queue to drain.

Invariants: one read per readiness callback, into one buffer shared by every connection of
the process (`WSCore.data_received` copies what it keeps before returning); the reader and
writer are removed before the socket is closed; `connection_lost` runs once, from the loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket

from bench.rxclock import ANCILLARY_SIZE, OFFSET, SCM_TIMESTAMPNS, TIMESPEC
from bench.wscore import Gate, MessageHandler, WSCore

READ_SIZE = 256 * 1024
HIGH_WATER = 64 * 1024
LOW_WATER = 16 * 1024

_BUFFER = bytearray(READ_SIZE)
_BUFFERS = [_BUFFER]
_VIEW = memoryview(_BUFFER)
_UNPACK = TIMESPEC.unpack
_SOL_SOCKET = socket.SOL_SOCKET


class RawWSConnection(WSCore):
    """A connection on `sock` (connected, non-blocking, SO_TIMESTAMPNS set)."""

    def __init__(
        self,
        sock: socket.socket,
        host_header: str,
        path: str,
        on_message: MessageHandler,
        gate: Gate | None = None,
    ) -> None:
        super().__init__(host_header, path, on_message, gate)
        self.sock = sock
        self._fd = sock.fileno()
        self._loop = asyncio.get_running_loop()
        self._recvmsg_into = sock.recvmsg_into
        self._out = bytearray()
        self._closing_requested = False
        self._closed = False

    def start(self) -> None:
        """Start reading and send the opening handshake."""
        self._loop.add_reader(self._fd, self._on_readable)
        self._write(self.request_bytes())

    # --- reading -----------------------------------------------------------------------------

    def _on_readable(self) -> None:
        try:
            size, ancdata, _flags, _address = self._recvmsg_into(_BUFFERS, ANCILLARY_SIZE)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self._lose(exc)
            return
        if not size:
            self._lose(None)
            return
        now = None
        if ancdata:
            level, kind, timespec = ancdata[0]
            if kind == SCM_TIMESTAMPNS and level == _SOL_SOCKET:
                seconds, nanoseconds = _UNPACK(timespec)
                realtime = seconds * 1_000_000_000 + nanoseconds
                now = realtime - OFFSET.ns
                if now < OFFSET.since:  # stamped before the wall clock's latest step
                    now = OFFSET.to_run_clock(realtime)
        self.data_received(_VIEW[:size], now)

    # --- writing -----------------------------------------------------------------------------

    def _write(self, data: bytes) -> None:
        if self._closing_requested:
            return
        if self._out:
            self._out += data
            if not self._paused and len(self._out) > HIGH_WATER:
                self.pause_writing()
            return
        try:
            sent = self.sock.send(data)
        except (BlockingIOError, InterruptedError):
            sent = 0
        except OSError as exc:
            self._lose(exc)
            return
        if sent < len(data):
            self._out += memoryview(data)[sent:]
            self._loop.add_writer(self._fd, self._on_writable)
            if len(self._out) > HIGH_WATER:
                self.pause_writing()

    def _on_writable(self) -> None:
        try:
            sent = self.sock.send(self._out)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self._lose(exc)
            return
        del self._out[:sent]
        if self._out:
            if self._paused and len(self._out) <= LOW_WATER:
                self.resume_writing()
            return
        self._loop.remove_writer(self._fd)
        if self._paused:
            self.resume_writing()
        if self._closing_requested:
            self._lose(None)

    # --- closing -----------------------------------------------------------------------------

    def _closing(self) -> bool:
        return self._closing_requested

    def _close_transport(self) -> None:
        self._closing_requested = True
        if not self._out:
            self._lose(None)

    def abort(self) -> None:
        self._lose(None)

    def _lose(self, exc: Exception | None) -> None:
        if self._closed:
            return
        self._closed = self._closing_requested = True
        self._out.clear()
        loop = self._loop
        if not loop.is_closed():
            loop.remove_reader(self._fd)
            loop.remove_writer(self._fd)
        self.sock.close()
        with contextlib.suppress(RuntimeError):  # loop closed: nobody is waiting any more
            loop.call_soon(self.connection_lost, exc)
