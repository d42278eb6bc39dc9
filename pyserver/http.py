"""HTTP/1.1 plumbing for the API and the WebSocket upgrade: requests in, response bytes out.

Parsing is done by httptools (llhttp); this module keeps what a handler needs from a
request and builds responses. Every response has a JSON body, a Content-Length and says
whether the connection stays open.

A handler may answer with a `StreamingResponse` instead (the console's server-sent events):
the connection writes its head, then hands the handler a `StreamSink` to write the body with
for as long as the handler wants; such a response has no Content-Length and ends the
connection when it ends.

Invariants:
- Query keys are lower-cased and values percent-decoded once (the form the signature is
  computed over, `spec/protocol.md` §11.1); a repeated key keeps its first value.
- `raw_path` is the path exactly as sent; `path` is its percent-decoded form.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any
from urllib.parse import unquote

import orjson

from pyserver.stats import AppStats


@dataclass(slots=True, init=False)
class Request:
    method: str
    raw_path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes
    keep_alive: bool
    peer: str
    path: str
    """`raw_path` percent-decoded."""
    stats: AppStats | None
    """The app's counters, once the API knows which app the request is for."""
    prefix: str
    """The configured `path_prefix` when the target began with it (already cut off)."""
    too_large: bool
    """The body was over `max_request_bytes` (not kept): the answer is 413."""

    def __init__(
        self,
        method: str,
        raw_path: str,
        query: dict[str, str],
        headers: dict[str, str],
        body: bytes = b"",
        keep_alive: bool = True,
        peer: str = "",
        stats: AppStats | None = None,
        prefix: str = "",
        too_large: bool = False,
    ) -> None:
        # Written out rather than generated: a dataclass's `__init__` plus `__post_init__`
        # are two calls on every request.
        self.method = method
        self.raw_path = raw_path
        self.query = query
        self.headers = headers
        self.body = body
        self.keep_alive = keep_alive
        self.peer = peer
        self.path = unquote(raw_path) if "%" in raw_path else raw_path
        self.stats = stats
        self.prefix = prefix
        self.too_large = too_large

    @property
    def signed_paths(self) -> tuple[str, ...]:
        """Paths the signature may be over, the path as received first: raw and decoded, each
        with and without the prefix (an SDK that sends it, or a proxy that adds it), each once
        (the decoded path is usually the raw one)."""
        raw_path, prefix = self.raw_path, self.prefix
        if self.path is raw_path or self.path == raw_path:
            return (prefix + raw_path, raw_path) if prefix else (raw_path,)
        if not prefix:
            return (raw_path, self.path)
        return (prefix + raw_path, raw_path, prefix + self.path, self.path)


def strip_prefix(raw_path: str, prefix: str) -> tuple[str, str]:
    """(`prefix`, rest) when `raw_path` is under `prefix` (a `/`-led path without a trailing
    `/`), else ("", `raw_path`): requests without the prefix are served too."""
    if prefix and raw_path.startswith(prefix) and raw_path[len(prefix) : len(prefix) + 1] == "/":
        return prefix, raw_path[len(prefix) :]
    return "", raw_path


def parse_target(target: str) -> tuple[str, dict[str, str]]:
    """Split a request target into its raw path and decoded query parameters."""
    raw_path, _, query_string = target.partition("?")
    query: dict[str, str] = {}
    if not query_string:
        return raw_path, query
    if "%" in query_string or "+" in query_string:
        for pair in query_string.split("&"):
            if pair:
                key, _, value = pair.partition("=")
                key = unquote(key.replace("+", " ")).lower()
                if key not in query:
                    query[key] = unquote(value.replace("+", " "))
        return raw_path, query
    setdefault = query.setdefault  # the first value of a key wins
    for pair in query_string.split("&"):
        if pair:
            key, _, value = pair.partition("=")
            setdefault(key.lower(), value)
    return raw_path, query


@dataclass(frozen=True, slots=True)
class Response:
    status: int
    body: bytes
    content_type: str = "application/json"
    extra_headers: tuple[tuple[str, str], ...] = ()

    def encode(self, keep_alive: bool) -> bytes:
        if self is EMPTY_OK:  # the answer to almost every trigger: built once
            return _EMPTY_OK_KEEP_ALIVE if keep_alive else _EMPTY_OK_CLOSE
        return self._encode(keep_alive)

    def _encode(self, keep_alive: bool) -> bytes:
        reason = HTTPStatus(self.status).phrase if self.status in _STATUSES else "Unknown"
        lines = [
            f"HTTP/1.1 {self.status} {reason}",
            f"Content-Type: {self.content_type}",
            f"Content-Length: {len(self.body)}",
            "Connection: keep-alive" if keep_alive else "Connection: close",
        ]
        lines += [f"{name}: {value}" for name, value in self.extra_headers]
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + self.body


_STATUSES = {s.value for s in HTTPStatus}


def json_response(value: Any, status: int = 200) -> Response:
    return Response(status, orjson.dumps(value))


def error_response(status: int, message: str) -> Response:
    """`{"error": "<message>", "status": <status>}`."""
    return Response(status, orjson.dumps({"error": message, "status": status}))


EMPTY_OK = Response(200, b"{}")
_EMPTY_OK_KEEP_ALIVE = EMPTY_OK._encode(True)
_EMPTY_OK_CLOSE = EMPTY_OK._encode(False)


# --- streaming responses (issue 16 part 2: the console's server-sent events) ----------------


class StreamSink:
    """The open end of a `StreamingResponse`: its body is written here, a chunk at a time.

    A slow reader is cut off (the transport is aborted) rather than buffered for: one that
    leaves more than `burst` bytes unread, or more than `limit` for over `slow_after`
    seconds (the first writes of a stream may be large: a reader gets that long to take
    them). `write` then returns False, and so does every later call. So what a stream holds
    in memory is bounded by `burst`, plus what `slow_after` seconds of writes add."""

    __slots__ = ("burst", "closed", "limit", "over_since", "slow_after", "transport")

    def __init__(
        self, transport: asyncio.Transport, limit: int, burst: int, slow_after: float
    ) -> None:
        self.transport = transport
        self.limit = limit
        self.burst = burst
        self.slow_after = slow_after
        self.closed = False
        self.over_since: float | None = None
        """When the unread bytes last went over `limit` (None: under it)."""

    def write(self, data: bytes) -> bool:
        """Write `data` now; False when the stream is over (closed, or a slow reader cut off)."""
        if self.closed or self.transport.is_closing():
            self.closed = True
            return False
        unread = self.transport.get_write_buffer_size()
        if unread > self.limit:
            now = time.monotonic()
            if self.over_since is None:
                self.over_since = now
            if unread > self.burst or now - self.over_since > self.slow_after:
                self.closed = True
                self.transport.abort()
                return False
        else:
            self.over_since = None
        self.transport.write(data)
        return True

    def close(self) -> None:
        """End the response (and the connection) once what was written is sent."""
        if not self.closed:
            self.closed = True
            self.transport.close()


@dataclass(frozen=True, slots=True)
class StreamingResponse:
    """A response whose body is written after the head, for as long as its handler wants.

    The connection writes `head()`, stops reading requests from this client (anything more it
    sends is ignored), and calls `start(sink)` once; `start` returns the function the
    connection calls exactly once when it ends, for any reason (the peer went away, `close`,
    a slow reader cut off, shutdown)."""

    start: Callable[[StreamSink], Callable[[], None]]
    content_type: str = "text/event-stream; charset=utf-8"
    extra_headers: tuple[tuple[str, str], ...] = ()
    limit: int = 262_144
    """Bytes the peer may leave unread for `slow_after` seconds before it is cut off."""
    burst: int = 4_194_304
    """Bytes the peer may leave unread at all."""
    slow_after: float = 5.0

    def head(self) -> bytes:
        lines = [
            "HTTP/1.1 200 OK",
            f"Content-Type: {self.content_type}",
            "Connection: close",
        ]
        lines += [f"{name}: {value}" for name, value in self.extra_headers]
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
