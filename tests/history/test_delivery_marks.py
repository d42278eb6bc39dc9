"""The bookkeeping behind catch-up, with plain calls: what a pong confirms, when a busy
connection is probed anyway, where several tabs recover from, and what a tagged frame carries.
The end-to-end behaviour is in test_live.py."""

from __future__ import annotations

import asyncio
import itertools
import uuid
from collections.abc import Callable
from typing import Any

import orjson
import pytest
from redis.asyncio import Redis

from pyserver.channels.registry import ChannelRegistry
from pyserver.config import HistoryRule
from pyserver.history.live import AppHistory, Drop, MemoryMarks, NodeHistory, RecoveryMarks
from pyserver.history.memory import MemoryHistoryStore
from pyserver.history.redis import RedisMarks
from pyserver.protocol.history import ConnectionHistory, Position, RuleBook, tag, untag
from pyserver.protocol.session import PusherSession, Tick
from pyserver.protocol.websocket import text_frame


def pos(serial: int, epoch: str = "e1") -> Position:
    return Position(epoch, serial, 1000 + serial)


def test_a_pong_confirms_only_what_was_written_before_its_ping() -> None:
    history = ConnectionHistory("t")
    history.track("chat", pos(3))
    latest = {"chat": pos(7)}
    payload = history.start_probe(latest.get)
    latest["chat"] = pos(9)  # written after the ping
    history.ponged(b"not-this-probe")
    assert history.delivered() == {"chat": pos(3)} and history.unanswered
    history.ponged(payload)
    assert history.delivered() == {"chat": pos(7)} and not history.unanswered


def test_an_older_pong_confirms_nothing() -> None:
    history = ConnectionHistory("t")
    history.track("chat", pos(1))
    first = history.start_probe(lambda _: pos(2))
    history.start_probe(lambda _: pos(5))
    history.ponged(first)  # answers a ping the newest probe replaced
    assert history.delivered() == {"chat": pos(1)}


def test_a_new_epoch_replaces_the_mark() -> None:
    history = ConnectionHistory("t")
    history.track("chat", pos(40))
    history.ponged(history.start_probe(lambda _: pos(2, "e2")))
    assert history.delivered() == {"chat": pos(2, "e2")}


def test_an_active_history_connection_is_probed_every_ping_interval() -> None:
    session = PusherSession()
    session.open("1.1", 30, now=0.0, auth_timeout=0.0)
    session.history = ConnectionHistory("t")
    outcomes = []
    for at in range(6):
        session.heard = at  # the client talks all the time
        outcomes.append(session.tick(3, 6, now=0.0, at=at))
    assert outcomes.count(Tick.PING) == 0  # nothing to confirm yet
    session.history.track("chat", pos(1))
    outcomes = []
    for at in range(6, 12):
        session.heard = at
        outcomes.append(session.tick(3, 6, now=0.0, at=at))
    assert outcomes.count(Tick.PING) == 2


def test_leaving_a_channel_forgets_its_mark() -> None:
    session = PusherSession()
    session.open("1.1", 30, now=0.0, auth_timeout=0.0)
    session.history = ConnectionHistory("t")
    session.subscribing("chat", None)
    session.joined("chat")
    session.history.track("chat", pos(1))
    session.leave("chat")
    assert session.history.delivered() == {}


def test_a_tagged_frame_round_trips() -> None:
    frame = b"\x81\x05hello"
    assert untag(tag(pos(12345), frame)) == (pos(12345), frame)
    assert tag(pos(1), frame)[0] == 0  # never the first byte of a WebSocket frame


class Clock:
    """Wall-clock seconds, moved by hand (both marks take their clock from here)."""

    now = 1_760_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(params=["memory", "redis"])
def marks(request: pytest.FixtureRequest) -> Callable[[Clock], RecoveryMarks]:
    def build(clock: Clock) -> RecoveryMarks:
        if request.param == "memory":
            return MemoryMarks(clock)
        server = request.getfixturevalue("redis_server")
        prefix = f"m{uuid.uuid4().hex[:8]}"
        return RedisMarks(Redis.from_url(server.url), prefix, clock)

    return build


def app_history(clock: Clock, marks: RecoveryMarks | None = None) -> AppHistory:
    rule = HistoryRule(channels="presence-*", recovery_window=60)
    node = NodeHistory(MemoryHistoryStore(1 << 20), clock=clock, marks=marks)
    return AppHistory(node, "app", RuleBook([rule]))


_sockets = itertools.count(1)


async def drop(history: AppHistory, user: str, channel: str, position: Position) -> str:
    session = PusherSession()
    session.open(f"{next(_sockets)}.1", 30, now=0.0, auth_timeout=0.0)
    history.new_connection(session)
    session.subscribing(channel, user)
    session.joined(channel)
    assert session.history is not None
    session.history.track(channel, position)
    work = history.dropped(session)
    assert work is not None
    await work
    return session.history.token


def test_every_returning_tab_recovers_from_the_earliest_drop(
    marks: Callable[[Clock], RecoveryMarks],
) -> None:
    async def run() -> list[Position | None]:
        clock = Clock()
        kept = marks(clock)
        history = app_history(clock, kept)
        for serial in (4, 9, 6):
            await drop(history, "u", "presence-a", pos(serial))
        return [await kept.take_drop("app", "u", "presence-a") for _ in range(4)]

    assert asyncio.run(run()) == [pos(4), pos(4), pos(4), None]


def test_drops_expire_with_the_recovery_window(marks: Callable[[Clock], RecoveryMarks]) -> None:
    async def run() -> Position | None:
        clock = Clock()
        kept = marks(clock)
        history = app_history(clock, kept)
        await drop(history, "u", "presence-a", pos(4))
        clock.now += 61
        kept.purge()
        return await kept.take_drop("app", "u", "presence-a")

    assert asyncio.run(run()) is None


def test_a_resume_token_is_good_once_for_its_app(marks: Callable[[Clock], RecoveryMarks]) -> None:
    async def run() -> None:
        clock = Clock()
        kept = marks(clock)
        history = app_history(clock, kept)
        token = await drop(history, "u", "presence-a", pos(5))
        assert await kept.take_token(token, "other-app") is None  # and it is gone
        token = await drop(history, "u", "presence-a", pos(5))
        assert await kept.take_token(token, "app") == {"presence-a": pos(5)}
        assert await kept.take_token(token, "app") is None
        token = await drop(history, "u", "presence-a", pos(6))
        clock.now += 61
        assert await kept.take_token(token, "app") is None

    asyncio.run(run())


def test_a_standing_drop_is_replaced_by_its_refresh_and_its_drop_and_withdrawn(
    redis_server: Any,
) -> None:
    """Shared marks keep a live subscription's drop in advance (for a node that dies without
    seeing its connections close): one member per subscription, whatever happens to it."""

    async def run() -> None:
        clock = Clock()
        kept = RedisMarks(Redis.from_url(redis_server.url), f"m{uuid.uuid4().hex[:8]}", clock)
        standing = Drop("u", "presence-a", 70, pos(3), "1.1")
        await kept.stand("app", [standing])
        await kept.stand("app", [Drop("u", "presence-a", 70, pos(5), "1.1")])  # refreshed
        assert await kept.take("app", "u", "presence-a") == (pos(5), True)
        assert await kept.take_drop("app", "u", "presence-a") is None  # one member, used up
        await kept.stand("app", [standing, Drop("u", "presence-a", 70, pos(2), "2.2")])
        await kept.withdraw("app", [("u", "presence-a", "2.2")])  # unsubscribed
        drops = [Drop("u", "presence-a", 60, pos(4), "1.1")]
        await kept.keep("app", drops, "t", {"presence-a": (60, pos(4))})
        assert await kept.take("app", "u", "presence-a") == (pos(4), False)  # the drop replaced it
        assert await kept.take_drop("app", "u", "presence-a") is None
        await kept.stand("app", [standing])
        clock.now += 71  # a standing drop no refresh renewed
        assert await kept.take_drop("app", "u", "presence-a") is None
        await kept.redis.aclose()

    asyncio.run(run())


def test_record_in_memory_publishes_a_tagged_frame_after_storing() -> None:
    history = app_history(Clock())
    rule = history.rule_for("presence-a")
    assert rule is not None
    published: list[tuple[str, bytes, str | None]] = []
    work = history.record(
        "presence-a", rule, b'{"event":"m"}', None, lambda *a: published.append(a)
    )
    assert work is None
    ((channel, tagged, excluded),) = published
    position, frame = untag(tagged)
    assert channel == "presence-a" and excluded is None and frame.endswith(b'{"event":"m"}')
    replay = asyncio.run(history.store.last("app", "presence-a", rule, 5))
    assert [e.position for e in replay.entries] == [position]


class FakeClient:
    def __init__(self, socket_id: str) -> None:
        self.socket_id = socket_id
        self.session = PusherSession()
        self.got: list[bytes] = []

    def send(self, frame: bytes) -> None:
        self.got.append(frame)

    def send_message(self, payload: bytes) -> None:
        self.got.append(text_frame(payload))


class GatedStore(MemoryHistoryStore):
    """Rewind reads wait for the test to open their gate (so replays overlap)."""

    def __init__(self) -> None:
        super().__init__(1 << 20)
        self.gates: list[asyncio.Event] = []

    async def last(self, *args: Any, **kw: Any) -> Any:
        gate = asyncio.Event()
        self.gates.append(gate)
        await gate.wait()
        return await super().last(*args, **kw)


def test_overlapping_replays_get_every_event_once_and_the_hold_list_is_trimmed() -> None:
    async def run() -> None:
        store = GatedStore()
        rule = HistoryRule(channels="chat-*", rewind=2)
        history = AppHistory(NodeHistory(store), "app", RuleBook([rule]))
        registry = ChannelRegistry()
        registry.held = history.holds

        def publish(n: int) -> None:
            payload = f'{{"event":"m","channel":"chat-1","data":"{n}"}}'.encode()
            history.record("chat-1", rule, payload, None, registry.broadcast)

        publish(0)
        a, b = FakeClient("1.1"), FakeClient("2.2")
        join_a = asyncio.create_task(
            history.join(a, "chat-1", rule, None, lambda: registry.add("chat-1", a))
        )
        await asyncio.sleep(0)
        publish(1)  # held for a
        join_b = asyncio.create_task(
            history.join(b, "chat-1", rule, None, lambda: registry.add("chat-1", b))
        )
        await asyncio.sleep(0)
        publish(2)  # held for both
        store.gates[0].set()
        await join_a
        publish(3)  # live for a, held for b
        assert len(history.holds["chat-1"]) == 2  # 1 is needed by no pending replay
        store.gates[1].set()
        await join_b
        publish(4)
        assert history.holds == {}
        for client in (a, b):
            data = [orjson.loads(f[2:])["data"] for f in client.got]
            assert data == sorted(set(data)), data
            assert data[-1] == "4" and data == [str(n) for n in range(int(data[0]), 5)]

    asyncio.run(run())


class CountingStore:
    """A store that suspends on every read (as Redis does) and counts its rewind reads."""

    completes_synchronously = False

    def __init__(self) -> None:
        self.inner = MemoryHistoryStore(1 << 20)
        self.reads = 0

    async def last(self, *args: Any) -> Any:
        self.reads += 1
        await asyncio.sleep(0.01)
        return await self.inner.last(*args)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def test_identical_reads_in_flight_are_merged() -> None:
    async def run() -> None:
        store = CountingStore()
        rule = HistoryRule(channels="chat-*", rewind=2)
        history = AppHistory(NodeHistory(store), "app", RuleBook([rule]))  # type: ignore[arg-type]
        store.inner.append_now("app", "chat-1", rule, b'{"event":"m","data":"x"}', 0)
        clients = [FakeClient(f"{n}.1") for n in range(5)]
        await asyncio.gather(
            *(history.join(c, "chat-1", rule, None, lambda: None) for c in clients)
        )
        assert store.reads == 1
        assert all(len(c.got) == 1 for c in clients)

    asyncio.run(run())


def test_a_floor_keeps_replayed_events_from_arriving_again_live() -> None:
    registry = ChannelRegistry()
    fresh, old = FakeClient("1.1"), FakeClient("2.2")
    registry.add("chat-1", old)
    registry.add("chat-1", fresh)
    registry.floors["chat-1"] = {fresh: pos(5)}
    for serial in (4, 5, 6, 7):
        registry.broadcast("chat-1", tag(pos(serial), b"\x81\x01" + str(serial).encode()))
    assert [f[2:] for f in old.got] == [b"4", b"5", b"6", b"7"]
    assert [f[2:] for f in fresh.got] == [b"6", b"7"]
    assert registry.floors == {}
