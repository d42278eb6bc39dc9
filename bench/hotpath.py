"""pyserver's hot paths in-process, without sockets: microseconds of Python per operation.

Wall-clock load runs on a shared machine are noisy, and their totals mix the server's Python
with the kernel's work and the load generator's. This drives pyserver's own protocol objects
(`HttpConnection`, `WebSocketConnection`) with real request bytes and real masked WebSocket
frames through a transport that only counts what is written, so what it times is the
server's Python per operation (the syscalls it would make are not in it):

- `http`: one signed `POST /apps/{id}/events` to a channel nobody listens on, as
  `python -m bench http` sends it (one request per `data_received`);
- `http-pipelined`: the same, 16 requests per `data_received`;
- `channels`: a trigger to one channel with one subscriber (`bench channels`, k=1);
- `client`: a client event on a private channel relayed to the other member of its pair;
- `client-batched`: the same, 4 client events per `data_received` (as at max rate, when a
  sender's read brings several frames and its peer gets them in one write);
- `client-limited`: `client` with the per-connection client-event limit on (set too high to
  refuse anything), so the token bucket's share shows.
- `fanout`: a trigger to one channel with `FANOUT` subscribers (`bench fanout`): the
  microseconds are per trigger, so divide by `FANOUT` for the cost per recipient.

    python -m bench.hotpath                     # every case, best of 5 repeats
    python -m bench.hotpath http --profile      # cProfile of one case, top functions

Instructions per operation, repeatable on a busy machine: the difference of two runs under
callgrind divided by the difference of their `-n` (the setup is the same in both):

    valgrind --tool=callgrind --callgrind-out-file=/dev/null \
        python -m bench.hotpath http -n 1000 --repeats 1      # then -n 3000

pyserver-specific (it imports the server), unlike the rest of `bench`; run it from the
repository root with pyserver installed.
"""

from __future__ import annotations

import argparse
import cProfile
import logging
import pstats
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from bench import protocol, signing
from bench.wsframes import OP_TEXT, encode_frame

APP_ID, KEY, SECRET = "app-id", "app-key", "app-secret"
PARITY_CONFIG = Path(__file__).parent / "servers" / "pyserver-parity.toml"
"""pyserver configured as in `python -m bench compare` (see that file)."""
FANOUT = 1000
"""Subscribers of the `fanout` case's channel (the issue's N=1000 case)."""
DISTINCT = 100
"""Distinct requests (or frames) per case, sent in turn: the setup costs the same for any
`-n`, so two runs under `valgrind --tool=callgrind` differ by the operations alone."""


class Transport:
    """Enough of an asyncio transport for the protocol objects: counts bytes written."""

    def __init__(self) -> None:
        self.written = 0
        self.writes = 0
        self.protocol: Any = None
        self.last = b""

    def write(self, data: bytes) -> None:
        self.writes += 1
        self.written += len(data)
        self.last = data

    def writelines(self, chunks: Any) -> None:
        for chunk in chunks:
            self.write(chunk)

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return ("127.0.0.1", 40000) if name == "peername" else default

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        pass

    def get_write_buffer_size(self) -> int:
        return 0

    def set_protocol(self, protocol: Any) -> None:
        self.protocol = protocol

    def is_closing(self) -> bool:
        return False

    def close(self) -> None:
        raise AssertionError("closed")

    def abort(self) -> None:
        raise AssertionError("aborted")

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


class _Loop:
    """Enough of an event loop for the real `WriteBatcher`, flushed by hand."""

    def call_soon(self, callback: Callable[[], None]) -> None:
        pass


class Batcher:
    """The write batcher, flushed by hand at the end of each operation."""

    def __init__(self) -> None:
        self.pending: list[Any] = []
        self.loop = _Loop()
        """What a connection schedules the flush on when it queues its first frame."""

    def add(self, connection: Any) -> None:
        self.pending.append(connection)

    def flush(self) -> None:
        pending, self.pending = self.pending, []
        for connection in pending:
            connection.flush()


class Flusher(Protocol):
    def flush(self) -> None: ...


def _server() -> tuple[Any, Batcher]:
    from pyserver.config import load_settings
    from pyserver.server.server import Server

    settings = load_settings(PARITY_CONFIG, log_level="warning")
    server = Server(settings)
    batcher = Batcher()
    server.state.batcher = batcher  # type: ignore[assignment]
    return server, batcher


def _trigger_request(channels: list[str], seq: int) -> bytes:
    body = protocol.trigger_body("bench", channels, protocol.marker_text("run", seq, 0)).encode()
    target = signing.signed_path(
        "POST", signing.events_path(APP_ID), KEY, SECRET, int(time.time()), body
    )
    head = (
        f"POST {target} HTTP/1.1\r\nHost: 127.0.0.1:6001\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
        "Connection: keep-alive\r\n\r\n"
    ).encode()
    return head + body


def _http_connection(server: Any) -> tuple[Any, Transport]:
    from pyserver.server.http_connection import HttpConnection

    transport = Transport()
    connection = HttpConnection(server.state)
    connection.connection_made(transport)  # type: ignore[arg-type]
    return connection, transport


def _websocket(server: Any, batcher: Flusher) -> tuple[Any, Transport, str]:
    """An upgraded, handshaken connection: (protocol, transport, socket id)."""
    http, transport = _http_connection(server)
    http.data_received(
        b"GET /app/app-key?protocol=7 HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
        b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
        b"Sec-WebSocket-Version: 13\r\n\r\n"
    )
    websocket = transport.protocol
    batcher.flush()
    return websocket, transport, websocket.socket_id


def _subscribe(websocket: Any, batcher: Flusher, channel: str, socket_id: str) -> None:
    auth = None
    if channel.startswith("private-"):
        auth = signing.channel_auth(KEY, SECRET, socket_id, channel)
    websocket.data_received(encode_frame(OP_TEXT, protocol.subscribe(channel, auth).encode()))
    batcher.flush()


def case_http(n: int, per_feed: int = 1) -> Callable[[], None]:
    server, batcher = _server()
    connection, transport = _http_connection(server)
    requests = [_trigger_request(["bench-http-run"], i) for i in range(DISTINCT)]
    requests = [requests[i % DISTINCT] for i in range(n)]
    feeds = [b"".join(requests[i : i + per_feed]) for i in range(0, n, per_feed)]
    feed = connection.data_received

    def run() -> None:
        for data in feeds:
            feed(data)
            batcher.flush()
        assert transport.last.startswith(b"HTTP/1.1 200"), transport.last[:200]

    return run


def case_channels(n: int) -> Callable[[], None]:
    server, batcher = _server()
    channels = [f"bench-ch-{i}" for i in range(100)]
    for channel in channels:
        websocket, _, socket_id = _websocket(server, batcher)
        _subscribe(websocket, batcher, channel, socket_id)
    connection, transport = _http_connection(server)
    requests = [_trigger_request([channels[i % 100]], i) for i in range(DISTINCT)]
    requests = [requests[i % DISTINCT] for i in range(n)]
    feed = connection.data_received

    def run() -> None:
        for data in requests:
            feed(data)
            batcher.flush()
        assert transport.last.startswith(b"HTTP/1.1 200"), transport.last[:200]

    return run


def case_client(n: int, per_feed: int = 1, limit: int = 0) -> Callable[[], None]:
    server, batcher = _server()
    if limit:  # the per-connection client-event limit on, high enough never to refuse
        for app in server.state.apps_by_key.values():
            app.config = app.config.model_copy(update={"max_client_events_per_second": limit})
    channel = "private-bench-run-0"
    sender, _, sender_id = _websocket(server, batcher)
    receiver, received, receiver_id = _websocket(server, batcher)
    _subscribe(sender, batcher, channel, sender_id)
    _subscribe(receiver, batcher, channel, receiver_id)
    frames = [
        encode_frame(
            OP_TEXT,
            protocol.client_event(
                "client-bench", channel, protocol.make_marker("run", i, time.monotonic_ns())
            ).encode(),
        )
        for i in range(DISTINCT)
    ]
    sizes = [len(_relayed(frame, channel)) for frame in frames]
    expected = sum(sizes[i % DISTINCT] for i in range(n))
    frames = [frames[i % DISTINCT] for i in range(n)]
    feeds = [b"".join(frames[i : i + per_feed]) for i in range(0, n, per_feed)]
    feed = sender.data_received

    def run() -> None:
        before = received.written
        for data in feeds:
            feed(data)
            batcher.flush()
        written = received.written - before
        assert written == expected, (written, expected, received.last[:200])

    return run


def case_fanout(n: int, subscribers: int = FANOUT) -> Callable[[], None]:
    """The server's own write batcher (not `Batcher`): its per-connection work is part of
    what a fan-out costs per recipient."""
    from pyserver.server.flow import WriteBatcher

    server, _ = _server()
    batcher = WriteBatcher(_Loop())  # type: ignore[arg-type]
    server.state.batcher = batcher
    channel = "bench-fanout-run"
    transports = []
    for _ in range(subscribers):
        websocket, transport, socket_id = _websocket(server, batcher)
        _subscribe(websocket, batcher, channel, socket_id)
        transports.append(transport)
    connection, transport = _http_connection(server)
    requests = [_trigger_request([channel], i) for i in range(DISTINCT)]
    requests = [requests[i % DISTINCT] for i in range(n)]
    feed = connection.data_received
    first, last = transports[0], transports[-1]

    def run() -> None:
        before = first.writes, last.writes
        for data in requests:
            feed(data)
            batcher.flush()
        assert transport.last.startswith(b"HTTP/1.1 200"), transport.last[:200]
        assert (first.writes - before[0], last.writes - before[1]) == (n, n), last.last[:200]

    return run


CASES: dict[str, Callable[[int], Callable[[], None]]] = {
    "http": case_http,
    "http-pipelined": lambda n: case_http(n, 16),
    "channels": case_channels,
    "client": case_client,
    "client-batched": lambda n: case_client(n, 4),
    "client-limited": lambda n: case_client(n, 1, 1_000_000_000),
    "fanout": case_fanout,
}


def _relayed(frame: bytes, channel: str) -> bytes:
    """The frame a subscriber gets for the client's masked `frame` (short frames only)."""
    from pyserver.protocol.commands import parse_command
    from pyserver.protocol.frames import channel_event
    from pyserver.protocol.websocket import FrameReader, text_frame

    ((_, payload),) = FrameReader(1 << 20).feed(frame)
    command = parse_command(payload)
    return text_frame(channel_event(command.event, channel, command.data))  # type: ignore[union-attr]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.hotpath", description=__doc__.split("\n")[0])
    p.add_argument("cases", nargs="*", metavar="CASE", help=f"any of {', '.join(CASES)} (all)")
    p.add_argument("-n", type=int, default=20_000, help="operations per repeat (20,000)")
    p.add_argument("--repeats", type=int, default=5, help="repeats; the best is reported (5)")
    p.add_argument("--profile", action="store_true", help="cProfile one repeat of each case")
    p.add_argument("--top", type=int, default=25, help="functions listed with --profile")
    args = p.parse_args(argv)
    unknown = set(args.cases) - CASES.keys()
    if unknown:
        p.error(f"unknown case(s) {', '.join(sorted(unknown))}")
    previous = logging.root.manager.disable
    logging.disable(logging.WARNING)  # the server's start-up warnings (default secret)
    try:
        _run(args)
    finally:
        logging.disable(previous)
    return 0


def _run(args: argparse.Namespace) -> None:
    for name in args.cases or list(CASES):
        if args.profile:
            run = CASES[name](args.n)
            run()  # warm up
            run = CASES[name](args.n)
            profiler = cProfile.Profile()
            profiler.enable()
            run()
            profiler.disable()
            print(f"== {name}: cProfile of {args.n} operations")
            stats = pstats.Stats(profiler, stream=sys.stdout)
            stats.sort_stats("tottime").print_stats(args.top)
            continue
        best = float("inf")
        for _ in range(args.repeats):
            run = CASES[name](args.n)
            started = time.perf_counter()
            run()
            best = min(best, time.perf_counter() - started)
        print(f"{name:16} {best / args.n * 1e6:7.2f} µs per operation (best of {args.repeats})")


if __name__ == "__main__":
    sys.exit(main())
