"""Server-sent events for the console: the wire format, and the open streams of one app.

Pure framing and bookkeeping, no asyncio and no clock reads: `live.py` decides what to send
and when; `StreamSink` (`pyserver.http`) does the writing.

Wire format (https://html.spec.whatwg.org/multipage/server-sent-events.html): each event is
`id: ...` (feed entries only), `event: NAME` and one `data:` line of JSON, then a blank line.
JSON from orjson never holds a raw newline, so one `data:` line always suffices.

Invariants:
- An event is encoded once and the same bytes go to every open stream of the app.
- An `Audience` holds sinks only: a stream that cannot take more (a slow reader, already cut
  off by its sink) is forgotten at the first failed write, so memory per app is fixed by the
  sinks' own limits.
"""

from __future__ import annotations

from typing import Any, Protocol

import orjson

KEEP_ALIVE = b": keep-alive\n\n"
"""A comment line: proxies see traffic and keep the stream open; clients ignore it."""
HELLO = b"retry: 1000\n\n"
"""The first bytes of every stream: an `EventSource` reconnects after 1 s."""


def event(name: str, data: Any, event_id: str | None = None) -> bytes:
    """One server-sent event: `name`, `data` as JSON, and `event_id` when given."""
    body = orjson.dumps(data)
    head = f"id: {event_id}\nevent: {name}\ndata: " if event_id else f"event: {name}\ndata: "
    return head.encode() + body + b"\n\n"


def local_id(epoch: int, position: int) -> str:
    """The id of the feed entry at `position` on a server started at `epoch` (ms)."""
    return f"{epoch}-{position}"


def parse_local_id(value: str | None, epoch: int) -> int | None:
    """The position named by a `Last-Event-ID` made by `local_id` on this very server
    start; None when there is no id or it comes from elsewhere (another start, a cluster)."""
    if not value:
        return None
    head, _, tail = value.strip().partition("-")
    if head != str(epoch) or not tail.isdigit() or len(tail) > 18:
        return None
    return int(tail)


class Sink(Protocol):
    def write(self, data: bytes) -> bool: ...

    def close(self) -> None: ...


class Audience:
    """The open streams of one app on this node."""

    __slots__ = ("sinks",)

    def __init__(self) -> None:
        self.sinks: dict[Sink, None] = {}

    def __len__(self) -> int:
        return len(self.sinks)

    def add(self, sink: Sink) -> None:
        self.sinks[sink] = None

    def remove(self, sink: Sink) -> None:
        self.sinks.pop(sink, None)

    def broadcast(self, data: bytes) -> None:
        """Write the same bytes to every stream; forget those that cannot take them."""
        if not data:
            return
        failed = [sink for sink in self.sinks if not sink.write(data)]
        for sink in failed:
            self.sinks.pop(sink, None)

    def close(self) -> None:
        for sink in list(self.sinks):
            sink.close()
        self.sinks.clear()
