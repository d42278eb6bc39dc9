"""History across two nodes sharing one Redis, end to end with unmodified pusher-js and the
Python SDK: the history API on either node sees what was triggered through the other, and a
presence user whose node goes away (stopped with SIGTERM: its clients see 4200; or killed
with SIGKILL: only its standing drops in Redis are left) comes back on the other node and
catches up, while a second tab of a user connected elsewhere still gets its rewind.

Each test starts its own pair of nodes (one of them is stopped or killed).
"""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Iterator
from typing import Any

import pusher
import pytest

from tests.history.test_live import (
    APP,
    channel_history,
    join,
    name,
    numbers,
    trigger,
    wait_numbers,
)
from tests.integration.conftest import Deployment, deploy
from tests.integration.jsdriver import JsDriver, js_deps_installed
from tests.integration.serverproc import ServerProcess

needs_js = pytest.mark.skipif(not js_deps_installed(), reason="npm ci in tests/js")

CONFIG = """
[[apps]]
id = "2001"
key = "hist-key"
secret = "hist-secret"

[[apps.history]]
channels = "chat-*"
limit = 50

[[apps.history]]
channels = "presence-room-*"
limit = 100
rewind = 0

[[apps.history]]
channels = "presence-context-*"
limit = 100
rewind = 3
"""

ENV = {"PYSERVER_ACTIVITY_TIMEOUT": "1", "PYSERVER_PONG_TIMEOUT": "1"}
"""Pings (and so delivery confirmations) every second."""


@pytest.fixture
def pair() -> Iterator[Deployment]:
    deployment = deploy(CONFIG, "redis", env=ENV)
    yield deployment
    deployment.stop()


@pytest.fixture(scope="module")
def js() -> Iterator[JsDriver]:
    with JsDriver() as driver:
        yield driver


def api(node: ServerProcess) -> pusher.Pusher:
    return pusher.Pusher(
        app_id=APP.id, key=APP.key, secret=APP.secret, host="127.0.0.1", port=node.port, ssl=False
    )


def on(node: ServerProcess) -> Deployment:
    """WebSocket clients on `node`."""
    return Deployment([node])


def test_the_history_api_on_either_node_includes_events_triggered_through_the_other(
    pair: Deployment,
) -> None:
    a, b = pair.nodes
    channel = name("chat-")
    trigger(api(a), channel, range(3))
    trigger(api(b), channel, range(3, 6))
    trigger(api(a), channel, range(6, 8))
    pages = [channel_history(api(node), channel, direction="forward") for node in (a, b)]
    for page in pages:
        assert [json.loads(e["data"])["n"] for e in page["events"]] == list(range(8))
    assert pages[0]["events"] == pages[1]["events"]  # the same positions on both nodes
    newest: dict[str, Any] = channel_history(api(a), channel, limit=1)
    assert json.loads(newest["events"][0]["data"]) == {"n": 7}


@needs_js
def test_a_user_of_a_node_stopped_gracefully_catches_up_on_the_other(
    pair: Deployment, js: JsDriver
) -> None:
    a, b = pair.nodes
    channel = name("presence-room-")
    backend = api(b)
    first = join(js, on(a), channel, "ann")
    trigger(backend, channel, range(5))
    assert wait_numbers(js, first, channel, 5) == [0, 1, 2, 3, 4]
    time.sleep(2.5)  # a ping and its pong confirm 0..4
    assert a.stop(signal.SIGTERM) == 0
    told = [e for e in js.events(first) if e["type"] == "conn_error"]
    assert any("4200" in json.dumps(e) for e in told), told  # "reconnect elsewhere"
    js.call("disconnect", client=first)  # its node is gone: it would retry it forever
    trigger(backend, channel, range(5, 12))  # while the user is away
    again = join(js, on(b), channel, "ann")
    trigger(backend, channel, range(12, 14))
    assert wait_numbers(js, again, channel, 9) == list(range(5, 14))
    time.sleep(0.3)
    assert numbers(js, again, channel) == list(range(5, 14))  # each once, in order
    js.call("disconnect", client=again)


@needs_js
def test_a_user_of_a_killed_node_catches_up_on_the_other(pair: Deployment, js: JsDriver) -> None:
    """SIGKILL: the node never sees its connections close, so it writes no drop; what it
    kept in Redis while the user was connected stands in for one."""
    a, b = pair.nodes
    channel = name("presence-room-")
    backend = api(b)
    first = join(js, on(a), channel, "bea")
    trigger(backend, channel, range(5))
    assert wait_numbers(js, first, channel, 5) == [0, 1, 2, 3, 4]
    time.sleep(2.5)  # pongs confirm 0..4
    trigger(backend, channel, range(5, 8))  # received, maybe never confirmed
    assert wait_numbers(js, first, channel, 8) == list(range(8))
    a.stop(signal.SIGKILL)
    js.call("disconnect", client=first)
    trigger(backend, channel, range(8, 14))  # while the user is away
    again = join(js, on(b), channel, "bea")
    trigger(backend, channel, range(14, 16))
    js.wait(again, type="channel", channel=channel, event="m", data={"n": 15})
    got = numbers(js, again, channel)
    # Every event at least once, in order, none missing: a catch-up may start up to one
    # ping window early (duplicates of what the first connection had), never late.
    assert got and got[0] <= 8 and got == list(range(got[0], 16)), got
    js.call("disconnect", client=again)


@needs_js
def test_a_second_tab_of_a_user_connected_elsewhere_still_gets_the_rewind(
    pair: Deployment, js: JsDriver
) -> None:
    """The first tab's standing drop may serve the second tab's subscription (the server
    cannot tell a second tab from a return after a crash): it then gets no less than the
    rewind, and the first tab keeps its own drop."""
    a, b = pair.nodes
    channel = name("presence-context-")
    backend = api(b)
    first = join(js, on(a), channel, "cid")
    trigger(backend, channel, range(6))
    assert wait_numbers(js, first, channel, 6) == list(range(6))
    time.sleep(2.5)  # pongs confirm 0..5 and refresh the standing drop
    second = join(js, on(b), channel, "cid")
    assert wait_numbers(js, second, channel, 3) == [3, 4, 5]
    time.sleep(2.5)  # the first tab's standing drop comes back with its next pong
    trigger(backend, channel, range(6, 8))
    assert wait_numbers(js, second, channel, 5) == [3, 4, 5, 6, 7]
    assert wait_numbers(js, first, channel, 8) == list(range(8))
    a.stop(signal.SIGKILL)
    js.call("disconnect", client=first)
    trigger(backend, channel, range(8, 10))
    again = join(js, on(b), channel, "cid")
    js.wait(again, type="channel", channel=channel, event="m", data={"n": 9})
    got = numbers(js, again, channel)
    assert got[0] <= 8 and got == list(range(got[0], 10)), got
    for client in (second, again):
        js.call("disconnect", client=client)
