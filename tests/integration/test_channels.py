"""Issue item 4: public, private, presence and encrypted channels over raw frames, with
signatures made by the official Python SDK."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json

import nacl.secret
import pytest

from tests.integration.conftest import MASTER_KEY, SMALL, PusherSocket
from tests.integration.httpapi import signed_post


def _presence(message: dict) -> dict:
    assert message["event"] == "pusher_internal:subscription_succeeded", message
    return json.loads(message["data"])["presence"]


def test_public_subscribe_needs_no_auth(connect, uid) -> None:
    s: PusherSocket = connect()
    assert s.subscribe(f"public-{uid}") == {
        "event": "pusher_internal:subscription_succeeded",
        "channel": f"public-{uid}",
        "data": "{}",
    }
    assert s.subscribe(f"other-{uid}", auth="")["event"] == (
        "pusher_internal:subscription_succeeded"
    )


def test_private_subscribe_with_valid_signature(connect, uid) -> None:
    s = connect()
    assert s.signed_subscribe(f"private-{uid}")["event"] == (
        "pusher_internal:subscription_succeeded"
    )


@pytest.mark.parametrize("auth", [None, "", "app-key:" + "0" * 64, "wrong-key:abc", "garbage"])
def test_private_subscribe_refused_without_a_valid_signature(connect, uid, auth) -> None:
    s = connect()
    error = s.subscribe(f"private-{uid}", auth=auth)
    assert error["event"] == "pusher:error" and error["data"]["code"] is None
    sub_error = s.recv()
    assert sub_error["event"] == "pusher:subscription_error"
    assert sub_error["channel"] == f"private-{uid}"
    assert sub_error["data"]["status"] == 401
    s.send_json({"event": "pusher:ping"})  # the connection stays usable
    assert s.recv()["event"] == "pusher:pong"


def test_bad_signature_message_names_the_string_to_sign(connect, uid) -> None:
    s = connect()
    error = s.subscribe(f"private-{uid}", auth="app-key:" + "0" * 64)
    assert f"{s.socket_id}:private-{uid}" in error["data"]["message"]


def test_signature_for_another_socket_is_refused(connect, uid) -> None:
    a, b = connect(), connect()
    from tests.integration.conftest import sdk

    auth = sdk(1).authenticate(channel=f"private-{uid}", socket_id=a.socket_id)
    assert b.subscribe(f"private-{uid}", auth=auth["auth"])["event"] == "pusher:error"


def test_presence_subscription_lists_members_deduplicated(connect, uid) -> None:
    channel = f"presence-{uid}"
    a, a2, b = connect(), connect(), connect()
    assert _presence(a.signed_subscribe(channel, "u1", {"name": "first"})) == {
        "ids": ["u1"],
        "hash": {"u1": {"name": "first"}},
        "count": 1,
    }
    # a second tab of the same user: no member_added, first user_info kept
    assert _presence(a2.signed_subscribe(channel, "u1", {"name": "second tab"}))["count"] == 1
    a.assert_silent()
    presence = _presence(b.signed_subscribe(channel, "u2"))
    assert presence["count"] == 2
    assert presence["hash"] == {"u1": {"name": "first"}, "u2": None}
    assert sorted(presence["ids"]) == ["u1", "u2"]
    added = a.recv()
    assert added == {
        "event": "pusher_internal:member_added",
        "channel": channel,
        "data": json.dumps({"user_id": "u2", "user_info": None}, separators=(",", ":")),
    }
    assert a2.recv()["event"] == "pusher_internal:member_added"
    b.assert_silent()


def test_member_removed_once_when_the_last_tab_leaves(connect, uid) -> None:
    channel = f"presence-{uid}"
    watcher, tab1, tab2 = connect(), connect(), connect()
    watcher.signed_subscribe(channel, "w")
    tab1.signed_subscribe(channel, "u")
    tab2.signed_subscribe(channel, "u")
    assert watcher.recv()["event"] == "pusher_internal:member_added"
    watcher.assert_silent()
    tab1.send_json({"event": "pusher:unsubscribe", "data": {"channel": channel}})
    watcher.assert_silent(0.5)
    tab2.close()  # a dropped connection leaves like an unsubscribe
    removed = watcher.recv()
    assert removed["event"] == "pusher_internal:member_removed"
    assert json.loads(removed["data"]) == {"user_id": "u"}


def test_numeric_user_id_is_normalised_to_a_string(connect, uid) -> None:
    s = connect()
    presence = _presence(s.signed_subscribe(f"presence-{uid}", 42, {"n": 1}))
    assert presence["ids"] == ["42"] and "42" in presence["hash"]


@pytest.mark.parametrize(
    "channel_data",
    [
        '{"user_info":{}}',
        '"just a string"',
        "not json",
        '{"user_id":""}',
        '{"user_id":true}',
        '{"user_id":"%s"}' % ("u" * 129),  # over 128 characters (spec 5.6)
    ],
)
def test_presence_channel_data_must_carry_a_user_id(connect, uid, channel_data) -> None:
    s = connect()
    channel = f"presence-{uid}"
    # sign the exact channel_data so only its content is at fault
    digest = hmac.new(
        b"app-secret", f"{s.socket_id}:{channel}:{channel_data}".encode(), hashlib.sha256
    ).hexdigest()
    signature = f"app-key:{digest}"
    error = s.subscribe(channel, auth=signature, channel_data=channel_data)
    assert error["event"] == "pusher:error"
    assert s.recv()["event"] == "pusher:subscription_error"


def test_user_info_over_1kb_is_refused(connect, uid) -> None:
    s = connect()
    error = s.signed_subscribe(f"presence-{uid}", "u", {"blob": "x" * 1100})
    assert error["event"] == "pusher:error" and "1024" in error["data"]["message"]


def test_presence_member_limit(server, uid) -> None:
    channel = f"presence-{uid}"
    sockets = [PusherSocket(server.port, SMALL) for _ in range(3)]
    try:
        assert _presence(sockets[0].signed_subscribe(channel, "a"))["count"] == 1
        assert _presence(sockets[1].signed_subscribe(channel, "b"))["count"] == 2
        error = sockets[2].signed_subscribe(channel, "c")
        assert error["event"] == "pusher:error" and "full" in error["data"]["message"]
        sub_error = sockets[2].recv()
        assert sub_error["data"]["status"] == 403
    finally:
        for s in sockets:
            s.close()


def test_encrypted_channel_events_are_relayed_untouched(connect, uid, server, py_sdk) -> None:
    s = connect()
    channel = f"private-encrypted-{uid}"
    assert s.signed_subscribe(channel)["event"] == "pusher_internal:subscription_succeeded"
    payload = json.dumps({"nonce": "bm9uY2U=", "ciphertext": "Y2lwaGVy"})
    status, _ = signed_post(
        server.api_port,
        "/apps/1001/events",
        {"name": "secret", "channel": channel, "data": payload},
    )
    assert status == 200
    assert s.recv() == {"event": "secret", "channel": channel, "data": payload}
    # and what the official SDK encrypts decrypts on the client side
    py_sdk.trigger(channel, "sealed", {"msg": "hi"})
    data = json.loads(s.recv()["data"])
    shared = hashlib.sha256(channel.encode() + base64.b64decode(MASTER_KEY)).digest()
    plain = nacl.secret.SecretBox(shared).decrypt(
        base64.b64decode(data["ciphertext"]), base64.b64decode(data["nonce"])
    )
    assert json.loads(plain) == {"msg": "hi"}


def test_unsubscribe_stops_delivery(connect, uid, py_sdk) -> None:
    s = connect()
    channel = f"c-{uid}"
    s.subscribe(channel)
    py_sdk.trigger(channel, "one", {"n": 1})
    assert s.recv()["event"] == "one"
    s.send_json({"event": "pusher:unsubscribe", "data": {"channel": channel}})
    s.send_json({"event": "pusher:ping"})
    assert s.recv()["event"] == "pusher:pong"
    py_sdk.trigger(channel, "two", {"n": 2})
    s.assert_silent()
    assert py_sdk.channel_info(channel)["occupied"] is False


@pytest.mark.parametrize(
    "name",
    ["has space", "slash/no", "é", "x" * 201, "#hash", "#server-to-user-someone-else"],
)
def test_invalid_or_forbidden_channel_names_get_an_error(connect, name) -> None:
    s = connect()
    error = s.subscribe(name)
    assert error["event"] == "pusher:error"
    assert s.recv()["event"] == "pusher:subscription_error"


def test_dash_less_prefix_is_a_public_channel(connect, uid) -> None:
    s = connect()
    assert s.subscribe(f"privatex{uid}")["event"] == "pusher_internal:subscription_succeeded"
    assert s.subscribe(f"my-private-{uid}")["event"] == "pusher_internal:subscription_succeeded"


def test_duplicate_subscribe_is_reported_like_hosted_pusher(connect, uid) -> None:
    s = connect()
    s.subscribe(f"c-{uid}")
    error = s.subscribe(f"c-{uid}")
    assert error["event"] == "pusher:error"
    assert error["data"]["message"] == f"Existing subscription to c-{uid}"
