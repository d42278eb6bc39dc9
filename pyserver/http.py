"""HTTP/1.1 plumbing for the API and the WebSocket upgrade: requests in, response bytes out.

Parsing is done by httptools (llhttp); this module keeps what a handler needs from a
request and builds responses. Every response has a JSON body, a Content-Length and says
whether the connection stays open.

Invariants:
- Query keys are lower-cased and values percent-decoded once (the form the signature is
  computed over, `spec/protocol.md` §11.1); a repeated key keeps its first value.
- `raw_path` is the path exactly as sent; `path` is its percent-decoded form.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any
from urllib.parse import unquote

import orjson

from pyserver.stats import AppStats


@dataclass(slots=True)
class Request:
    method: str
    raw_path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes = b""
    keep_alive: bool = True
    peer: str = ""
    path: str = field(init=False)
    stats: AppStats | None = None
    """The app's counters, once the API knows which app the request is for."""
    prefix: str = ""
    """The configured `path_prefix` when the target began with it (already cut off)."""
    too_large: bool = False
    """The body was over `max_request_bytes` (not kept): the answer is 413."""

    def __post_init__(self) -> None:
        self.path = unquote(self.raw_path) if "%" in self.raw_path else self.raw_path

    @property
    def signed_paths(self) -> tuple[str, ...]:
        """Paths the signature may be over, the path as received first: raw and decoded, each
        with and without the prefix (an SDK that sends it, or a proxy that adds it)."""
        if not self.prefix:
            return (self.raw_path, self.path)
        return (self.prefix + self.raw_path, self.raw_path, self.prefix + self.path, self.path)


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
    if query_string:
        escaped = "%" in query_string or "+" in query_string
        for pair in query_string.split("&"):
            if not pair:
                continue
            key, _, value = pair.partition("=")
            if escaped:
                key = unquote(key.replace("+", " "))
                value = unquote(value.replace("+", " "))
            key = key.lower()
            if key not in query:
                query[key] = value
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
