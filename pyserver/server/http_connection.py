"""One TCP connection while it speaks HTTP/1.1: the API, and the WebSocket upgrade.

An `asyncio.Protocol` driven by callbacks, with no Task per connection (design rule 5). It
parses requests with httptools, hands each to the API (`ServerState.handle_api`) in order,
and writes the answers. On a valid upgrade it writes the `101`, builds a
`WebSocketConnection`, hands it the transport with `transport.set_protocol` (as uvicorn
does) and drops out: a WebSocket connection carries no HTTP state.

Invariants:
- Requests on one connection are answered in order: while an answer is being computed
  (`busy`), later requests wait in `backlog`. Pipelined requests answered at once share one
  `write` (`corked`), flushed before anything else is written or the connection closes.
- A request line and headers over `MAX_HEAD_BYTES` get 431, a body over
  `max_request_bytes` gets 413 (the body is not kept beyond the limit).
- A client that sends requests without reading the answers is paused (reading stops) until
  it catches up, so answers cannot pile up in memory.
- A `StreamingResponse` (the console's event stream) takes the connection over: no request
  after it is served, it is never upgraded nor closed by the idle sweep, and its `stream_end`
  is called exactly once, when the connection is lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import typing
from collections import deque
from collections.abc import Callable

import httptools

from pyserver.auth.protected import FORWARDING_HEADERS
from pyserver.http import (
    Request,
    Response,
    StreamingResponse,
    StreamSink,
    error_response,
    parse_target,
    strip_prefix,
)
from pyserver.protocol.errors import ApiError
from pyserver.protocol.websocket import DEFLATE_RESPONSE, FrameReader, accept_key, offers_deflate
from pyserver.server.state import ServerState
from pyserver.server.websocket_connection import WebSocketConnection

log = logging.getLogger("pyserver.connection")
api_log = logging.getLogger("pyserver.api")

MAX_HEAD_BYTES = 65_536
"""Request line and headers of one HTTP request (431 above): httptools buffers them."""
TLS_HANDSHAKE = b"\x16\x03"
"""How a TLS ClientHello starts: a client speaking wss:// or https:// to a plain port."""
HIGH_WATER = 65_536

_KEPT_HEADERS = frozenset(
    (
        b"upgrade",
        b"connection",
        b"sec-websocket-key",
        b"sec-websocket-version",
        b"sec-websocket-extensions",
        b"authorization",
        b"origin",
        b"last-event-id",  # the console's event stream resumes from it
        *(name.encode() for name in FORWARDING_HEADERS),
    )
)
"""The request headers anything here reads; the others are not even decoded."""
_HEADER_NAMES: dict[bytes, str | None] = {}
"""Header names as clients spell them → the lower-case name when kept, else None (a cache:
most clients send the same few spellings; at most `MAX_HEADER_NAMES` are remembered)."""
MAX_HEADER_NAMES = 512
_METHODS = {m.encode(): m for m in ("GET", "POST", "PUT", "DELETE", "HEAD", "OPTIONS", "PATCH")}

_VERSION_REFUSED = Response(
    426,
    b'{"error":"Only WebSocket version 13 is supported","status":426}',
    extra_headers=(("Sec-WebSocket-Version", "13"),),
)


def _header_name(name: bytes) -> str | None:
    key = name.lower()
    text = key.decode("latin-1") if key in _KEPT_HEADERS else None
    if len(_HEADER_NAMES) < MAX_HEADER_NAMES:
        _HEADER_NAMES[name] = text
    return text


class HttpConnection(asyncio.Protocol):
    __slots__ = (
        "active",
        "backlog",
        "body",
        "body_size",
        "busy",
        "closing",
        "corked",
        "debug",
        "head_bytes",
        "headers",
        "idle_ticks",
        "in_head",
        "parser",
        "peer",
        "state",
        "stream_end",
        "transport",
        "url",
    )

    def __init__(self, state: ServerState) -> None:
        self.state = state
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpRequestParser(self)
        self.peer = ""
        self.url = b""
        self.headers: dict[str, str] = {}
        self.body: list[bytes] = []
        self.body_size = 0
        self.backlog: deque[Request] = deque()
        self.busy = False
        self.corked: list[bytes] | None = None
        """While pipelined requests are served: their answers, written together after."""
        self.in_head = False
        """A request has begun and its headers are not complete yet."""
        self.head_bytes = 0
        """Bytes received since then (httptools buffers an unfinished header itself)."""
        self.active = True
        self.idle_ticks = 0
        self.closing = False
        self.debug = False
        """`pyserver.api` logs at DEBUG (asked once per connection)."""
        self.stream_end: Callable[[], None] | None = None
        """While this connection carries a `StreamingResponse`: what to call when it ends."""

    # --- accept path -----------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        tr = typing.cast(asyncio.Transport, transport)  # uvloop's is no asyncio subclass
        self.transport = tr
        peer = transport.get_extra_info("peername")
        self.peer = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else str(peer or "")
        tr.set_write_buffer_limits(high=HIGH_WATER)
        self.debug = api_log.isEnabledFor(logging.DEBUG)
        self.state.accepted(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closing = True
        self.state.http_lost(self)
        if self.stream_end is not None:  # a streaming response ends with its connection
            stream_end, self.stream_end = self.stream_end, None
            stream_end()

    # --- asyncio.Protocol ------------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        if self.stream_end is not None:
            return  # a streaming response: what the client sends now is ignored
        self.active = True
        if self.in_head:
            self.head_bytes += len(data)
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade as upgrade:
            self._upgrade(data[upgrade.args[0] :])
            return
        except httptools.HttpParserError:
            if data.startswith(TLS_HANDSHAKE):
                self.state.hint_tls()
            self._respond(error_response(400, "Malformed HTTP request"), keep_alive=False)
            return
        if self.in_head and self.head_bytes > MAX_HEAD_BYTES:
            self._respond(
                error_response(431, f"Request line and headers over {MAX_HEAD_BYTES} bytes"),
                keep_alive=False,
            )
            return
        self._serve_backlog()

    def eof_received(self) -> bool | None:
        return None  # close the transport

    def pause_writing(self) -> None:
        # A client sending requests without reading the answers: stop reading until it
        # catches up, so answers cannot pile up in memory.
        if self.transport is not None:
            with contextlib.suppress(RuntimeError):  # the transport is already closing
                self.transport.pause_reading()

    def resume_writing(self) -> None:
        if self.transport is not None and not self.closing:
            with contextlib.suppress(RuntimeError):
                self.transport.resume_reading()

    # --- httptools callbacks ---------------------------------------------------------------

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
        try:
            text = _HEADER_NAMES[name]
        except KeyError:
            text = _header_name(name)
        if text is not None:
            headers = self.headers
            if text in headers and text in FORWARDING_HEADERS:  # a chain of proxies
                headers[text] += ", " + value.decode("latin-1")
            else:
                headers[text] = value.decode("latin-1")

    def on_headers_complete(self) -> None:
        self.in_head = False

    def on_body(self, body: bytes) -> None:
        self.body_size += len(body)
        if self.body_size <= self.state.settings.max_request_bytes:
            self.body.append(body)

    def on_message_complete(self) -> None:
        settings = self.state.settings
        raw_path, query = parse_target(self.url.decode("latin-1"))
        prefix = ""
        if settings.path_prefix:
            prefix, raw_path = strip_prefix(raw_path, settings.path_prefix)
        parser = self.parser
        method = parser.get_method()
        self.backlog.append(
            Request(  # positional: the hot path of every request
                _METHODS.get(method) or method.decode(),
                raw_path,
                query,
                self.headers,
                b"".join(self.body),
                parser.should_keep_alive(),
                self.peer,
                None,
                prefix,
                self.body_size > settings.max_request_bytes,
            )
        )

    # --- serving, in order -----------------------------------------------------------------

    def _serve_backlog(self) -> None:
        backlog = self.backlog
        if len(backlog) > 1 and self.corked is None:
            # Pipelined requests: the answers ready now share one write.
            self.corked = []
            try:
                self._serve_backlog()
            finally:
                self._uncork()
            return
        while backlog and not self.busy and not self.closing and self.stream_end is None:
            request = backlog.popleft()
            if request.too_large:
                limit = self.state.settings.max_request_bytes
                self._respond(error_response(413, f"Body larger than {limit} bytes"), False)
                return
            result = self.state.handle_api(request)
            if type(result) is Response or isinstance(result, (Response, StreamingResponse)):
                self._respond(result, request.keep_alive, request)
            else:
                self.busy = True
                task = asyncio.get_running_loop().create_task(result)
                task.add_done_callback(functools.partial(self._answered, request))

    def _answered(self, request: Request, task: asyncio.Task[Response]) -> None:
        exc = task.exception()
        if isinstance(exc, ApiError):
            response = error_response(exc.status, exc.message)
        elif exc is not None:
            log.error("HTTP handler failed", exc_info=exc)
            response = error_response(500, "Internal server error")
        else:
            response = task.result()
        self.busy = False
        self._respond(response, request.keep_alive, request)
        self._serve_backlog()

    def _respond(
        self,
        response: Response | StreamingResponse,
        keep_alive: bool,
        request: Request | None = None,
    ) -> None:
        transport = self.transport
        if transport is None or self.closing or self.stream_end is not None:
            return
        if type(response) is not Response and isinstance(response, StreamingResponse):
            self._stream(transport, response)
            return
        keep_alive = keep_alive and not self.state.draining
        raw = response.encode(keep_alive)
        if request is not None:
            if request.stats is not None:
                request.stats.http_transmitted_bytes += len(raw)
            if self.debug:
                api_log.debug(
                    "%s %s %s -> %d", self.peer, request.method, request.path[:200], response.status
                )
        corked = self.corked
        if corked is None:
            transport.write(raw)
        else:
            corked.append(raw)
            if keep_alive:
                return
            self._uncork()
        if not keep_alive:
            self.closing = True
            transport.close()

    def _uncork(self) -> None:
        """Write the answers held back while serving pipelined requests, in one write."""
        corked, self.corked = self.corked, None
        if corked and self.transport is not None:
            self.transport.write(b"".join(corked))

    def _stream(self, transport: asyncio.Transport, response: StreamingResponse) -> None:
        """Hand this connection over to a streaming response (the console's event stream):
        write its head, stop serving HTTP (later bytes from the client are ignored, its EOF
        still ends the connection), and let the response write its body until either ends."""
        self._uncork()
        self.backlog.clear()
        transport.write(response.head())
        sink = StreamSink(transport, response.limit, response.burst, response.slow_after)
        self.stream_end = response.start(sink)

    # --- shutdown and idle connections (driven by the server) ------------------------------

    def close_idle(self) -> None:
        """End this connection at shutdown: now when idle, else right after its answer."""
        if not self.busy and self.transport is not None:
            self.closing = True
            self.transport.close()

    def http_tick(self, close_after: int) -> None:
        """Close an HTTP connection that sent nothing for `close_after` sweeps (an idle
        keep-alive, or a client that stopped in the middle of a request). A streaming
        response is not idle: it ends by itself."""
        if self.stream_end is not None:
            return
        if self.active or self.busy:
            self.active = False
            self.idle_ticks = 0
            return
        self.idle_ticks += 1
        if self.idle_ticks >= close_after and self.transport is not None:
            self.closing = True
            self.transport.close()

    def close(self) -> None:
        """End this connection now (one accepted over capacity that did not upgrade)."""
        if self.transport is not None:
            self.closing = True
            self.transport.close()

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()

    # --- the WebSocket upgrade -------------------------------------------------------------

    def _upgrade(self, rest: bytes) -> None:
        transport = self.transport
        assert transport is not None
        request = self.backlog.pop() if self.backlog else None
        headers = request.headers if request is not None else self.headers
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
            self._respond(_VERSION_REFUSED, False)
            return
        settings = self.state.settings
        deflate = settings.websocket_compression and offers_deflate(
            headers.get("sec-websocket-extensions", "")
        )
        extension = f"Sec-WebSocket-Extensions: {DEFLATE_RESPONSE}\r\n".encode() if deflate else b""
        transport.write(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
            b"Connection: Upgrade\r\nSec-WebSocket-Accept: "
            + accept_key(key).encode()
            + b"\r\n"
            + extension
            + b"\r\n"
        )
        # Hand the transport over: from here on this object is garbage. The parser holds
        # this object's callbacks; dropping it breaks that cycle, so reference counting frees
        # both now instead of the cyclic GC later.
        self.closing = True
        del self.parser
        self.peer = ""  # only HTTP requests read it; ~65 B a connection while this lingers
        # Accepted beyond this process's descriptor budget (`server.capacity`): upgraded only
        # to be told 4100, so pusher-js retries after a while.
        over_capacity = self in self.state.over_capacity
        websocket = WebSocketConnection(
            self.state, transport, FrameReader(settings.max_message_bytes, deflate), deflate
        )
        transport.set_protocol(websocket)
        self.state.upgraded(self, websocket)
        # Any other path is still upgraded, so that pusher-js reads 4005 and stops retrying
        # instead of retrying a failed handshake for ever (a wrong `wsPath`).
        app_key = request.path[5:] if request.path.startswith("/app/") else None
        websocket.open(
            app_key, request.raw_path, request.query, headers.get("origin"), over_capacity
        )
        if rest and not websocket.closing:
            websocket.data_received(rest)
