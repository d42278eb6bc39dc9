"""One TCP connection: HTTP/1.1 (API and upgrade) until it becomes a Pusher WebSocket.

An `asyncio.Protocol` driven by callbacks, with no Task per connection (design rule 5).
It parses bytes (httptools, `protocol.websocket`), hands typed commands to the app
(`channels.app`), and writes frames.

Invariants:
- Writes are batched per loop iteration: `send` appends to the connection's pending list and
  the server's `WriteBatcher` flushes every pending connection once (uWS-style corking).
- `send` never closes synchronously, so a broadcast loop may call it on any subscriber.
- Once the write buffer passes the high-water mark the connection is checked after each
  flush; above `write_buffer_cap` it is closed with 4100 (slow consumer).
- A client's messages are handled in order: while a handler's coroutine runs, later messages
  wait in `backlog`.
- Errors are reported only through `report`, which sends `frames.for_error` and closes when
  the error says so.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
import typing
from collections import deque
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any

import httptools

from pyserver import tasks
from pyserver.auth.origins import origin_allowed
from pyserver.auth.protected import FORWARDING_HEADERS
from pyserver.channels.app import App
from pyserver.protocol import frames
from pyserver.protocol.commands import (
    ClientEvent,
    Ping,
    Pong,
    Signin,
    Subscribe,
    Unsubscribe,
    parse_command,
)
from pyserver.protocol.errors import (
    ApiError,
    AppDisabled,
    AppNotFound,
    BadMessage,
    ConnectionUnauthorized,
    InvalidVersionFormat,
    NoProtocolVersion,
    OriginNotAllowed,
    OverCapacity,
    OverConnectionQuota,
    PathNotFound,
    PongNotReceived,
    PusherError,
    SlowConsumer,
    UnsupportedProtocol,
)
from pyserver.protocol.members import SignedInUser
from pyserver.protocol.websocket import (
    CLOSE_NORMAL,
    CLOSE_PROTOCOL_ERROR,
    DEFLATE_RESPONSE,
    OP_BINARY,
    OP_CLOSE,
    OP_PING,
    OP_PONG,
    OP_TEXT,
    FrameReader,
    WebSocketError,
    accept_key,
    close_code_allowed,
    close_frame,
    encode_frame,
    offers_deflate,
    parse_close,
    text_frame,
)
from pyserver.server.http import Request, Response, error_response, parse_target, strip_prefix

if TYPE_CHECKING:
    from pyserver.server.server import Server

log = logging.getLogger("pyserver.connection")

MAX_HEAD_BYTES = 65_536
"""Request line and headers of one HTTP request (431 above): httptools buffers them."""
TLS_HANDSHAKE = b"\x16\x03"
"""How a TLS ClientHello starts: a client speaking wss:// or https:// to a plain port."""

PONG_MESSAGE = text_frame(frames.PONG_FRAME)
WS_PING = encode_frame(OP_PING, b"")
SUPPORTED_PROTOCOLS = range(4, 8)
CLOSE_FLUSH_SECONDS = 2.0


_KEPT_HEADERS = frozenset(
    (
        b"upgrade",
        b"connection",
        b"sec-websocket-key",
        b"sec-websocket-version",
        b"sec-websocket-extensions",
        b"authorization",
        b"origin",
        *(name.encode() for name in FORWARDING_HEADERS),
    )
)
"""The request headers anything here reads; the others are not even decoded."""


class _HttpState:
    """Per-request parsing state; dropped once the connection upgrades."""

    __slots__ = (
        "backlog",
        "body",
        "body_size",
        "busy",
        "conn",
        "head_bytes",
        "headers",
        "in_head",
        "parser",
        "url",
    )

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.parser = httptools.HttpRequestParser(self)
        self.url = b""
        self.headers: dict[str, str] = {}
        self.body: list[bytes] = []
        self.body_size = 0
        self.backlog: deque[Request] = deque()
        self.busy = False
        self.in_head = False
        """A request has begun and its headers are not complete yet."""
        self.head_bytes = 0
        """Bytes received since then (httptools buffers an unfinished header itself)."""

    # httptools callbacks
    def on_message_begin(self) -> None:
        self.in_head = True
        self.head_bytes = 0
        self.url = b""
        self.headers = {}
        self.body = []
        self.body_size = 0

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        key = name.lower()
        if key in _KEPT_HEADERS:
            text = key.decode("latin-1")
            if text in self.headers and text in FORWARDING_HEADERS:  # a chain of proxies
                self.headers[text] += ", " + value.decode("latin-1")
            else:
                self.headers[text] = value.decode("latin-1")

    def on_headers_complete(self) -> None:
        self.in_head = False

    def on_body(self, body: bytes) -> None:
        self.body_size += len(body)
        if self.body_size <= self.conn.server.settings.max_request_bytes:
            self.body.append(body)

    def on_message_complete(self) -> None:
        raw_path, query = parse_target(self.url.decode("latin-1"))
        prefix, raw_path = strip_prefix(raw_path, self.conn.server.settings.path_prefix)
        self.backlog.append(
            Request(
                method=self.parser.get_method().decode(),
                raw_path=raw_path,
                query=query,
                headers=self.headers,
                body=b"".join(self.body),
                keep_alive=self.parser.should_keep_alive(),
                peer=self.conn.peer,
                prefix=prefix,
            )
        )
        if self.body_size > self.conn.server.settings.max_request_bytes:
            self.backlog[-1].headers["x-pyserver-too-large"] = "1"


class Connection(asyncio.Protocol):
    __slots__ = (
        "active",
        "app",
        "auth_deadline",
        "backlog",
        "ce_allowance",
        "ce_stamp",
        "channels",
        "closing",
        "deflate",
        "http",
        "idle_ticks",
        "out",
        "paused",
        "peer",
        "reader",
        "server",
        "socket_id",
        "transport",
        "user",
    )

    def __init__(self, server: Server) -> None:
        self.server = server
        self.transport: asyncio.Transport | None = None
        self.http: _HttpState | None = None
        self.reader: FrameReader | None = None
        self.app: App | None = None
        self.socket_id = ""
        self.channels: dict[str, str | None] = {}
        self.user: SignedInUser | None = None
        self.out: list[bytes] | None = None
        self.backlog: deque[bytes | Callable[[], Coroutine[Any, Any, None] | None]] | None = None
        self.active = True
        self.auth_deadline = 0.0
        self.idle_ticks = 0
        self.paused = False
        self.closing = False
        self.deflate = False
        self.ce_allowance = 0.0
        self.ce_stamp = 0.0
        self.peer = ""

    # --- asyncio.Protocol ------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        tr = typing.cast(asyncio.Transport, transport)  # uvloop's is no asyncio subclass
        self.transport = tr
        peer = transport.get_extra_info("peername")
        self.peer = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else str(peer or "")
        self.http = _HttpState(self)
        tr.set_write_buffer_limits(high=65_536)
        self.server.connection_opened(self)

    def data_received(self, data: bytes) -> None:
        if self.reader is not None:
            self._websocket_data(data)
        elif self.http is not None:
            self._http_data(data)

    def eof_received(self) -> bool | None:
        return None  # close the transport

    def connection_lost(self, exc: Exception | None) -> None:
        self.closing = True
        self.out = None
        self.server.connection_closed(self)
        if self.app is not None and self.reader is not None:
            self.reader = None
            if self.backlog is None:
                self._leave_app()
            # else: a handler is still running; _handler_done leaves after it, in order

    def _leave_app(self) -> None:
        assert self.app is not None
        leaving = self.app.disconnected(self)
        self.app = None
        if leaving is not None:
            synchronous = self.server.adapter.completes_synchronously
            tasks.run(leaving, synchronous, self._handler_failed)

    def pause_writing(self) -> None:
        self.paused = True
        if self.reader is None and self.transport is not None:
            # An HTTP client sending requests without reading the answers: stop reading
            # until it catches up, so answers cannot pile up in memory.
            with contextlib.suppress(RuntimeError):  # the transport is already closing
                self.transport.pause_reading()

    def resume_writing(self) -> None:
        self.paused = False
        if self.reader is None and self.transport is not None and not self.closing:
            with contextlib.suppress(RuntimeError):
                self.transport.resume_reading()

    # --- writing ---------------------------------------------------------------------------

    def send(self, frame: bytes) -> None:
        """Queue one WebSocket frame; the batcher writes it at the end of this iteration."""
        if self.deflate:  # compressed once per broadcast by the server's shared Deflater
            frame = self.server.deflater.frame(frame)
        out = self.out
        if out is not None:
            out.append(frame)
        elif not self.closing:
            self.out = [frame]
            self.server.batcher.add(self)

    def send_message(self, payload: bytes) -> None:
        """Queue one message for this client alone (broadcasts go through the registry)."""
        frame = text_frame(payload)
        if self.app is not None:
            self.app.stats.ws_messages_sent_total += 1
            self.app.stats.socket_transmitted_bytes += len(frame)
        self.send(frame)

    def flush(self) -> None:
        out = self.out
        if out is None or self.transport is None:
            return
        self.out = None
        self.transport.write(out[0] if len(out) == 1 else b"".join(out))
        if self.paused:
            cap = self.server.settings.write_buffer_cap
            if self.transport.get_write_buffer_size() > cap:
                # It cannot read an error message: drop what waits and close with 4100.
                slow = SlowConsumer()
                log.info("socket %s: %s", self.socket_id, slow.message)
                self.close(slow.code or CLOSE_NORMAL, slow.message)

    def report(self, error: PusherError) -> None:
        """Tell the client about `error`; close the connection when the error closes."""
        if self.closing:
            return
        for message in frames.for_error(error):
            self.send_message(message)
        if error.closes:
            self.close(error.code or CLOSE_NORMAL, error.message)

    def close(self, code: int, reason: str = "") -> None:
        """Send a close frame after anything pending, then end the connection.

        A peer that does not read would keep the unsent bytes (and this connection) alive
        forever, so whatever is still unsent after `CLOSE_FLUSH_SECONDS` is dropped.
        """
        transport = self.transport
        if self.closing or transport is None:
            return
        self.flush()
        if self.closing:  # the flush found a slow consumer and closed with 4100 itself
            return
        self.closing = True
        transport.write(close_frame(code, reason))
        transport.close()
        if transport.get_write_buffer_size():
            asyncio.get_running_loop().call_later(CLOSE_FLUSH_SECONDS, _drop, transport)

    def close_http(self) -> None:
        """End an HTTP connection at shutdown: now when idle, else right after its answer."""
        if self.http is not None and not self.http.busy and self.transport is not None:
            self.closing = True
            self.transport.close()

    # --- activity (driven by the server's sweep) -------------------------------------------

    def http_tick(self, close_after: int) -> None:
        """Close an HTTP connection that sent nothing for `close_after` sweeps (an idle
        keep-alive, or a client that stopped in the middle of a request)."""
        if self.active or (self.http is not None and self.http.busy):
            self.active = False
            self.idle_ticks = 0
            return
        self.idle_ticks += 1
        if self.idle_ticks >= close_after and self.transport is not None:
            self.closing = True
            self.transport.close()

    def tick(self, ping_after: int, close_after: int, now: float) -> None:
        if self.auth_deadline and now > self.auth_deadline:
            self.report(ConnectionUnauthorized())
            return
        if self.active:
            self.active = False
            self.idle_ticks = 0
            return
        self.idle_ticks += 1
        if self.idle_ticks == ping_after:
            self.send(WS_PING)
        elif self.idle_ticks >= close_after:
            self.report(PongNotReceived())

    def take_client_event_token(self, per_second: int) -> bool:
        if per_second <= 0:
            return True
        now = time.monotonic()
        allowance = min(per_second, self.ce_allowance + (now - self.ce_stamp) * per_second)
        self.ce_stamp = now
        if allowance < 1.0:
            self.ce_allowance = allowance
            return False
        self.ce_allowance = allowance - 1.0
        return True

    # --- WebSocket -------------------------------------------------------------------------

    def _websocket_data(self, data: bytes) -> None:
        self.active = True
        reader = self.reader
        assert reader is not None
        if self.app is not None:
            self.app.stats.socket_received_bytes += len(data)
        try:
            messages = reader.feed(data)
        except WebSocketError as exc:
            self.close(exc.close_code, exc.reason)
            return
        for opcode, payload in messages:
            if self.closing:
                return
            if opcode == OP_TEXT:
                self._message(payload)
            elif opcode == OP_PING:
                self.send(encode_frame(OP_PONG, payload))
            elif opcode == OP_CLOSE:
                code, _ = parse_close(payload)
                if code is not None and not close_code_allowed(code):
                    self.close(CLOSE_PROTOCOL_ERROR, "Invalid close code")
                else:
                    self.close(code if code is not None and code < 4000 else CLOSE_NORMAL)
            elif opcode == OP_BINARY:
                self.report(BadMessage("Binary frames are not supported; send JSON text frames"))
            # OP_PONG: activity is all it means

    def _message(self, payload: bytes) -> None:
        if self.backlog is not None:
            self.backlog.append(payload)
            return
        app = self.app
        assert app is not None
        app.stats.ws_messages_received_total += 1
        try:
            command = parse_command(payload)
            kind = type(command)
            if kind is ClientEvent:
                result = app.client_event(self, command)  # type: ignore[arg-type]
            elif kind is Ping:
                self.send(PONG_MESSAGE)
                return
            elif kind is Subscribe:
                result = app.subscribe(self, command)  # type: ignore[arg-type]
            elif kind is Unsubscribe:
                result = app.unsubscribe(self, command)  # type: ignore[arg-type]
            elif kind is Signin:
                result = app.signin(self, command)  # type: ignore[arg-type]
            else:
                assert kind is Pong
                return
        except PusherError as exc:
            self.report(exc)
            return
        except Exception:  # a bug must cost one message, never the connection or the process
            log.exception("message from socket %s failed", self.socket_id)
            self.report(BadMessage("Internal error while handling this message"))
            return
        if result is not None:
            self._run(result)

    def _run(self, work: Coroutine[Any, Any, None]) -> None:
        """Run a handler's coroutine; hold this client's next messages until it is done."""
        synchronous = self.server.adapter.completes_synchronously
        if not tasks.run(work, synchronous, self._handler_failed, self._handler_done):
            self.backlog = deque()

    def _handler_failed(self, exc: BaseException) -> None:
        if isinstance(exc, PusherError):
            self.report(exc)
        else:
            log.error("handler failed for socket %s", self.socket_id, exc_info=exc)

    def _handler_done(self) -> None:
        if self.reader is None and self.app is not None:  # the connection closed meanwhile
            self.backlog = None
            self._leave_app()
            return
        backlog, self.backlog = self.backlog, None
        while backlog and self.backlog is None and not self.closing:
            item = backlog.popleft()
            if isinstance(item, bytes):
                self._message(item)
            else:
                self.run_when_idle(item)
        if backlog and self.backlog is not None:
            self.backlog.extendleft(reversed(backlog))

    def run_when_idle(self, action: Callable[[], Coroutine[Any, Any, None] | None]) -> None:
        """Run `action` as this client's next message would run (see `Client`)."""
        if self.backlog is not None:
            self.backlog.append(action)
            return
        if self.closing:
            return
        work = action()
        if work is not None:
            self._run(work)

    # --- HTTP ------------------------------------------------------------------------------

    def _http_data(self, data: bytes) -> None:
        http = self.http
        assert http is not None
        self.active = True
        if http.in_head:
            http.head_bytes += len(data)
        try:
            http.parser.feed_data(data)
        except httptools.HttpParserUpgrade as upgrade:
            self._upgrade(data[upgrade.args[0] :])
            return
        except httptools.HttpParserError:
            if data.startswith(TLS_HANDSHAKE):
                self.server.hint_tls_on_plain_port()
            self._respond(error_response(400, "Malformed HTTP request"), keep_alive=False)
            return
        if http.in_head and http.head_bytes > MAX_HEAD_BYTES:
            self._respond(
                error_response(431, f"Request line and headers over {MAX_HEAD_BYTES} bytes"),
                keep_alive=False,
            )
            return
        self._serve_http_backlog()

    def _serve_http_backlog(self) -> None:
        http = self.http
        while http is not None and http.backlog and not http.busy and not self.closing:
            request = http.backlog.popleft()
            if "x-pyserver-too-large" in request.headers:
                limit = self.server.settings.max_request_bytes
                self._respond(error_response(413, f"Body larger than {limit} bytes"), False)
                return
            result = self.server.api.handle(request)
            if isinstance(result, Response):
                self._respond(result, request.keep_alive, request)
            else:
                http.busy = True
                task = asyncio.get_running_loop().create_task(result)
                task.add_done_callback(functools.partial(self._http_done, request))

    def _http_done(self, request: Request, task: asyncio.Task[Response]) -> None:
        exc = task.exception()
        if isinstance(exc, ApiError):
            response = error_response(exc.status, exc.message)
        elif exc is not None:
            log.error("HTTP handler failed", exc_info=exc)
            response = error_response(500, "Internal server error")
        else:
            response = task.result()
        if self.http is not None:
            self.http.busy = False
        self._respond(response, request.keep_alive, request)
        self._serve_http_backlog()

    def _respond(
        self, response: Response, keep_alive: bool, request: Request | None = None
    ) -> None:
        if self.transport is None or self.closing:
            return
        keep_alive = keep_alive and not self.server.draining
        raw = response.encode(keep_alive)
        if request is not None and request.stats is not None:
            request.stats.http_transmitted_bytes += len(raw)
        self.transport.write(raw)
        if not keep_alive:
            self.closing = True
            self.transport.close()

    def _upgrade(self, rest: bytes) -> None:
        http = self.http
        assert http is not None and self.transport is not None
        request = http.backlog.pop() if http.backlog else None
        headers = request.headers if request is not None else http.headers
        query = request.query if request is not None else {}
        key = headers.get("sec-websocket-key")
        if (
            request is None
            or request.method != "GET"
            or headers.get("upgrade", "").lower() != "websocket"
            or not key
        ):
            self._respond(error_response(400, "Bad WebSocket upgrade request"), False)
            return
        if headers.get("sec-websocket-version") != "13":
            self._respond(
                Response(
                    426,
                    b'{"error":"Only WebSocket version 13 is supported","status":426}',
                    extra_headers=(("Sec-WebSocket-Version", "13"),),
                ),
                False,
            )
            return
        self.http = None
        self.peer = ""  # Capacity hook (memory): only HTTP requests read it; ~65 B a connection
        self.deflate = self.server.settings.websocket_compression and offers_deflate(
            headers.get("sec-websocket-extensions", "")
        )
        extension = (
            f"Sec-WebSocket-Extensions: {DEFLATE_RESPONSE}\r\n".encode() if self.deflate else b""
        )
        self.transport.write(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
            b"Connection: Upgrade\r\nSec-WebSocket-Accept: "
            + accept_key(key).encode()
            + b"\r\n"
            + extension
            + b"\r\n"
        )
        self.reader = FrameReader(self.server.settings.max_message_bytes, self.deflate)
        # Any other path is still upgraded, so that pusher-js reads 4005 and stops retrying
        # instead of retrying a failed handshake for ever (a wrong `wsPath`).
        key = request.path[5:] if request.path.startswith("/app/") else None
        self._open_pusher_session(key, request.raw_path, query, headers.get("origin"))
        if rest and not self.closing:
            self._websocket_data(rest)

    def _open_pusher_session(
        self, key: str | None, path: str, query: dict[str, str], origin: str | None
    ) -> None:
        app = None if key is None else self.server.apps_by_key.get(key)
        try:
            # Capacity hook (pyserver.server.capacity): accepted beyond this process's
            # descriptor budget only to be told 4100, so pusher-js retries after a while.
            if self in self.server.over_capacity:
                raise OverCapacity()
            if key is None:
                raise PathNotFound(f"No WebSocket endpoint at {path[:200]}; use /app/{{key}}")
            if app is None:
                raise AppNotFound(f"Application with key '{key[:100]}' does not exist")
            if not app.config.enabled:
                raise AppDisabled()
            if not origin_allowed(origin, app.config.allowed_origins):
                raise OriginNotAllowed(f"Origin {str(origin)[:200]!r} is not allowed for this app")
            protocol = query.get("protocol")
            if protocol is None:
                raise NoProtocolVersion()
            if not (protocol.isascii() and protocol.isdigit() and len(protocol) <= 3):
                raise InvalidVersionFormat(f"Invalid protocol version '{protocol[:20]}'")
            if int(protocol) not in SUPPORTED_PROTOCOLS:
                raise UnsupportedProtocol(
                    f"Unsupported protocol version {protocol[:20]}; supported: 4 to 7"
                )
            limit = app.config.max_connections
            if limit and len(app.clients) + app.adapter.connections_elsewhere(app.id) >= limit:
                raise OverConnectionQuota()
        except PusherError as exc:
            self.report(exc)
            return
        self.app = app
        self.socket_id = self.server.new_socket_id(app)
        app.connected(self)
        self.send_message(
            frames.connection_established(self.socket_id, self.server.settings.activity_timeout)
        )


def _drop(transport: asyncio.Transport) -> None:
    """Abort a transport whose peer never read its last bytes (no-op once it is gone)."""
    with contextlib.suppress(Exception):
        transport.abort()
