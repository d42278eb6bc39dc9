"""The kernel-timestamped WebSocket connection (`bench.rawws`) and the read-time fallback,
against a small WebSocket server in the test's own event loop on 127.0.0.1, on the default
loop and on uvloop: frames split across reads, fragments, pings, close, and when a message
counts as received."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from bench import rxclock, wsframes
from bench.clock import now_ns
from bench.rawws import RawWSConnection
from bench.wsclient import WSConnection, WSCore, open_ws

pytestmark = pytest.mark.skipif(not rxclock.supported(), reason="needs SO_TIMESTAMPNS (Linux)")

LOOPS = ["asyncio"]
try:
    import uvloop

    LOOPS.append("uvloop")
except ImportError:  # pragma: no cover - uvloop is a test dependency
    uvloop = None  # type: ignore[assignment]


class Peer(asyncio.Protocol):
    """Server side: answers the upgrade, then hands the test its transport and what the
    client sends (unmasked frames)."""

    def __init__(self, ready: asyncio.Queue[Peer]) -> None:
        self.ready = ready
        self.head = b""
        self.parser: wsframes.FrameParser | None = None
        self.frames: asyncio.Queue[wsframes.RawFrame] = asyncio.Queue()
        self.transport: asyncio.Transport | None = None
        self.closed = asyncio.Event()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        if self.parser is None:
            self.head += data
            if b"\r\n\r\n" not in self.head:
                return
            key = next(
                line.split(b":", 1)[1].strip().decode()
                for line in self.head.split(b"\r\n")
                if line.lower().startswith(b"sec-websocket-key:")
            )
            assert self.transport is not None
            self.transport.write(
                b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                b"Connection: Upgrade\r\nSec-WebSocket-Accept: "
                + wsframes.accept_for(key).encode()
                + b"\r\n\r\n"
            )
            self.parser = wsframes.FrameParser()
            self.ready.put_nowait(self)
            data = self.head.split(b"\r\n\r\n", 1)[1]
        for frame in self.parser.feed(data):
            self.frames.put_nowait(frame)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed.set()

    def write(self, data: bytes) -> None:
        assert self.transport is not None
        self.transport.write(data)


def server_frame(opcode: int, payload: bytes, fin: bool = True) -> bytes:
    """An unmasked server frame."""
    first = (0x80 if fin else 0) | opcode
    n = len(payload)
    if n < 126:
        return bytes((first, n)) + payload
    if n < 65_536:
        return bytes((first, 126)) + n.to_bytes(2, "big") + payload
    return bytes((first, 127)) + n.to_bytes(8, "big") + payload


def run(loop_name: str, scenario: Callable[[], Awaitable[None]]) -> None:
    async def bounded() -> None:
        await asyncio.wait_for(scenario(), 20)

    if loop_name == "uvloop":
        uvloop.run(bounded())
    else:
        asyncio.run(bounded())


Got = list[tuple[bytes, int, int]]
"""(payload, time handed to on_message, now_ns() when on_message ran)"""


async def connect(clock: str, got: Got) -> tuple[WSCore, Peer, asyncio.AbstractServer]:
    ready: asyncio.Queue[Peer] = asyncio.Queue()
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: Peer(ready), "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    conn = await open_ws(
        f"ws://127.0.0.1:{port}/app/k",
        lambda payload, now: got.append((payload, now, now_ns())),
        5,
        latency_clock=clock,
    )
    peer = await asyncio.wait_for(ready.get(), 5)
    return conn, peer, server


async def until(condition: Callable[[], bool]) -> None:
    while not condition():
        await asyncio.sleep(0.005)


@pytest.mark.parametrize("loop_name", LOOPS)
@pytest.mark.parametrize("clock", [rxclock.KERNEL, rxclock.READ])
def test_frames_split_across_reads_pings_and_close(loop_name: str, clock: str) -> None:
    async def scenario() -> None:
        got: Got = []
        conn, peer, server = await connect(clock, got)
        assert isinstance(conn, RawWSConnection if clock == rxclock.KERNEL else WSConnection)
        hello = server_frame(wsframes.OP_TEXT, b'{"event":"hello"}')
        big = server_frame(wsframes.OP_BINARY, bytes(i % 251 for i in range(70_000)))
        stream = (
            hello
            + server_frame(wsframes.OP_TEXT, b"frag-", fin=False)
            + server_frame(wsframes.OP_PING, b"are you there")
            + server_frame(wsframes.OP_CONT, b"ment")
            + big
        )
        # One byte, then pieces cutting headers and payloads, each in its own read.
        cuts = [0, 1, 5, len(hello) + 1, len(hello) + 9, len(stream) - 40_000, len(stream)]
        for a, b in itertools.pairwise(cuts):
            peer.write(stream[a:b])
            await asyncio.sleep(0.01)
        pong = await asyncio.wait_for(peer.frames.get(), 5)
        assert (pong.opcode, pong.payload) == (wsframes.OP_PONG, b"are you there")
        await until(lambda: len(got) == 3)
        assert [payload for payload, _, _ in got] == [
            b'{"event":"hello"}',
            b"frag-ment",
            bytes(i % 251 for i in range(70_000)),
        ]
        await conn.send("x" * 70_000)  # a 64-bit length frame, masked, larger than a send
        echo = await asyncio.wait_for(peer.frames.get(), 5)
        assert echo.payload == b"x" * 70_000
        assert conn.is_open
        peer.write(server_frame(wsframes.OP_CLOSE, wsframes.close_payload(4000, "done")))
        answer = await asyncio.wait_for(peer.frames.get(), 5)
        assert answer.opcode == wsframes.OP_CLOSE
        assert wsframes.parse_close(answer.payload)[0] == 4000
        await asyncio.wait_for(conn.lost, 5)
        assert conn.close_code == 4000 and not conn.is_open
        with pytest.raises(ConnectionError):
            conn.send_nowait("late")
        server.close()

    run(loop_name, scenario)


@pytest.mark.parametrize("loop_name", LOOPS)
@pytest.mark.parametrize("clock", [rxclock.KERNEL, rxclock.READ])
def test_close_from_the_client(loop_name: str, clock: str) -> None:
    async def scenario() -> None:
        got: Got = []
        conn, peer, server = await connect(clock, got)
        lost: list[bool] = []
        conn.on_lost = lambda: lost.append(True)
        closing = asyncio.ensure_future(conn.close(timeout=5))
        frame = await asyncio.wait_for(peer.frames.get(), 5)
        assert frame.opcode == wsframes.OP_CLOSE
        assert wsframes.parse_close(frame.payload)[0] == 1000
        peer.write(server_frame(wsframes.OP_CLOSE, frame.payload))
        assert peer.transport is not None
        peer.transport.close()
        await asyncio.wait_for(closing, 5)
        assert conn.lost.done() and lost == [True]
        await asyncio.wait_for(peer.closed.wait(), 5)
        server.close()

    run(loop_name, scenario)


@pytest.mark.parametrize("loop_name", LOOPS)
@pytest.mark.parametrize("clock", [rxclock.KERNEL, rxclock.READ])
def test_when_a_message_counts_as_received(loop_name: str, clock: str) -> None:
    """The server writes a message, then the loop is kept busy for 50 ms before the client
    can read it: with the kernel clock the message counts from when the bytes reached the
    client's socket, with the read clock from when they were read (50 ms later).

    On loopback the bytes normally reach the socket within the server's write (so the time
    lies between the readings around it), but not always: about one run in ten on the
    default loop they got there only when the loop woke up again, and then the kernel's time
    rightly says so. So each attempt must be consistent (sent <= received <= read) and one of
    five must show the delivery within the write."""
    busy_ns = 50_000_000

    async def scenario() -> None:
        got: Got = []
        conn, peer, server = await connect(clock, got)
        within_write = 0
        for _ in range(5):
            rxclock.OFFSET.refresh()
            steps = rxclock.OFFSET.changes
            before = now_ns()
            peer.write(server_frame(wsframes.OP_TEXT, b"timed"))
            after = now_ns()
            time.sleep(busy_ns / 1e9)  # the loop is busy: nothing is read meanwhile
            count = len(got)
            await until(lambda count=count: len(got) == count + 1)  # type: ignore[misc]
            rxclock.OFFSET.refresh()
            if rxclock.OFFSET.changes != steps:
                continue  # the wall clock was stepped meanwhile: not comparable
            _payload, counted, read = got[-1]
            assert before <= counted <= read
            if clock == rxclock.READ:
                assert counted >= after + busy_ns
            elif counted <= after:
                within_write += 1
                break
        if clock == rxclock.KERNEL:
            assert within_write == 1
        conn.abort()
        server.close()

    run(loop_name, scenario)


def test_the_offset_follows_steps_of_the_wall_clock() -> None:
    """A timestamp taken before a step of CLOCK_REALTIME is converted with the offset of its
    own time, one taken after with the new one."""
    offset = rxclock.RealtimeOffset()
    offset.ns, offset.since = 1_000_000, 0
    offset.history.clear()
    # the wall clock jumped 0.5 ms forward at t = 10 s on the run's clock
    offset.history.append((offset.since, offset.ns))
    offset.since, offset.ns = 10_000_000_000, 1_500_000
    assert offset.to_run_clock(9_000_000_000 + 1_000_000) == 9_000_000_000
    assert offset.to_run_clock(11_000_000_000 + 1_500_000) == 11_000_000_000
    real = rxclock.realtime_offset()
    assert abs(real[1] - (time.clock_gettime_ns(time.CLOCK_REALTIME) - now_ns())) < 10_000_000


def test_read_timestamps_switch_and_result_fields() -> None:
    from bench.cli import prepare

    assert prepare(["fanout"]).latency_clock == rxclock.KERNEL
    assert prepare(["fanout", "--read-timestamps"]).latency_clock == rxclock.READ


def test_compare_passes_the_switch_to_every_run(tmp_path: Path) -> None:
    from bench.compare import PROFILES, Server, Settings, bench_command, markdown_table

    def settings(extra: list[str]) -> Settings:
        return Settings(
            a=Server("A", "a {port}"), b=Server("B", "b {port}"), host="127.0.0.1",
            connect_host="127.0.0.1", port=0, app_id="i", key="k", secret="s", out=tmp_path,
            pin=False, start_timeout=5, rounds=1, cases=[], extra_args=extra,
        )  # fmt: skip

    case = PROFILES["smoke"][0]
    switched = bench_command(case, settings(["--read-timestamps"]), 1, 2, tmp_path)
    assert "--read-timestamps" in switched
    assert "--read-timestamps" not in bench_command(case, settings([]), 1, 2, tmp_path)
    record = {"case": case.name, "label": "A", "side": "A", "round": 0, "status": "ok",
              "metrics": {}, "latency_clock": "read"}  # fmt: skip
    assert "Latency clock: read." in markdown_table([record])
