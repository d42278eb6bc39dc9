"""The write batcher and corked writer (`pyserver.server.flow`): one write per connection per
loop iteration, frames in the order they were queued, whether one frame or several, and the
slow-consumer cap checked on the batcher's flush."""

from __future__ import annotations

from collections.abc import Callable

from pyserver.server.flow import CorkedWriter, WriteBatcher


class Loop:
    def __init__(self) -> None:
        self.scheduled: list[Callable[[], None]] = []

    def call_soon(self, callback: Callable[[], None]) -> None:
        self.scheduled.append(callback)


class Transport:
    def __init__(self, buffered: int = 0) -> None:
        self.writes: list[bytes] = []
        self.buffered = buffered

    def write(self, data: bytes) -> None:
        self.writes.append(data)

    def get_write_buffer_size(self) -> int:
        return self.buffered


class Writer(CorkedWriter):
    __slots__ = ("slow",)

    def slow_consumer(self) -> None:
        self.slow = True
        self.closing = True


def writer(batcher: WriteBatcher, buffered: int = 0) -> tuple[Writer, Transport]:
    transport = Transport(buffered)
    connection = Writer(transport, batcher, 1000, None)  # type: ignore[arg-type]
    connection.slow = False
    return connection, transport


def test_one_frame_or_several_go_out_in_one_write_per_iteration_in_order() -> None:
    loop = Loop()
    batcher = WriteBatcher(loop)  # type: ignore[arg-type]
    one, one_t = writer(batcher)
    three, three_t = writer(batcher)
    one.send(b"a")
    three.send(b"1")
    three.send(b"2")
    three.send(b"3")
    assert len(loop.scheduled) == 1  # one flush for the iteration, however many connections
    loop.scheduled.pop()()
    assert one_t.writes == [b"a"]
    assert three_t.writes == [b"123"]
    assert one.out is None and three.out is None
    three.send(b"4")  # the next iteration schedules its own flush
    assert len(loop.scheduled) == 1
    loop.scheduled.pop()()
    assert three_t.writes == [b"123", b"4"]


def test_a_close_writes_what_is_queued_and_the_batcher_skips_it_then() -> None:
    loop = Loop()
    batcher = WriteBatcher(loop)  # type: ignore[arg-type]
    connection, transport = writer(batcher)
    connection.send(b"x")
    connection.flush()  # as close() does before its close frame
    connection.closing = True
    connection.send(b"late")  # nothing is queued once closing
    loop.scheduled.pop()()
    assert transport.writes == [b"x"]


def test_the_flush_closes_a_paused_connection_over_its_cap() -> None:
    loop = Loop()
    batcher = WriteBatcher(loop)  # type: ignore[arg-type]
    slow, _ = writer(batcher, buffered=5000)
    fast, _ = writer(batcher, buffered=5000)
    slow.pause_writing()
    slow.send(b"x")
    fast.send(b"x")  # buffering as much, but asyncio did not pause it
    loop.scheduled.pop()()
    assert slow.slow and not fast.slow
