"""The bookkeeping behind catch-up, with plain calls: what a pong confirms, when a busy
connection is probed anyway, where several tabs recover from, and what a tagged frame carries.
The end-to-end behaviour is in test_live.py."""

from __future__ import annotations

import asyncio

from pyserver.config import HistoryRule
from pyserver.history.live import AppHistory, NodeHistory
from pyserver.history.memory import MemoryHistoryStore
from pyserver.protocol.history import ConnectionHistory, Position, RuleBook, tag, untag
from pyserver.protocol.session import PusherSession, Tick


def pos(serial: int, epoch: str = "e1") -> Position:
    return Position(epoch, serial, 1000 + serial)


def test_a_pong_confirms_only_what_was_written_before_its_ping() -> None:
    history = ConnectionHistory("t")
    history.track("chat", pos(3))
    latest = {"chat": pos(7)}
    payload = history.start_probe(latest.get)
    latest["chat"] = pos(9)  # written after the ping
    history.ponged(b"not-this-probe")
    assert history.delivered() == {"chat": pos(3)}
    history.ponged(payload)
    assert history.delivered() == {"chat": pos(7)}


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
    for _ in range(6):
        session.active = True  # the client talks all the time
        outcomes.append(session.tick(3, 6, now=0.0))
    assert outcomes.count(Tick.PING) == 0  # nothing to confirm yet
    session.history.track("chat", pos(1))
    outcomes = []
    for _ in range(6):
        session.active = True
        outcomes.append(session.tick(3, 6, now=0.0))
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
    now = 100.0

    def __call__(self) -> float:
        return self.now


def app_history(clock: Clock) -> AppHistory:
    rule = HistoryRule(channels="presence-*", recovery_window=60)
    node = NodeHistory(MemoryHistoryStore(1 << 20), clock=clock)
    return AppHistory(node, "app", RuleBook([rule]))


def drop(history: AppHistory, user: str, channel: str, position: Position) -> None:
    session = PusherSession()
    session.open("1.1", 30, now=0.0, auth_timeout=0.0)
    history.new_connection(session)
    session.subscribing(channel, user)
    session.joined(channel)
    assert session.history is not None
    session.history.track(channel, position)
    history.dropped(session)


def test_every_returning_tab_recovers_from_the_earliest_drop() -> None:
    clock = Clock()
    history = app_history(clock)
    drop(history, "u", "presence-a", pos(4))
    drop(history, "u", "presence-a", pos(9))
    drop(history, "u", "presence-a", pos(6))
    assert [history._take_drop("u", "presence-a") for _ in range(4)] == [
        pos(4),
        pos(4),
        pos(4),
        None,
    ]


def test_drops_expire_with_the_recovery_window() -> None:
    clock = Clock()
    history = app_history(clock)
    drop(history, "u", "presence-a", pos(4))
    clock.now += 61
    history.tick()
    assert history.drops == {}
    assert history._take_drop("u", "presence-a") is None


def test_a_resume_token_is_good_once_for_its_app() -> None:
    clock = Clock()
    history = app_history(clock)
    session = PusherSession()
    session.open("1.1", 30, now=0.0, auth_timeout=0.0)
    history.new_connection(session)
    assert session.history is not None
    token = session.history.token
    session.subscribing("presence-a", "u")
    session.joined("presence-a")
    session.history.track("presence-a", pos(5))
    history.dropped(session)
    assert history.node.take_token(token, "other-app") is None
    history.dropped(session)
    assert history.node.take_token(token, "app") == {"presence-a": pos(5)}
    assert history.node.take_token(token, "app") is None


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
