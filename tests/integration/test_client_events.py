"""Issue item 5: client events, their gates, payload rules and the rate limit."""

from __future__ import annotations

import json

import pytest

from tests.integration.conftest import QUIET, PusherSocket


def _pair(connect, channel: str, presence: bool = False) -> tuple[PusherSocket, PusherSocket]:
    a, b = connect(), connect()
    for sock, user in ((a, "alice"), (b, "bob")):
        reply = sock.signed_subscribe(channel, user if presence else None)
        assert reply["event"] == "pusher_internal:subscription_succeeded", reply
    if presence:
        assert a.recv()["event"] == "pusher_internal:member_added"
    return a, b


def test_client_event_reaches_others_and_is_not_echoed(connect, uid) -> None:
    channel = f"private-{uid}"
    a, b = _pair(connect, channel)
    c = connect()
    c.signed_subscribe(channel)
    a.send_json({"event": "client-typing", "channel": channel, "data": {"x": 1}})
    expected = {"event": "client-typing", "channel": channel, "data": '{"x":1}'}
    assert b.recv() == expected
    assert c.recv() == expected
    a.assert_silent()


def test_string_data_is_forwarded_verbatim(connect, uid) -> None:
    channel = f"private-{uid}"
    a, b = _pair(connect, channel)
    a.send_json({"event": "client-msg", "channel": channel, "data": "plain text"})
    assert b.recv()["data"] == "plain text"


def test_presence_client_event_carries_the_sender_user_id(connect, uid) -> None:
    channel = f"presence-{uid}"
    a, b = _pair(connect, channel, presence=True)
    a.send_json({"event": "client-hi", "channel": channel, "data": {}})
    message = b.recv()
    assert message == {"event": "client-hi", "channel": channel, "data": "{}", "user_id": "alice"}


@pytest.mark.parametrize("kind", ["public", "encrypted", "unsubscribed"])
def test_client_events_refused_where_not_allowed(connect, uid, kind) -> None:
    s, other = connect(), connect()
    if kind == "public":
        channel = f"pub-{uid}"
        s.subscribe(channel)
        other.subscribe(channel)
    elif kind == "encrypted":
        channel = f"private-encrypted-{uid}"
        s.signed_subscribe(channel)
        other.signed_subscribe(channel)
    else:
        channel = f"private-{uid}"
        other.signed_subscribe(channel)
    s.send_json({"event": "client-x", "channel": channel, "data": {}})
    error = s.recv()
    assert error["event"] == "pusher:error" and error["data"]["code"] == 4301
    other.assert_silent()


def test_only_client_prefixed_events_are_accepted(connect, uid) -> None:
    channel = f"private-{uid}"
    a, b = _pair(connect, channel)
    a.send_json({"event": "typing", "channel": channel, "data": {}})
    assert a.recv()["event"] == "pusher:error"
    b.assert_silent()


def test_client_event_over_10kb_is_refused(connect, uid) -> None:
    channel = f"private-{uid}"
    a, b = _pair(connect, channel)
    a.send_json({"event": "client-big", "channel": channel, "data": "x" * 10_300})
    error = a.recv()
    assert error["data"]["code"] == 4301 and "10240" in error["data"]["message"]
    b.assert_silent()


def test_client_event_name_over_200_characters_is_refused(connect, uid) -> None:
    channel = f"private-{uid}"
    a, b = _pair(connect, channel)
    a.send_json({"event": "client-" + "x" * 194, "channel": channel, "data": {}})
    error = a.recv()
    assert error["data"]["code"] == 4301 and "200" in error["data"]["message"]
    b.assert_silent()
    a.send_json({"event": "client-" + "x" * 193, "channel": channel, "data": {}})
    assert b.recv()["event"] == "client-" + "x" * 193


def test_rate_limit_sends_4301_and_keeps_the_connection(connect, uid) -> None:
    channel = f"private-{uid}"
    a, b = _pair(connect, channel)
    for i in range(15):
        a.send_json({"event": "client-n", "channel": channel, "data": {"i": i}})
    received = []
    for _ in range(10):
        received.append(json.loads(b.recv()["data"])["i"])
    assert received == list(range(10))
    errors = [a.recv() for _ in range(5)]
    assert all(e["event"] == "pusher:error" and e["data"]["code"] == 4301 for e in errors)
    b.assert_silent()
    a.send_json({"event": "pusher:ping"})
    assert a.recv()["event"] == "pusher:pong"  # still connected


def test_app_switch_turns_client_events_off(server, uid) -> None:
    channel = f"private-{uid}"
    a, b = PusherSocket(server.port, QUIET), PusherSocket(server.port, QUIET)
    try:
        a.signed_subscribe(channel)
        b.signed_subscribe(channel)
        a.send_json({"event": "client-x", "channel": channel, "data": {}})
        error = a.recv()
        assert error["data"]["code"] == 4301 and "not enabled" in error["data"]["message"]
        b.assert_silent()
    finally:
        a.close()
        b.close()
