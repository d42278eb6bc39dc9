"""App behaviour without sockets: subscription-count throttle, observer calls, presence dedupe."""

from __future__ import annotations

import asyncio

import orjson

from pyserver.auth.signatures import sign, user_string_to_sign
from pyserver.channels import app as app_module
from pyserver.channels.app import App
from pyserver.channels.observer import AppObserver
from pyserver.cluster.adapter import CountChange
from pyserver.cluster.local import LocalAdapter
from pyserver.config import AppConfig
from pyserver.protocol.commands import Signin, Subscribe, Unsubscribe
from tests.unit.fakes import FakeClient, drive


class Recorder(AppObserver):
    def __init__(self) -> None:
        self.calls: list[tuple[str, ...]] = []

    def channel_occupied(self, app_id: str, channel: str) -> None:
        self.calls.append(("occupied", channel))

    def channel_vacated(self, app_id: str, channel: str) -> None:
        self.calls.append(("vacated", channel))

    def subscription_count(self, app_id: str, channel: str, count: int) -> None:
        self.calls.append(("count", channel, str(count)))


def _counts(client: FakeClient) -> list[int]:
    counts = []
    for frame in client.sent:
        message = orjson.loads(frame[2:] if frame[:1] == b"\x81" else frame)
        if message["event"] == "pusher_internal:subscription_count":
            counts.append(orjson.loads(message["data"])["subscription_count"])
    return counts


def test_subscription_count_is_throttled_above_100(monkeypatch) -> None:
    now = [1000.0]
    monkeypatch.setattr(app_module.time, "monotonic", lambda: now[0])
    recorder = Recorder()
    app = App(
        AppConfig(id="1", key="k", secret="s", subscription_count=True), LocalAdapter(), recorder
    )
    clients = [FakeClient(f"{i}.0") for i in range(103)]
    for client in clients:
        drive(app.subscribe(client, Subscribe("room", None, None)))
    first = clients[0]
    # every change up to 100 is sent at once; above it at most one per 5 s
    assert _counts(first)[:100] == list(range(1, 101))
    assert _counts(first)[100:] == [101]
    now[0] += 2
    app.tick()
    assert _counts(first)[100:] == [101]
    now[0] += 3
    app.tick()
    assert _counts(first)[100:] == [101, 103]
    # the subscription_count webhook follows the same throttle (spec 12.3)
    webhook_counts = [int(c[2]) for c in recorder.calls if c[0] == "count"]
    assert webhook_counts == [*range(1, 102), 103]
    assert ("occupied", "room") in recorder.calls
    for client in clients:
        drive(app.unsubscribe(client, Unsubscribe("room")))
    assert recorder.calls[-2:] == [("vacated", "room"), ("count", "room", "0")]


def test_no_counts_when_switched_off() -> None:
    app = App(AppConfig(id="1", key="k", secret="s"), LocalAdapter())
    client = FakeClient("1.0")
    drive(app.subscribe(client, Subscribe("room", None, None)))
    assert _counts(client) == []


def test_a_switched_off_watchlist_is_silent_even_over_the_limit() -> None:
    config = AppConfig(id="1", key="k", secret="s", watchlist=False, max_watchlist=1)
    app = App(config, LocalAdapter())
    client = FakeClient("1.0")  # its report() fails the test on any pusher:error
    user_data = orjson.dumps({"id": "u", "watchlist": ["a", "b"]}).decode()
    auth = "k:" + sign("s", user_string_to_sign(client.socket_id, user_data))
    drive(app.signin(client, Signin(auth, user_data)))
    events = [orjson.loads(frame)["event"] for frame in client.sent]
    assert events == ["pusher:signin_success"]


class SlowAdapter(LocalAdapter):
    """The local adapter, suspending in `subscribe` like the Redis one does."""

    completes_synchronously = False

    async def subscribe(self, app_id: str, channel: str, socket_id: str) -> CountChange:
        await asyncio.sleep(0.01)
        return await super().subscribe(app_id, channel, socket_id)


def test_a_kick_during_a_pending_subscribe_runs_after_it() -> None:
    async def scenario() -> tuple[App, FakeClient, SlowAdapter]:
        adapter = SlowAdapter()
        app = App(AppConfig(id="1", key="k", secret="s"), adapter)
        client = FakeClient("1.1")
        app.connected(client)
        client.busy = True  # the connection runs the subscribe as its handler...
        subscribing = asyncio.ensure_future(app.subscribe(client, Subscribe("room", None, None)))
        await asyncio.sleep(0)
        app.kick("room", None, "1.1")  # ... when the API kicks that socket
        await subscribing
        client.busy = False
        for action in client.queued:
            work = action()
            if work is not None:
                await work
        return app, client, adapter

    app, client, adapter = asyncio.run(scenario())
    events = [orjson.loads(frame)["event"] for frame in client.sent]
    assert events == ["pusher_internal:subscription_succeeded", "pusher:subscription_error"]
    assert client.channels == {}
    assert list(app.registry.subscribers("room")) == []
    assert adapter._counts == {}, "the subscribe and the kick's leave balance out"
