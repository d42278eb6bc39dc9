"""Write corking and backpressure, in one place.

Writes are corked per loop iteration (uWS-style): `send` queues a frame in the connection's
`out` and registers the connection with the `WriteBatcher` once; the batcher's single
`call_soon` callback flushes every pending connection with one `transport.write` each.
`out` holds the first frame of an iteration as it is (a broadcast is mostly one frame per
recipient: no list is built for it) and becomes a list from the second frame on.

Backpressure: asyncio calls `pause_writing` once the transport holds more than
`HIGH_WATER` unsent bytes. From then on every flush checks the buffer; above the configured
`write_buffer_cap` the connection is a slow consumer and `slow_consumer()` closes it (4100),
because it could not read an error message anyway.

Invariants:
- `send` never writes or closes synchronously, so a broadcast loop may call it on any
  subscriber (and a subscriber may close meanwhile).
- A connection is in the batcher's list at most once per iteration (`out` is None until
  its first frame of the iteration).
- A flush is scheduled exactly while the batcher's list is not empty (`flush` takes the
  list before it writes), so `send` needs no other flag.
- Nothing is queued once `closing` is set.
"""

from __future__ import annotations

import asyncio

from pyserver.protocol.websocket import Deflater

HIGH_WATER = 65_536
"""Bytes the transport may buffer before asyncio calls `pause_writing`."""


class WriteBatcher:
    """Flushes every connection that queued frames, once per loop iteration."""

    __slots__ = ("loop", "pending")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.pending: list[CorkedWriter] = []

    def add(self, connection: CorkedWriter) -> None:
        pending = self.pending
        if not pending:
            self.loop.call_soon(self.flush)
        pending.append(connection)

    def flush(self) -> None:
        pending, self.pending = self.pending, []
        for connection in pending:  # CorkedWriter.flush, inlined: once per recipient
            out = connection.out
            if out is None:
                continue  # flushed meanwhile (a close)
            connection.out = None
            transport = connection.transport
            transport.write(out if isinstance(out, bytes) else b"".join(out))
            if connection.paused and transport.get_write_buffer_size() > connection.write_cap:
                connection.slow_consumer()


class CorkedWriter(asyncio.Protocol):
    """The write side of a WebSocket connection: corked frames and the slow-consumer cap."""

    __slots__ = ("batcher", "closing", "deflater", "out", "paused", "transport", "write_cap")

    def __init__(
        self,
        transport: asyncio.Transport,
        batcher: WriteBatcher,
        cap: int,
        deflater: Deflater | None,
    ) -> None:
        self.transport = transport
        self.batcher = batcher
        self.write_cap = cap
        self.deflater = deflater
        """The server's shared Deflater when this connection negotiated permessage-deflate
        (it compresses each broadcast once for every such connection), else None."""
        self.out: bytes | list[bytes] | None = None
        """The frames queued this iteration: None, the first one, or a list of them."""
        self.paused = False
        self.closing = False

    def send(self, frame: bytes) -> None:
        """Queue one complete WebSocket frame; the batcher writes it this iteration."""
        if self.deflater is not None:
            frame = self.deflater.frame(frame)
        out = self.out
        if out is None:
            if not self.closing:
                self.out = frame
                pending = self.batcher.pending  # WriteBatcher.add, inlined (the fan-out's)
                if not pending:
                    self.batcher.loop.call_soon(self.batcher.flush)
                pending.append(self)
        elif isinstance(out, bytes):
            self.out = [out, frame]
        else:
            out.append(frame)

    def flush(self) -> None:
        """Write what is queued now (before a close frame); the batcher does the same."""
        out = self.out
        if out is None:
            return
        self.out = None
        transport = self.transport
        transport.write(out if isinstance(out, bytes) else b"".join(out))
        if self.paused and transport.get_write_buffer_size() > self.write_cap:
            self.slow_consumer()

    def slow_consumer(self) -> None:
        """The peer does not read: drop what waits and close (the subclass says how)."""
        raise NotImplementedError

    def pause_writing(self) -> None:
        self.paused = True

    def resume_writing(self) -> None:
        self.paused = False
