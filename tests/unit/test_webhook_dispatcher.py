"""The webhook dispatcher without sockets: the App on the local Adapter reports transitions,
the dispatcher debounces leaves on a fake clock, and a recording sender shows what would be
sent. Time moves only by hand (`FakeClock.advance`)."""

from __future__ import annotations

import asyncio
import heapq
import itertools
from collections.abc import Callable
from typing import Any

import orjson
import pytest

from pyserver.auth.signatures import sign, user_string_to_sign
from pyserver.channels.app import App
from pyserver.cluster import leaves
from pyserver.cluster.leaves import LeaveKey
from pyserver.cluster.local import LocalAdapter
from pyserver.config import AppConfig, WebhookTarget
from pyserver.protocol.commands import Signin, Subscribe, Unsubscribe
from pyserver.webhooks.dispatcher import WebhookDispatcher
from pyserver.webhooks.sender import Delivery
from tests.unit.fakes import FakeClient, drive

DELAY = 3.0


class FakeClock:
    """Timers and readings of the dispatcher, moved by `advance`; markers share it."""

    def __init__(self) -> None:
        self.now = 1_000.0
        self._timers: list[tuple[float, int, _Handle]] = []
        self._order = itertools.count()

    def call_later(self, delay: float, callback: Callable[[], None]) -> _Handle:
        handle = _Handle(callback)
        heapq.heappush(self._timers, (self.now + delay, next(self._order), handle))
        return handle

    def time(self) -> float:
        return self.now + 1_700_000_000

    def monotonic(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        until = self.now + seconds
        while self._timers and self._timers[0][0] <= until:
            when, _, handle = heapq.heappop(self._timers)
            self.now = when
            if not handle.cancelled:
                handle.callback()
        self.now = until


class _Handle:
    def __init__(self, callback: Callable[[], None]) -> None:
        self.callback = callback
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class RecordingSender:
    """Keeps what the dispatcher submits (the HTTP side has its own tests)."""

    retry_window = 300.0

    def __init__(self) -> None:
        self.deliveries: list[Delivery] = []

    def submit(self, delivery: Delivery) -> None:
        self.deliveries.append(delivery)

    async def close(self, grace: float) -> None:
        pass

    def events(self) -> list[tuple[Any, ...]]:
        """(name, channel or user id[, user id]) of every event sent, in order."""
        found = []
        for delivery in self.deliveries:
            for event in orjson.loads(delivery.body)["events"]:
                found.append(tuple(event[k] for k in ("name", "channel", "user_id") if k in event))
        return found

    def times(self) -> list[int]:
        return [orjson.loads(d.body)["time_ms"] for d in self.deliveries]


Setup = tuple[App, WebhookDispatcher, RecordingSender, FakeClock]


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    fake = FakeClock()
    monkeypatch.setattr(leaves.time, "monotonic", fake.monotonic)
    return fake


def _setup(clock: FakeClock, **config: Any) -> Setup:
    target = WebhookTarget(
        url="http://127.0.0.1:9/hook",
        event_types=(
            "channel_occupied",
            "channel_vacated",
            "member_added",
            "member_removed",
            "user_online",
            "user_offline",
            "cache_miss",
        ),
    )
    app_config = AppConfig(id="1", key="k", secret="s", webhooks=(target,), **config)
    adapter = LocalAdapter(leave_delay=DELAY)
    sender = RecordingSender()
    dispatcher = WebhookDispatcher(
        {"1": app_config},
        sender,  # type: ignore[arg-type]
        DELAY,
        adapter,
        clock,  # type: ignore[arg-type]
    )
    return App(app_config, adapter, dispatcher), dispatcher, sender, clock


def _presence(app: App, client: FakeClient, user: str) -> None:
    channel_data = orjson.dumps({"user_id": user, "user_info": {"n": user}}).decode()
    to_sign = f"{client.socket_id}:presence-room:{channel_data}"
    auth = f"k:{sign('s', to_sign)}"
    drive(app.subscribe(client, Subscribe("presence-room", auth, channel_data)))


def _signin(app: App, client: FakeClient, user: str) -> None:
    user_data = orjson.dumps({"id": user}).decode()
    auth = f"k:{sign('s', user_string_to_sign(client.socket_id, user_data))}"
    drive(app.signin(client, Signin(auth, user_data)))


def test_a_vacated_channel_is_reported_after_the_delay(clock: FakeClock) -> None:
    app, _, sender, _ = _setup(clock)
    client = FakeClient("1.1")
    drive(app.subscribe(client, Subscribe("room", None, None)))
    assert sender.events() == [("channel_occupied", "room")]
    left_at = int(clock.time() * 1000)
    drive(app.unsubscribe(client, Unsubscribe("room")))
    clock.advance(DELAY - 0.1)
    assert sender.events() == [("channel_occupied", "room")], "not before the delay"
    clock.advance(0.2)
    assert sender.events() == [("channel_occupied", "room"), ("channel_vacated", "room")]
    assert sender.times()[-1] == left_at, "time_ms is when the channel was left"


def test_a_reload_within_the_delay_sends_nothing(clock: FakeClock) -> None:
    app, _, sender, _ = _setup(clock)
    first, second = FakeClient("1.1"), FakeClient("1.2")
    _presence(app, first, "alice")
    _signin(app, first, "alice")
    sent = sender.events()
    assert set(sent) == {
        ("channel_occupied", "presence-room"),
        ("member_added", "presence-room", "alice"),
        ("user_online", "alice"),
    }
    drive(app.disconnected(first))
    clock.advance(DELAY / 2)
    _presence(app, second, "alice")  # the page came back
    _signin(app, second, "alice")
    clock.advance(10 * DELAY)
    assert sender.events() == sent, "no leave and no second arrival"


def test_a_return_after_the_delay_is_a_leave_and_an_arrival(clock: FakeClock) -> None:
    app, _, sender, _ = _setup(clock)
    first, second = FakeClient("1.1"), FakeClient("1.2")
    _presence(app, first, "alice")
    drive(app.disconnected(first))
    clock.advance(DELAY + 0.1)
    _presence(app, second, "alice")
    assert [e[0] for e in sender.events()] == [
        "channel_occupied",
        "member_added",
        "member_removed",
        "channel_vacated",
        "channel_occupied",
        "member_added",
    ]


def test_a_repeated_leave_restarts_the_timer(clock: FakeClock) -> None:
    app, dispatcher, sender, _ = _setup(clock)
    client = FakeClient("1.1")
    drive(app.subscribe(client, Subscribe("room", None, None)))
    drive(app.unsubscribe(client, Unsubscribe("room")))
    clock.advance(DELAY - 1)
    # the same channel left again (the marker was taken by the return and set again)
    drive(app.subscribe(client, Subscribe("room", None, None)))
    drive(app.unsubscribe(client, Unsubscribe("room")))
    assert len(dispatcher.leaves) == 1
    clock.advance(DELAY - 0.5)
    assert ("channel_vacated", "room") not in sender.events()
    clock.advance(1)
    assert sender.events().count(("channel_vacated", "room")) == 1


def test_a_leave_whose_marker_expired_is_not_sent(clock: FakeClock) -> None:
    # The dispatcher's timer is late past the marker's life (a stalled loop): nothing goes
    # out, as on a cluster where the marker lives in Redis with the same rule.
    app, dispatcher, sender, _ = _setup(clock)
    dispatcher.leaves.delay = DELAY + leaves.LEAVE_MARGIN + 1
    client = FakeClient("1.1")
    drive(app.subscribe(client, Subscribe("room", None, None)))
    drive(app.unsubscribe(client, Unsubscribe("room")))
    clock.advance(dispatcher.leaves.delay + 1)
    assert ("channel_vacated", "room") not in sender.events()


def test_close_sends_pending_leaves_at_once(clock: FakeClock) -> None:
    app, dispatcher, sender, _ = _setup(clock)
    client = FakeClient("1.1")
    _signin(app, client, "bob")
    drive(app.disconnected(client))
    assert ("user_offline", "bob") not in sender.events()
    asyncio.run(dispatcher.close(1.0))
    assert sender.events()[-1] == ("user_offline", "bob")
    # after close nothing waits for a timer any more
    other = FakeClient("1.2")
    _signin(app, other, "carol")
    drive(app.disconnected(other))
    assert sender.events()[-1] == ("user_offline", "carol")


def test_batches_collect_events_for_their_window(clock: FakeClock) -> None:
    app, _, sender, _ = _setup(clock, webhook_batch_ms=500, webhook_batch_max=3)
    clients = [FakeClient(f"1.{i}") for i in range(5)]
    for i, client in enumerate(clients[:2]):
        drive(app.subscribe(client, Subscribe(f"room-{i}", None, None)))
    assert sender.deliveries == []
    clock.advance(0.5)
    assert len(sender.deliveries) == 1
    assert sender.events() == [("channel_occupied", "room-0"), ("channel_occupied", "room-1")]
    for i, client in enumerate(clients[2:], start=2):  # three events fill a batch at once
        drive(app.subscribe(client, Subscribe(f"room-{i}", None, None)))
    assert len(sender.deliveries) == 2


def test_cache_misses_are_reported_once_per_window(clock: FakeClock) -> None:
    app, _, sender, _ = _setup(clock)
    for i in range(3):
        client = FakeClient(f"1.{i}")
        drive(app.subscribe(client, Subscribe("cache-room", None, None)))
        drive(app.unsubscribe(client, Unsubscribe("cache-room")))
    assert sender.events().count(("cache_miss", "cache-room")) == 1
    clock.advance(DELAY + 0.1)
    client = FakeClient("1.9")
    drive(app.subscribe(client, Subscribe("cache-room", None, None)))
    assert sender.events().count(("cache_miss", "cache-room")) == 2


def test_a_leave_key_round_trips_its_stored_form() -> None:
    for key in (
        LeaveKey.for_channel("a", "room"),
        LeaveKey.for_member("a", "presence-room", "u:1"),
        LeaveKey.for_user("a", "u"),
    ):
        assert LeaveKey.from_parts(key.parts()) == key
    assert LeaveKey.for_member("a", "c", "u").parts() == ("member", "a", "c", "u")
    for bad in ((), ("member", "a", "c"), ("channel", "a"), ("nope", "a", "b"), ("user", 1, 2)):
        with pytest.raises(ValueError):
            LeaveKey.from_parts(bad)  # type: ignore[arg-type]
