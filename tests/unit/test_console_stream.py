"""Issue 16 part 2: the console's event stream (`pyserver/console/stream.py`, `live.py`,
`feed.py` positions) and the cluster stats' plan and merge (`cluster_stats.py`), without a
server: a hand-set clock, recording sinks, and one real socket for the slow-reader cut-off."""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import orjson

from pyserver.console import stream
from pyserver.console.cluster_stats import merge_day, merge_minute, plan
from pyserver.console.feed import EventFeed
from pyserver.console.live import LiveHub
from pyserver.console.timeseries import DAY, MINUTE, Sample, StatsHistory
from pyserver.http import StreamingResponse, StreamSink

T0 = 1_767_225_600.0
"""2026-01-01T00:00:00Z: the start of a UTC day and of a minute."""


class Recorder:
    """A sink that keeps what it is given (or refuses, like a slow reader cut off)."""

    def __init__(self, accept: bool = True) -> None:
        self.data = b""
        self.accept = accept
        self.closed = False

    def write(self, data: bytes) -> bool:
        if self.accept:
            self.data += data
        return self.accept

    def close(self) -> None:
        self.closed = True


def parse(data: bytes) -> list[tuple[str | None, str, Any]]:
    """(id, event, data) of every event in `data`, comments skipped."""
    events = []
    for block in data.split(b"\n\n"):
        fields = dict(
            line.split(": ", 1)
            for line in block.decode().split("\n")
            if line and not line.startswith(":") and ": " in line
        )
        if "data" in fields:
            events.append((fields.get("id"), fields["event"], orjson.loads(fields["data"])))
    return events


def test_an_event_is_one_id_event_and_data_line() -> None:
    frame = stream.event("feed", {"text": "two\nlines"}, "5-7")
    assert frame == b'id: 5-7\nevent: feed\ndata: {"text":"two\\nlines"}\n\n'
    assert stream.event("stats", [1]) == b"event: stats\ndata: [1]\n\n"
    assert stream.parse_local_id("5-7", 5) == 7
    for other in (None, "", "6-7", "5-x", "5", "5-" + "9" * 19):
        assert stream.parse_local_id(other, 5) is None


def test_feed_positions_say_what_the_ring_dropped() -> None:
    feed = EventFeed(per_app=3)
    for n in range(5):
        feed.api_event("a", "c", f"e{n}", "")
    feed.api_event("b", "c", "other", "")
    assert feed.added == {"a": 5, "b": 1}
    dropped, entries = feed.after("a", 0)
    assert dropped == 2 and [(e["position"], e["event"]) for e in entries] == [
        (3, "e2"),
        (4, "e3"),
        (5, "e4"),
    ]
    assert feed.after("a", 3) == (0, feed.after("a", 3)[1])
    assert [e["position"] for e in feed.after("a", 3)[1]] == [4, 5]
    assert [e["position"] for e in feed.after("a", 1, upto=4)[1]] == [3, 4]
    assert feed.after("a", 5) == (0, []) and feed.after("nobody", 0) == (0, [])


def _hub(feed: EventFeed) -> LiveHub:
    async def no_stats(app_id: str, since: float | None) -> dict[str, Any]:
        return {}

    return LiveHub(feed, no_stats, clock=lambda: T0)  # type: ignore[arg-type]


def test_resume_gives_what_came_after_the_id_once_or_says_what_was_lost() -> None:
    feed = EventFeed(per_app=4)
    hub = _hub(feed)
    for n in range(3):
        feed.client_event("a", "c", f"client-{n}", "{}", "1.1", None)
    hub.pumped["a"] = feed.added["a"]  # the task has written these three
    first = parse(hub._backlog("a", None))
    assert [e[2]["event"] for e in first] == ["client-0", "client-1", "client-2"]
    assert [e[0] for e in first] == [f"{hub.epoch}-{n}" for n in (1, 2, 3)]
    # A stream that saw the first entry resumes after it.
    again = parse(hub._backlog("a", first[0][0]))
    assert [e[2]["event"] for e in again] == ["client-1", "client-2"]
    # Entries the task has not written yet are the task's to write: never in a backlog too.
    feed.client_event("a", "c", "client-3", "{}", "1.1", None)
    assert [e[2]["event"] for e in parse(hub._backlog("a", first[2][0]))] == []
    sink = Recorder()
    hub.audiences["a"] = stream.Audience()
    hub.audiences["a"].add(sink)
    hub._pump()
    assert [e[2]["event"] for e in parse(sink.data)] == ["client-3"]
    hub._pump()  # nothing new: nothing written
    assert len(parse(sink.data)) == 1
    # Six more while a client was away: the ring (4) lost two after its id.
    for n in range(4, 10):
        feed.client_event("a", "c", f"client-{n}", "{}", "1.1", None)
    hub._pump()
    events = parse(sink.data)[1:]
    assert events[0][1:] == ("reset", {"dropped": 2, "reason": "dropped"})
    assert [e[2]["event"] for e in events[1:]] == ["client-6", "client-7", "client-8", "client-9"]
    resumed = parse(hub._backlog("a", first[2][0]))  # last seen: position 3
    assert resumed[0][1:] == ("reset", {"dropped": 3, "reason": "dropped"})
    # An id from another server start, or from the future: start over, and say so.
    for stale in ("1-2", f"{hub.epoch}-99", "junk"):
        replay = parse(hub._backlog("a", stale))
        assert replay[0][1:] == ("reset", {"dropped": None, "reason": "unknown-id"})
        assert [e[2]["event"] for e in replay[1:]][-1] == "client-9"


def test_an_audience_forgets_a_stream_that_cannot_take_more() -> None:
    audience = stream.Audience()
    good, slow = Recorder(), Recorder(accept=False)
    audience.add(good)
    audience.add(slow)
    audience.broadcast(b"x")
    assert len(audience) == 1 and good.data == b"x"
    audience.close()
    assert good.closed and len(audience) == 0


def test_a_slow_reader_is_cut_off_not_buffered_for() -> None:
    """A real socket whose peer never reads: the sink stops at its limit and aborts."""

    async def run(burst: int, slow_after: float) -> tuple[int, bool, int]:
        listener = socket.socket()
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        peer = socket.socket()
        peer.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        peer.connect(listener.getsockname())
        accepted, _ = listener.accept()
        accepted.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        loop = asyncio.get_running_loop()
        transport, _ = await loop.connect_accepted_socket(asyncio.Protocol, accepted)
        sink = StreamSink(transport, 65_536, burst, slow_after)  # type: ignore[arg-type]
        chunk = b"x" * 8192
        written = 0
        buffered = 0  # the most it held unread (an abort empties it)
        for _ in range(10_000):  # 80 MB at most: far more than any kernel buffer
            buffered = max(buffered, transport.get_write_buffer_size())
            if not sink.write(chunk):
                break
            written += len(chunk)
            await asyncio.sleep(0.001 if slow_after < 1 else 0)
        ok = sink.write(b"more")
        peer.close()
        listener.close()
        return written, ok, buffered

    # Over the burst: cut off at once.
    written, ok, buffered = asyncio.run(run(burst=131_072, slow_after=60))
    assert written < 20_000_000, "the sink kept writing to a reader that never reads"
    assert not ok and 65_536 < buffered <= 131_072 + 8192
    # Over the limit, under the burst, for longer than `slow_after`: cut off too.
    written, ok, buffered = asyncio.run(run(burst=50_000_000, slow_after=0.3))
    assert not ok and 65_536 < buffered < 20_000_000


def test_a_streaming_response_head_has_no_length_and_closes() -> None:
    head = StreamingResponse(lambda sink: lambda: None).head()
    assert head.startswith(b"HTTP/1.1 200 OK\r\n") and head.endswith(b"\r\n\r\n")
    assert b"text/event-stream" in head and b"Connection: close" in head
    assert b"Content-Length" not in head


def test_cluster_stats_roll_over_minutes_and_days_with_a_hand_set_clock() -> None:
    """A node's writes: its counts in the minute it is in; once a minute (and a day) has
    ended, that minute's (and day's) final counts once more. Two nodes' hashes merge."""
    history = StatsHistory()
    late = T0 + DAY - 2  # 23:59:58 on the first day
    history.record("a", Sample(2, messages_sent=5, api_calls=1), late)
    history.record("idle", Sample(0), late)
    before = int(late // MINUTE)
    writes = plan(history, ["a", "idle"], {before})
    assert [(w.app_id, w.minute, w.day) for w in writes] == [("a", before, int(T0 // DAY))]
    assert writes[0].minute_counts.messages_sent == 5
    history.record("a", Sample(3, messages_sent=9, api_calls=1), late + 3)  # 00:00:01
    after = int((late + 3) // MINUTE)
    assert after == before + 1
    writes = plan(history, ["a"], {before, after})
    assert [(w.minute, w.day) for w in writes] == [
        (before, int(T0 // DAY)),
        (after, int(T0 // DAY) + 1),
    ]
    old, new = writes
    assert (old.minute_counts.messages_sent, old.day_counts.messages_sent) == (5, 5)
    assert (new.minute_counts.messages_sent, new.day_counts.messages_sent) == (4, 4)
    assert (new.minute_counts.connections, new.day_counts.peak_connections) == (3, 3)
    # Args as the script takes them: node, TTLs, connections, peaks, then the counts.
    assert new.args("n1")[:6] == ["n1", 25 * 3600, 31 * 86400, 3, 3, 3]

    # What two nodes wrote into one minute's hash, summed.
    fields = {
        b"c:n1": b"3",
        b"p:n1": b"4",
        b"s:n1": b"4",
        b"c:n2": b"2",
        b"p:n2": b"2",
        b"s:n2": b"10",
        b"a:n2": b"1",
        b"peak": b"5",
    }
    minute = merge_minute(fields, alive=2)
    assert minute is not None
    assert (minute.nodes, minute.connections, minute.peak_connections) == (2, 5, 5)
    assert (minute.messages_sent, minute.api_calls) == (14, 1)
    assert merge_minute({}, alive=0) is None  # a gap
    idle = merge_minute({}, alive=2)
    assert idle is not None and idle.messages_sent == 0 and idle.nodes == 2
    day = merge_day({b"p:n1": b"7", b"peak": b"5", b"r:n1": b"3"}, alive=1)
    assert day is not None and (day.peak_connections, day.messages_received) == (7, 3)
