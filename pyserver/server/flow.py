"""Write corking and backpressure, in one place.

Writes are corked per loop iteration (uWS-style): `send` appends a frame to the connection's
`out` list and registers the connection with the `WriteBatcher` once; the batcher's single
`call_soon` callback flushes every pending connection with one `transport.write` each.

Backpressure: asyncio calls `pause_writing` once the transport holds more than
`HIGH_WATER` unsent bytes. From then on every flush checks the buffer; above the configured
`write_buffer_cap` the connection is a slow consumer and `slow_consumer()` closes it (4100),
because it could not read an error message anyway.

Invariants:
- `send` never writes or closes synchronously, so a broadcast loop may call it on any
  subscriber (and a subscriber may close meanwhile).
- A connection is in the batcher's list at most once per iteration (`out` is None until
  its first frame of the iteration).
- Nothing is queued once `closing` is set.
"""

from __future__ import annotations

import asyncio
from typing import Protocol

from pyserver.protocol.websocket import Deflater

HIGH_WATER = 65_536
"""Bytes the transport may buffer before asyncio calls `pause_writing`."""


class Flushable(Protocol):
    def flush(self) -> None: ...


class WriteBatcher:
    """Flushes every connection that queued frames, once per loop iteration."""

    __slots__ = ("loop", "pending", "scheduled")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.pending: list[Flushable] = []
        self.scheduled = False

    def add(self, connection: Flushable) -> None:
        self.pending.append(connection)
        if not self.scheduled:
            self.scheduled = True
            self.loop.call_soon(self.flush)

    def flush(self) -> None:
        self.scheduled = False
        pending, self.pending = self.pending, []
        for connection in pending:
            connection.flush()


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
        self.out: list[bytes] | None = None
        self.paused = False
        self.closing = False

    def send(self, frame: bytes) -> None:
        """Queue one complete WebSocket frame; the batcher writes it this iteration."""
        if self.deflater is not None:
            frame = self.deflater.frame(frame)
        out = self.out
        if out is not None:
            out.append(frame)
        elif not self.closing:
            self.out = [frame]
            self.batcher.add(self)

    def flush(self) -> None:
        out = self.out
        if out is None:
            return
        self.out = None
        transport = self.transport
        transport.write(out[0] if len(out) == 1 else b"".join(out))
        if self.paused and transport.get_write_buffer_size() > self.write_cap:
            self.slow_consumer()

    def slow_consumer(self) -> None:
        """The peer does not read: drop what waits and close (the subclass says how)."""
        raise NotImplementedError

    def pause_writing(self) -> None:
        self.paused = True

    def resume_writing(self) -> None:
        self.paused = False
