"""History through every stock client: the rules of tests/history/test_live.py that it runs on
pusher-js 8 only, here on pusher-js 8 and 7, and Laravel Echo (on either pusher-js) for
catch-up after a dropped socket, several tabs and client events (whispers) kept or not.

One `local` server for the module (the Redis topologies are covered by test_live.py for the
same rules on pusher-js 8); each test uses its own channel names.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.history.test_live import (
    APP,
    CONFIG,
    ENV,
    api,
    channel_history,
    join,
    name,
    trigger,
    wait_numbers,
)
from tests.integration.conftest import Deployment, deploy
from tests.integration.jsdriver import JsDriver, js_deps_installed

pytestmark = pytest.mark.skipif(not js_deps_installed(), reason="npm ci in tests/js")

VERSIONS = ["8", "7"]

_echos = itertools.count()


@pytest.fixture(scope="module")
def hist() -> Iterator[Deployment]:
    deployment = deploy(CONFIG, "local", env=ENV)
    yield deployment
    deployment.stop()


@pytest.fixture(scope="module")
def js() -> Iterator[JsDriver]:
    with JsDriver() as driver:
        yield driver


def replayed(js: JsDriver, client: str, channel: str) -> list[tuple[str, Any]]:
    """Every channel event but the subscription's own, in order: what the app sees."""
    return [
        (e["event"], e["data"])
        for e in js.events(client)
        if e["type"] == "channel"
        and e["channel"] == channel
        and not e["event"].startswith("pusher:subscription")
        and not e["event"].startswith("pusher_internal:")
    ]


# --- pusher-js 8 and 7 -------------------------------------------------------------------------


@pytest.mark.parametrize("version", VERSIONS)
def test_several_tabs_recover_from_the_earliest_position(
    hist: Deployment, js: JsDriver, version: str
) -> None:
    """Tab 1 drops first, tab 2 reads two more and drops: both tabs back get everything from
    where tab 1 stopped (the user's earliest confirmed position), once and in order."""
    channel = name("presence-room-")
    backend = api(hist)
    tab1, tab2 = join(js, hist, channel, "bob", version), join(js, hist, channel, "bob", version)
    trigger(backend, channel, range(2))
    wait_numbers(js, tab1, channel, 2)
    wait_numbers(js, tab2, channel, 2)
    time.sleep(2.5)  # a ping and its pong confirm 0..1 on both
    js.call("disconnect", client=tab1)
    time.sleep(0.3)
    trigger(backend, channel, range(2, 4))  # only tab 2 gets these
    assert wait_numbers(js, tab2, channel, 4) == [0, 1, 2, 3]
    time.sleep(2.5)
    js.call("disconnect", client=tab2)
    time.sleep(0.3)
    trigger(backend, channel, range(4, 6))
    back1 = join(js, hist, channel, "bob", version)
    back2 = join(js, hist, channel, "bob", version)
    assert wait_numbers(js, back1, channel, 4) == [2, 3, 4, 5]
    assert wait_numbers(js, back2, channel, 4) == [2, 3, 4, 5]
    trigger(backend, channel, range(6, 7))
    assert wait_numbers(js, back1, channel, 5) == [2, 3, 4, 5, 6]
    assert wait_numbers(js, back2, channel, 5) == [2, 3, 4, 5, 6]
    for client in (back1, back2):
        js.call("disconnect", client=client)


@pytest.mark.parametrize("version", VERSIONS)
def test_a_gap_that_is_gone_is_announced_then_rewound(
    hist: Deployment, js: JsDriver, version: str
) -> None:
    channel = name("presence-short-")
    backend = api(hist)
    first = join(js, hist, channel, "cy", version)
    trigger(backend, channel, range(1))
    wait_numbers(js, first, channel, 1)
    js.call("disconnect", client=first)
    time.sleep(0.3)
    trigger(backend, channel, range(1, 6))  # 5 events, the channel keeps 3
    again = join(js, hist, channel, "cy", version)
    js.wait(again, type="channel", channel=channel, event="m", count=1)
    time.sleep(0.3)
    assert replayed(js, again, channel) == [
        ("pusher:recovery_failed", {"reason": "limit"}),
        ("m", {"n": 5}),
    ]
    js.call("disconnect", client=again)


@pytest.mark.parametrize("version", VERSIONS)
def test_client_events_are_kept_and_caught_up_only_where_the_rule_says(
    hist: Deployment, js: JsDriver, version: str
) -> None:
    """A client event on a `client_events = true` channel is stored (with its user) and part
    of another member's catch-up; on a `client_events = false` channel it is neither."""
    kept, dropped = name("presence-room-"), name("private-quiet-")
    reader = join(js, hist, kept, "rex", version)
    js.subscribe(reader, dropped)
    time.sleep(2.5)  # the reader's subscriptions are confirmed (nothing to confirm yet)
    js.call("disconnect", client=reader)
    time.sleep(0.3)
    sender = join(js, hist, kept, "eve", version)
    js.subscribe(sender, dropped)
    assert js.call("client_event", client=sender, channel=kept, event="client-m", data={"n": 1})
    assert js.call("client_event", client=sender, channel=dropped, event="client-m", data={"n": 2})
    time.sleep(0.5)
    backend = api(hist)
    page = channel_history(backend, kept)
    assert [(e["event"], e["data"], e.get("user_id")) for e in page["events"]] == [
        ("client-m", '{"n":1}', "eve")
    ]
    assert channel_history(backend, dropped)["events"] == []
    trigger(backend, kept, range(2, 3))
    back = join(js, hist, kept, "rex", version)
    js.subscribe(back, dropped)
    js.wait(back, type="channel", channel=kept, event="m", count=1)
    time.sleep(0.3)
    assert replayed(js, back, kept) == [("client-m", {"n": 1}), ("m", {"n": 2})]
    assert replayed(js, back, dropped) == []  # rewind 5, but client events were never kept
    for client in (sender, back):
        js.call("disconnect", client=client)


# --- Laravel Echo ------------------------------------------------------------------------------


def echo(js: JsDriver, deployment: Deployment, user: str, version: str) -> str:
    client = f"echo{next(_echos)}"
    js.call(
        "echo_connect",
        client=client,
        key=APP.key,
        secret=APP.secret,
        app_id=APP.id,
        port=deployment.port,
        user_id=user,
        version=version,
    )
    return client


def echo_join(js: JsDriver, client: str, room: str) -> None:
    """Joins `presence-<room>` with a listener for `m` bound before the subscription."""
    js.call("echo_listen", client=client, kind="presence", name=room, event=".m")
    js.call("echo_join", client=client, name=room)


def echo_numbers(js: JsDriver, client: str, channel: str, count: int | None = None) -> list[int]:
    if count is not None:
        js.wait(client, type="echo_event", channel=channel, event=".m", count=count)
    return [
        e["data"]["n"]
        for e in js.events(client)
        if e["type"] == "echo_event" and e["channel"] == channel and e["event"] == ".m"
    ]


@pytest.mark.parametrize("version", VERSIONS)
def test_catch_up_after_a_dropped_socket_through_echo(
    hist: Deployment, js: JsDriver, version: str
) -> None:
    room = name("room-")
    channel = f"presence-{room}"
    backend = api(hist)
    first = echo(js, hist, "ann", version)
    echo_join(js, first, room)
    trigger(backend, channel, range(3))
    assert echo_numbers(js, first, channel, 3) == [0, 1, 2]
    time.sleep(2.5)  # a ping and its pong confirm what the client received
    js.call("disconnect", client=first)
    time.sleep(0.3)
    trigger(backend, channel, range(3, 7))
    again = echo(js, hist, "ann", version)
    echo_join(js, again, room)
    trigger(backend, channel, range(7, 9))
    assert echo_numbers(js, again, channel, 6) == [3, 4, 5, 6, 7, 8]
    time.sleep(0.3)
    assert echo_numbers(js, again, channel) == [3, 4, 5, 6, 7, 8]
    js.call("disconnect", client=again)


@pytest.mark.parametrize("version", VERSIONS)
def test_several_echo_tabs_recover_from_the_earliest_position(
    hist: Deployment, js: JsDriver, version: str
) -> None:
    room = name("room-")
    channel = f"presence-{room}"
    backend = api(hist)
    tab1, tab2 = echo(js, hist, "bea", version), echo(js, hist, "bea", version)
    echo_join(js, tab1, room)
    echo_join(js, tab2, room)
    trigger(backend, channel, range(2))
    echo_numbers(js, tab1, channel, 2)
    echo_numbers(js, tab2, channel, 2)
    time.sleep(2.5)
    js.call("disconnect", client=tab1)
    time.sleep(0.3)
    trigger(backend, channel, range(2, 4))
    assert echo_numbers(js, tab2, channel, 4) == [0, 1, 2, 3]
    time.sleep(2.5)
    js.call("disconnect", client=tab2)
    time.sleep(0.3)
    trigger(backend, channel, range(4, 6))
    back1, back2 = echo(js, hist, "bea", version), echo(js, hist, "bea", version)
    echo_join(js, back1, room)
    echo_join(js, back2, room)
    assert echo_numbers(js, back1, channel, 4) == [2, 3, 4, 5]
    assert echo_numbers(js, back2, channel, 4) == [2, 3, 4, 5]
    for client in (back1, back2):
        js.call("disconnect", client=client)


def test_echo_whispers_are_kept_only_where_the_rule_says(hist: Deployment, js: JsDriver) -> None:
    """`whisper` sends `client-<event>`: stored on a `client_events = true` channel with the
    whisperer's user id, not on a `client_events = false` one."""
    room, quiet = name("room-"), name("quiet-")
    sender = echo(js, hist, "wes", "8")
    js.call("echo_join", client=sender, name=room)
    js.call("echo_private", client=sender, name=quiet)
    js.call(
        "echo_whisper", client=sender, name=room, event="typing", data={"n": 1}, kind="presence"
    )
    js.call("echo_whisper", client=sender, name=quiet, event="typing", data={"n": 2})
    time.sleep(0.5)
    backend = api(hist)
    page = channel_history(backend, f"presence-{room}")
    assert [(e["event"], e["data"], e.get("user_id")) for e in page["events"]] == [
        ("client-typing", '{"n":1}', "wes")
    ]
    assert channel_history(backend, f"private-{quiet}")["events"] == []
    js.call("disconnect", client=sender)
