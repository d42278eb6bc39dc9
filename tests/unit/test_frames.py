"""Server frames, byte for byte against the JSON in spec/protocol.md §4b."""

from __future__ import annotations

import orjson

from pyserver.protocol import frames
from pyserver.protocol.errors import ClientEventRateLimited, PongNotReceived, SubscriptionAuthError


def test_connection_established_has_string_data() -> None:
    assert frames.connection_established("123.456", 120) == (
        b'{"event":"pusher:connection_established",'
        b'"data":"{\\"socket_id\\":\\"123.456\\",\\"activity_timeout\\":120}"}'
    )


def test_error_frame_with_and_without_code() -> None:
    assert frames.error("Client event rejected due to rate limit", 4301) == (
        b'{"event":"pusher:error","data":'
        b'{"message":"Client event rejected due to rate limit","code":4301}}'
    )
    assert frames.error("Existing subscription to x", None) == (
        b'{"event":"pusher:error","data":{"message":"Existing subscription to x","code":null}}'
    )


def test_pong_and_ping() -> None:
    assert frames.PONG_FRAME == b'{"event":"pusher:pong","data":{}}'
    assert frames.PING_FRAME == b'{"event":"pusher:ping","data":{}}'


def test_subscription_succeeded() -> None:
    assert frames.subscription_succeeded("x") == (
        b'{"event":"pusher_internal:subscription_succeeded","channel":"x","data":"{}"}'
    )


def test_presence_subscription_succeeded() -> None:
    payload = frames.presence_subscription_succeeded("presence-x", {"1": {"name": "a"}, "2": None})
    assert payload == (
        b'{"event":"pusher_internal:subscription_succeeded","channel":"presence-x",'
        b'"data":"{\\"presence\\":{\\"ids\\":[\\"1\\",\\"2\\"],'
        b'\\"hash\\":{\\"1\\":{\\"name\\":\\"a\\"},\\"2\\":null},\\"count\\":2}}"}'
    )


def test_member_added_and_removed() -> None:
    assert frames.member_added("presence-x", "1", {"n": 1}) == (
        b'{"event":"pusher_internal:member_added","channel":"presence-x",'
        b'"data":"{\\"user_id\\":\\"1\\",\\"user_info\\":{\\"n\\":1}}"}'
    )
    assert frames.member_removed("presence-x", "1") == (
        b'{"event":"pusher_internal:member_removed","channel":"presence-x",'
        b'"data":"{\\"user_id\\":\\"1\\"}"}'
    )


def test_subscription_count_cache_miss_signin_watchlist() -> None:
    assert frames.subscription_count("x", 3) == (
        b'{"event":"pusher_internal:subscription_count","channel":"x",'
        b'"data":"{\\"subscription_count\\":3}"}'
    )
    assert frames.cache_miss("cache-x") == b'{"event":"pusher:cache_miss","channel":"cache-x"}'
    assert frames.signin_success('{"id":"42"}') == (
        b'{"event":"pusher:signin_success","data":{"user_data":"{\\"id\\":\\"42\\"}"}}'
    )
    assert frames.watchlist_events([("online", ["2", "3"])]) == (
        b'{"event":"pusher_internal:watchlist_events",'
        b'"data":"{\\"events\\":[{\\"name\\":\\"online\\",\\"user_ids\\":[\\"2\\",\\"3\\"]}]}"}'
    )


def test_channel_event_keeps_data_verbatim_and_adds_user_id_only_when_given() -> None:
    assert frames.channel_event("my-event", "x", '{"some":"data"}') == (
        b'{"event":"my-event","channel":"x","data":"{\\"some\\":\\"data\\"}"}'
    )
    assert frames.channel_event("client-a", "presence-x", "hi", "7") == (
        b'{"event":"client-a","channel":"presence-x","data":"hi","user_id":"7"}'
    )


def test_errors_map_to_frames_in_one_place() -> None:
    rate = frames.for_error(ClientEventRateLimited())
    assert [orjson.loads(m)["data"]["code"] for m in rate] == [4301]
    assert ClientEventRateLimited.closes is False
    assert PongNotReceived.closes is True and PongNotReceived.code == 4201
    auth = frames.for_error(SubscriptionAuthError("private-x", "bad"))
    assert [orjson.loads(m)["event"] for m in auth] == ["pusher:error", "pusher:subscription_error"]
    assert orjson.loads(auth[1]) == {
        "event": "pusher:subscription_error",
        "channel": "private-x",
        "data": {"type": "AuthError", "error": "bad", "status": 401},
    }
