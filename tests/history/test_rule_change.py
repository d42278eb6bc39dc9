"""Changing an app's history rules while replays are queued (`App.use_history`), without
sockets: the app store changes the app between a subscription's replay being queued in the
pump and its end. The subscriber must still get every live event broadcast meanwhile, once
and in order, and a leave must still cancel its replay."""

from __future__ import annotations

import itertools
from typing import Any

import orjson
import pytest

from pyserver.apps.records import StoredApp
from pyserver.channels.app import App
from pyserver.channels.observer import Observers
from pyserver.cluster.local import LocalAdapter
from pyserver.config import AppConfig, HistoryRule
from pyserver.history.live import NodeHistory
from pyserver.history.memory import MemoryHistoryStore
from pyserver.history.pump import ReplayPump
from pyserver.protocol.commands import Subscribe, Unsubscribe
from pyserver.server.live_apps import LiveApps
from tests.unit.fakes import FakeClient, drive

CHANNEL = "chat-1"
REWIND = HistoryRule(channels="chat-*", limit=1000, rewind=1000)


class Loop:
    """A hand-turned loop for the pump; its clock moves on at every read, so each turn's
    budget covers a few hundred frames and a long rewind takes several turns."""

    def __init__(self) -> None:
        self.ready: list[Any] = []
        self.ticks = itertools.count()

    def call_soon(self, callback: Any) -> None:
        self.ready.append(callback)

    def clock(self) -> float:
        return next(self.ticks) * 1e-4

    def turn(self) -> None:
        ready, self.ready = self.ready, []
        for callback in ready:
            callback()


class World:
    def __init__(self) -> None:
        self.loop = Loop()
        node = NodeHistory(MemoryHistoryStore(1 << 24))
        node.pump = ReplayPump(0.002, self.loop.clock, self.loop.call_soon)
        self.live = LiveApps(LocalAdapter(0), Observers(), history=node)
        self.change(REWIND)
        self.published = 0

    @property
    def app(self) -> App:
        return self.live.by_id["1"]

    def change(self, *rules: HistoryRule) -> None:
        config = AppConfig(id="1", key="k", secret="s", history=rules)
        self.live.app_changed(StoredApp(config=config))

    def trigger(self, count: int = 1) -> None:
        for _ in range(count):
            drive(self.app.trigger("m", [CHANNEL], str(self.published), None))
            self.published += 1

    def subscribe(self, client: FakeClient) -> None:
        self.app.connected(client)
        drive(self.app.subscribe(client, Subscribe(CHANNEL, None, None)))

    def run(self) -> None:
        while self.loop.ready:
            self.trigger()  # live, between two slices of the replay
            self.loop.turn()


def data(client: FakeClient) -> list[str]:
    events = (orjson.loads(f if f[:1] == b"{" else f[2:]) for f in client.sent)
    return [e["data"] for e in events if e["event"] == "m"]


@pytest.mark.parametrize(
    "rules",
    [
        (HistoryRule(channels="chat-*", limit=500, rewind=2),),  # the channel's rule changed
        (HistoryRule(channels="other-*"),),  # the channel lost its history
        (),  # the app has no history any more
    ],
    ids=["changed", "other-channels", "none"],
)
def test_a_replay_queued_before_a_rule_change_gets_every_live_event_after_it(
    rules: tuple[HistoryRule, ...],
) -> None:
    world = World()
    world.trigger(1000)
    first, second = FakeClient("1.1"), FakeClient("2.2")
    world.subscribe(first)
    world.subscribe(second)
    assert world.app.history is not None and world.app.history.replays  # queued
    world.change(*rules)
    world.run()
    world.trigger(2)  # once everyone is in the fan-out
    for client in (first, second):
        assert data(client) == [str(n) for n in range(world.published)]
        assert client in world.app.registry.channels[CHANNEL].subscribers
    if world.app.history is not None:
        assert world.app.history.holds == {} and world.app.history.replays == {}


def test_a_leave_after_a_rule_change_cancels_the_queued_replay() -> None:
    world = World()
    world.trigger(1000)
    first, leaving = FakeClient("1.1"), FakeClient("2.2")
    world.subscribe(first)
    world.subscribe(leaving)
    world.change(HistoryRule(channels="chat-*", limit=1000, rewind=5))
    drive(world.app.unsubscribe(leaving, Unsubscribe(CHANNEL)))
    got = len(data(leaving))
    world.run()
    assert len(data(leaving)) == got < 1000  # no more of its replay, no live event
    assert data(first) == [str(n) for n in range(world.published)]
    history = world.app.history
    assert history is not None and history.holds == {} and history.replays == {}
    assert world.app.registry.held == {}  # nothing pinned: the fan-out's fast path is back
