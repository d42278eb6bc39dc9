"""The WebSocket client logic shared by both connection classes, without any I/O of its own.

`WSCore` owns the opening handshake's answer, frame dispatch (messages to `on_message` with
the time they count as received, pings answered, fragments reassembled, close frames
echoed), the close state and the public API (`opened`/`lost` futures, `send_nowait`,
`send`, `close`, `abort`, `is_open`, `close_code`, `on_lost`). A subclass supplies the
transport: `_write`, `_closing`, `_close_transport` and `abort`, and calls
`data_received(data, now)` for every read and `connection_lost(exc)` once at the end.

Invariants: `data_received` never keeps a reference to `data` past its return (callers may
pass a view of a reused buffer); `lost` is resolved and `on_lost` called exactly once.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

from bench import wsframes
from bench.clock import now_ns
from bench.wsframes import FrameError

MessageHandler = Callable[[bytes, int], None]
"""(payload of a text or binary message, time received in ns on `bench.clock`)"""
MAX_HEAD = 16 * 1024
USER_AGENT = "pusher-bench"


class WebSocketClosedError(ConnectionError):
    """Sending on a connection that is closed."""


class Gate:
    """A switch shared by many connections: once closed (from any thread), incoming data is
    dropped unread, so a process flooded with backlog can stop at once."""

    __slots__ = ("open",)

    def __init__(self) -> None:
        self.open = True


class WSCore:
    """Client side of one WebSocket connection, transport left to the subclass."""

    def __init__(
        self, host_header: str, path: str, on_message: MessageHandler, gate: Gate | None = None
    ) -> None:
        self.host_header = host_header
        self.path = path
        self.on_message = on_message
        self.gate = gate
        self.on_lost: Callable[[], None] | None = None
        self.key = wsframes.new_key()
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

    # --- what the subclass provides ----------------------------------------------------------

    def _write(self, data: bytes) -> None:
        """Send `data` (or queue it), unless the connection is closing."""
        raise NotImplementedError

    def _closing(self) -> bool:
        """True once the transport is closing or closed."""
        raise NotImplementedError

    def _close_transport(self) -> None:
        """Close once what is queued is written; `connection_lost` follows."""
        raise NotImplementedError

    def abort(self) -> None:
        """Drop the connection at once; `connection_lost` follows."""
        raise NotImplementedError

    # --- events from the subclass ------------------------------------------------------------

    def request_bytes(self) -> bytes:
        """The opening handshake, to be written first."""
        return wsframes.handshake_request(self.host_header, self.path, self.key, USER_AGENT)

    def data_received(self, data: bytes | memoryview, now: int | None = None) -> None:
        """Bytes read from the server; `now` is when they count as received (None: now)."""
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
        if now is None:
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
                self._close_transport()
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

    # --- API ---------------------------------------------------------------------------------

    @property
    def is_open(self) -> bool:
        return not self._closing() and not self._close_sent

    def send_nowait(self, text: str) -> None:
        """Queue one text message (raises WebSocketClosedError when closed)."""
        if not self.is_open:
            raise WebSocketClosedError("connection closed")
        self._write(wsframes.encode_frame(wsframes.OP_TEXT, text.encode()))

    def send_nowait_many(self, texts: list[str]) -> None:
        """Queue several text messages with one write (one syscall where one each would be
        one syscall each: the message goes out at once when nothing is queued)."""
        if not self.is_open:
            raise WebSocketClosedError("connection closed")
        encode, op = wsframes.encode_frame, wsframes.OP_TEXT
        self._write(b"".join([encode(op, text.encode()) for text in texts]))

    async def send(self, text: str) -> None:
        """Send one text message, waiting while the outgoing buffer is full."""
        self.send_nowait(text)
        if self._paused:
            self._drained = asyncio.get_running_loop().create_future()
            await self._drained

    async def close(self, timeout: float = 1.0) -> None:
        """Close handshake, bounded by `timeout`, then drop the connection."""
        self._send_close(1000)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(self.lost), timeout)
        self.abort()

    def start_close(self) -> None:
        """Send a close frame without waiting for the answer."""
        self._send_close(1000)

    # --- internals ---------------------------------------------------------------------------

    def _send_close(self, code: int) -> None:
        if not self._close_sent:
            self._close_sent = True
            self._write(wsframes.encode_frame(wsframes.OP_CLOSE, wsframes.close_payload(code)))

    def _fail(self, exc: Exception) -> None:
        if not self.opened.done():
            self.opened.set_exception(exc)
        self.abort()
