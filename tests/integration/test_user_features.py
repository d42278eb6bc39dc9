"""Issue 3 through real clients: sign-in, server-to-user, terminate, watchlist, cache channels,
subscription counts, presence from the signed-in user, authorized connections, kick, and
Laravel Echo presence and whispers."""

from __future__ import annotations

import itertools
import json
import time

import pytest

from tests.integration.conftest import (
    AUTHZ,
    COUNTED,
    MAIN,
    SMALL,
    PusherSocket,
    node_sdk,
    sdk,
)
from tests.integration.httpapi import signed_post
from tests.integration.jsdriver import JsDriver, JsDriverError

_names = itertools.count()


@pytest.fixture
def client(pusher_js):
    return pusher_js


def _signed_in(js: JsDriver, name: str) -> None:
    js.call("signin", client=name, wait=True, timeout_ms=5000)


# --- 1. sign-in ------------------------------------------------------------------------------


@pytest.mark.parametrize("version", ["8", "7"])
def test_pusher_js_signin_and_send_to_user(js, server, client, uid, version) -> None:
    alice = client(version, {"id": f"alice-{uid}", "user_info": {"name": "A"}})
    alice_tab2 = client(version, {"id": f"alice-{uid}"})
    bob = client(version, {"id": f"bob-{uid}"})
    for name in (alice, alice_tab2, bob):
        _signed_in(js, name)
    bob_mark = js.mark(bob)
    # the Node SDK's sendToUser and the Python SDK's send_to_user reach every tab of alice
    assert node_sdk(js, server, "sendToUser", f"alice-{uid}", "hello", {"n": 1})["status"] == 200
    sdk(server.api_port).send_to_user(f"alice-{uid}", "hello", {"n": 2})
    for name in (alice, alice_tab2):
        entries = js.wait(name, type="user", event="hello", count=2)
        assert [e["data"]["n"] for e in entries] == [1, 2]
    with pytest.raises(JsDriverError):
        js.wait(bob, since=bob_mark, timeout_ms=300, type="user", event="hello")


def test_signin_raw_frames(connect, uid) -> None:
    s: PusherSocket = connect()
    user_data = json.dumps({"id": f"raw-{uid}", "user_info": {"x": 1}})
    auth = sdk(1).authenticate_user(s.socket_id, json.loads(user_data))
    s.send_json({"event": "pusher:signin", "data": auth})
    success = s.recv()
    assert success == {"event": "pusher:signin_success", "data": {"user_data": auth["user_data"]}}
    # a second sign-in as another user is refused; the connection stays usable
    other = sdk(1).authenticate_user(s.socket_id, {"id": f"other-{uid}"})
    s.send_json({"event": "pusher:signin", "data": other})
    error = s.recv()
    assert error["event"] == "pusher:error" and "already signed in" in error["data"]["message"]
    # and a bad signature is refused without closing
    s.send_json(
        {"event": "pusher:signin", "data": {"auth": "app-key:" + "0" * 64, "user_data": user_data}}
    )
    assert s.recv()["event"] == "pusher:error"
    s.send_json({"event": "pusher:ping"})
    assert s.recv()["event"] == "pusher:pong"


@pytest.mark.parametrize("user_data", [{"name": "no id"}, {"id": ""}, {"id": "bad id!"}])
def test_signin_needs_a_valid_user_id(connect, user_data) -> None:
    s = connect()
    raw = json.dumps(user_data)
    import hashlib
    import hmac

    sig = hmac.new(
        b"app-secret", f"{s.socket_id}::user::{raw}".encode(), hashlib.sha256
    ).hexdigest()
    s.send_json({"event": "pusher:signin", "data": {"auth": f"app-key:{sig}", "user_data": raw}})
    assert s.recv()["event"] == "pusher:error"


# --- 2. server-to-user channel rules --------------------------------------------------------


def test_server_to_user_channel_only_for_that_user(connect, uid) -> None:
    s = connect()
    assert s.subscribe(f"#server-to-user-{uid}", auth="")["event"] == "pusher:error"
    auth = sdk(1).authenticate_user(s.socket_id, {"id": f"me-{uid}"})
    s.send_json({"event": "pusher:signin", "data": auth})
    s.recv_event("pusher:signin_success")
    assert s.subscribe(f"#server-to-user-other-{uid}", auth="")["event"] == "pusher:error"
    s.recv()  # its subscription_error
    reply = s.subscribe(f"#server-to-user-me-{uid}", auth="")
    assert reply["event"] == "pusher_internal:subscription_succeeded"


# --- 3. terminate ---------------------------------------------------------------------------


def test_terminate_closes_signed_in_connections_only(js, server, client, uid) -> None:
    user = f"t-{uid}"
    signed = client("8", {"id": user})
    _signed_in(js, signed)
    # a presence-only connection using the same id is untouched
    presence_only = client("8")
    js.call("set_presence", client=presence_only, user_id=user)
    watcher = client("8")
    js.call("set_presence", client=watcher, user_id=f"w-{uid}")
    js.call("set_presence", client=signed, user_id=f"{user}-tab")
    room = f"presence-room-{uid}"
    for name in (watcher, signed, presence_only):
        assert js.subscribe(name, room)["succeeded"]
    mark = js.mark(watcher)
    assert node_sdk(js, server, "terminateUserConnections", user)["status"] == 200
    (_state,) = js.wait(signed, type="state", current="disconnected", timeout_ms=5000)
    assert js.call("state", client=presence_only)["state"] == "connected"
    (removed,) = js.wait(watcher, since=mark, type="channel", event="pusher:member_removed")
    assert removed["data"]["id"] == f"{user}-tab"


def test_python_sdk_terminate_closes_with_4009(connect, server, uid) -> None:
    s = connect()
    auth = sdk(1).authenticate_user(s.socket_id, {"id": f"py-{uid}"})
    s.send_json({"event": "pusher:signin", "data": auth})
    s.recv_event("pusher:signin_success")
    assert sdk(server.api_port).terminate_user_connections(f"py-{uid}") == {}
    error = s.recv()
    assert error["event"] == "pusher:error" and error["data"]["code"] == 4009
    assert s.expect_close().code == 4009


# --- 4. watchlist ---------------------------------------------------------------------------


def test_pusher_js_watchlist_online_and_offline(js, server, client, uid) -> None:
    friend = f"friend-{uid}"
    already = f"already-{uid}"
    early = client("8", {"id": already})
    _signed_in(js, early)
    watcher = client("8", {"id": f"watcher-{uid}", "watchlist": [friend, already]})
    _signed_in(js, watcher)
    (initial,) = js.wait(watcher, type="watchlist", event="online")
    assert initial["data"]["user_ids"] == [already]
    js.wait(watcher, type="watchlist", event="offline")  # the friend, not yet online
    mark = js.mark(watcher)
    friend_client = client("8", {"id": friend})
    _signed_in(js, friend_client)
    (online,) = js.wait(watcher, since=mark, type="watchlist", event="online")
    assert online["data"]["user_ids"] == [friend]
    js.call("disconnect", client=friend_client)
    (offline,) = js.wait(watcher, since=mark, type="watchlist", event="offline")
    assert offline["data"]["user_ids"] == [friend]


def test_watchlist_over_the_limit_keeps_the_first_and_sends_4302(server, uid) -> None:
    s = PusherSocket(server.port, SMALL)
    try:
        auth = sdk(1, SMALL).authenticate_user(
            s.socket_id, {"id": f"w-{uid}", "watchlist": ["a", "b", "c"]}
        )
        s.send_json({"event": "pusher:signin", "data": auth})
        assert s.recv()["event"] == "pusher:signin_success"
        messages = [s.recv(), s.recv()]
        error = next(m for m in messages if m["event"] == "pusher:error")
        assert error["data"]["code"] == 4302
        events = next(m for m in messages if m["event"] == "pusher_internal:watchlist_events")
        assert json.loads(events["data"]) == {
            "events": [{"name": "offline", "user_ids": ["a", "b"]}]
        }
    finally:
        s.close()


# --- 5. cache channels ----------------------------------------------------------------------


def test_cache_channel_miss_then_last_event(js, server, client, uid) -> None:
    channel = f"cache-{uid}"
    first = client("8")
    assert js.subscribe(first, channel)["succeeded"]
    js.wait(first, type="channel", channel=channel, event="pusher:cache_miss")
    node_sdk(js, server, "trigger", channel, "price", {"v": 1})
    node_sdk(js, server, "trigger", channel, "price", {"v": 2})
    late = client("7")
    assert js.subscribe(late, channel)["succeeded"]
    (cached,) = js.wait(late, type="channel", channel=channel, event="price")
    assert cached["data"] == {"v": 2}
    info = sdk(server.api_port).channel_info(channel, ["cache"])
    assert info["occupied"] is True
    assert json.loads(info["cache"]["data"]) == {"v": 2} and 0 < info["cache"]["ttl"] <= 1800


def test_client_events_are_not_cached(connect, uid) -> None:
    channel = f"private-cache-{uid}"
    a, b = connect(), connect()
    a.signed_subscribe(channel)
    assert a.recv()["event"] == "pusher:cache_miss"
    b.signed_subscribe(channel)
    assert b.recv()["event"] == "pusher:cache_miss"
    a.send_json({"event": "client-x", "channel": channel, "data": {}})
    b.recv()
    c = connect()
    c.signed_subscribe(channel)
    assert c.recv()["event"] == "pusher:cache_miss"


# --- 6. subscription counts -----------------------------------------------------------------


def test_pusher_js_subscription_count_binding(js, server, uid) -> None:
    channel = f"counted-{uid}"
    a, b = f"count-a-{uid}", f"count-b-{uid}"
    js.connect(a, server.port, COUNTED.key, COUNTED.secret, COUNTED.id, "8")
    js.connect(b, server.port, COUNTED.key, COUNTED.secret, COUNTED.id, "7")
    assert js.subscribe(a, channel)["succeeded"]
    (first,) = js.wait(a, type="channel", event="pusher:subscription_count")
    assert first["data"]["subscription_count"] == 1
    mark = js.mark(a)
    assert js.subscribe(b, channel)["succeeded"]
    (second,) = js.wait(a, since=mark, type="channel", event="pusher:subscription_count")
    assert second["data"]["subscription_count"] == 2
    js.call("disconnect", client=b)
    entries = js.wait(a, since=mark, type="channel", event="pusher:subscription_count", count=2)
    assert entries[1]["data"]["subscription_count"] == 1
    js.call("disconnect", client=a)


def test_no_subscription_count_on_presence(connect, uid) -> None:
    s = connect(COUNTED)
    s.signed_subscribe(f"presence-nc-{uid}", "u")
    s.assert_silent()
    assert s.subscribe(f"plain-{uid}")["event"] == "pusher_internal:subscription_succeeded"
    assert s.recv()["event"] == "pusher_internal:subscription_count"


# --- 7. presence from the signed-in user ----------------------------------------------------


@pytest.mark.parametrize("version", ["8", "7"])
def test_presence_without_channel_data_joins_as_signed_in_user(js, client, uid, version) -> None:
    name = client(version, {"id": f"si-{uid}", "user_info": {"role": "admin"}})
    _signed_in(js, name)
    js.call("set_presence", client=name, from_signin=True)
    channel = f"presence-si-{uid}"
    assert js.subscribe(name, channel)["succeeded"]
    members = js.call("members", client=name, channel=channel)
    assert members["me"]["id"] == f"si-{uid}"
    assert members["members"] == {f"si-{uid}": {"role": "admin"}}


def test_signed_in_user_info_obeys_the_presence_limits(connect, uid) -> None:
    big = connect()
    auth = sdk(1).authenticate_user(
        big.socket_id, {"id": f"big-{uid}", "user_info": {"b": "x" * 2000}}
    )
    big.send_json({"event": "pusher:signin", "data": auth})
    assert big.recv()["event"] == "pusher:signin_success"
    channel = f"presence-big-{uid}"
    error = big.subscribe(channel, auth=sdk(1).authenticate(channel, big.socket_id)["auth"])
    assert error["event"] == "pusher:error" and "1024" in error["data"]["message"]
    assert big.recv()["event"] == "pusher:subscription_error"
    # user_info nested too deeply to be written into presence frames is refused at sign-in,
    # so it can never poison a presence channel for everyone else
    deep = connect()
    nested: list = []
    for _ in range(300):
        nested = [nested]
    auth = sdk(1).authenticate_user(deep.socket_id, {"id": f"deep-{uid}", "user_info": nested})
    deep.send_json({"event": "pusher:signin", "data": auth})
    error = deep.recv()
    assert error["event"] == "pusher:error" and "255 levels" in error["data"]["message"]


# --- 8. authorized connections --------------------------------------------------------------


def test_unauthorized_connection_is_closed_with_4009(server) -> None:
    idle = PusherSocket(server.port, AUTHZ)
    private = PusherSocket(server.port, AUTHZ)
    signed = PusherSocket(server.port, AUTHZ)
    try:
        assert private.signed_subscribe("private-ok")["event"] == (
            "pusher_internal:subscription_succeeded"
        )
        auth = sdk(1, AUTHZ).authenticate_user(signed.socket_id, {"id": "x"})
        signed.send_json({"event": "pusher:signin", "data": auth})
        assert signed.recv()["event"] == "pusher:signin_success"
        started = time.monotonic()
        closed = idle.expect_close(timeout=6)
        assert closed.code == 4009 and time.monotonic() - started < 5
        for sock in (private, signed):
            sock.send_json({"event": "pusher:ping"})
            assert sock.recv()["event"] == "pusher:pong"
    finally:
        for sock in (idle, private, signed):
            sock.close()


def test_authorized_connections_are_off_by_default(connect) -> None:
    s = connect()
    time.sleep(1.5)
    s.send_json({"event": "pusher:ping"})
    assert s.recv()["event"] == "pusher:pong"


# --- 9. kick (extension) --------------------------------------------------------------------


def test_kick_a_user_from_a_channel(js, server, client, uid) -> None:
    channel = f"presence-kick-{uid}"
    victim, other = client("8"), client("8")
    js.call("set_presence", client=victim, user_id=f"v-{uid}")
    js.call("set_presence", client=other, user_id=f"o-{uid}")
    assert js.subscribe(victim, channel)["succeeded"]
    assert js.subscribe(other, channel)["succeeded"]
    mark = js.mark(other)
    status, body = signed_post(
        server.api_port, f"/apps/1001/channels/{channel}/unsubscribe", {"user_id": f"v-{uid}"}
    )
    assert (status, body) == (200, {})
    (notice,) = js.wait(victim, type="channel", channel=channel, event="pusher:subscription_error")
    assert notice["data"]["type"] == "Kicked"
    (removed,) = js.wait(other, since=mark, type="channel", event="pusher:member_removed")
    assert removed["data"]["id"] == f"v-{uid}"
    victim_mark = js.mark(victim)
    node_sdk(js, server, "trigger", channel, "after-kick", {})
    js.wait(other, type="channel", event="after-kick")
    with pytest.raises(JsDriverError):
        js.wait(victim, since=victim_mark, timeout_ms=300, type="channel", event="after-kick")


def test_kick_by_socket_id_and_bad_requests(connect, server, uid) -> None:
    s = connect()
    s.subscribe(f"k-{uid}")
    path = f"/apps/1001/channels/k-{uid}/unsubscribe"
    assert signed_post(server.api_port, path, {"socket_id": s.socket_id})[0] == 200
    kicked = s.recv()
    assert kicked["event"] == "pusher:subscription_error"
    # the notice goes out first; on a cluster the count follows a Redis round trip later
    deadline = time.monotonic() + 3
    while (info := sdk(server.api_port).channel_info(f"k-{uid}"))["occupied"]:
        assert time.monotonic() < deadline, info
        time.sleep(0.05)
    assert signed_post(server.api_port, path, {})[0] == 400
    assert signed_post(server.api_port, path, {"user_id": "a", "socket_id": "1.1"})[0] == 400
    assert signed_post(server.api_port, path, {"socket_id": "abc"})[0] == 400
    assert signed_post(server.api_port, path, {"user_id": "u" * 129})[0] == 400
    bad_channel = "/apps/1001/channels/bad%20name/unsubscribe"
    assert signed_post(server.api_port, bad_channel, {"user_id": "a"})[0] == 400
    bad_user = f"/apps/1001/users/{'u' * 129}/terminate_connections"
    assert signed_post(server.api_port, bad_user, {})[0] == 400


# --- Laravel Echo ---------------------------------------------------------------------------


def test_laravel_echo_presence_here_joining_leaving_and_whispers(js, server, uid) -> None:
    room = f"room-{uid}"
    names = [f"echo-a-{uid}", f"echo-b-{uid}"]
    for name, user in zip(names, ("1", "2"), strict=True):
        js.call(
            "echo_connect",
            client=name,
            key=MAIN.key,
            host="127.0.0.1",
            port=server.port,
            secret=MAIN.secret,
            app_id=MAIN.id,
            user_id=user,
            user_info={"name": user},
        )
    try:
        here_a = js.call("echo_join", client=names[0], name=room)
        js.call(
            "echo_listen_whisper",
            client=names[0],
            name=room,
            event="typing",
            private_or_presence="presence",
        )
        js.call("echo_join", client=names[1], name=room)
        (here_b,) = js.wait(names[1], type="here")
        assert sorted(u["name"] for u in here_b["users"]) == ["1", "2"]
        (joining,) = js.wait(names[0], type="joining")
        assert joining["user"] == {"name": "2"}
        js.call(
            "echo_whisper",
            client=names[1],
            name=room,
            event="typing",
            data={"who": "2"},
            kind="presence",
        )
        (whisper,) = js.wait(names[0], type="whisper", event="typing")
        assert whisper["data"] == {"who": "2"}
        js.call("echo_leave", client=names[1], name=room)
        (leaving,) = js.wait(names[0], type="leaving")
        assert leaving["user"] == {"name": "2"}
        assert here_a is not None
    finally:
        for name in names:
            js.call("disconnect", client=name)
