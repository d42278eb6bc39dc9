"""The server core through real clients: pusher-js 8.x and 7.x (Node builds) and the Node and
Python `pusher` SDKs, as a user would point them at pyserver (host and port only)."""

from __future__ import annotations

import itertools
import re

import pytest

from tests.integration.conftest import node_sdk
from tests.integration.jsdriver import JsDriverError

_names = itertools.count()


@pytest.fixture(params=["8", "7"])
def version(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def client(pusher_js, version: str):
    """Connected pusher-js clients of the parametrised major version."""
    return lambda **options: pusher_js(version, **options)


def test_connects_with_a_valid_socket_id(js, client) -> None:
    name = client()
    state = js.call("state", client=name)
    assert state["state"] == "connected"
    assert re.fullmatch(r"\d+\.\d+", state["socket_id"])


def test_public_channel_receives_node_and_python_sdk_triggers(
    js, server, client, uid, py_sdk
) -> None:
    name = client()
    channel = f"news-{uid}"
    assert js.subscribe(name, channel)["succeeded"]
    assert node_sdk(js, server, "trigger", channel, "from-node", {"n": 1})["status"] == 200
    (entry,) = js.wait(name, type="channel", channel=channel, event="from-node")
    assert entry["data"] == {"n": 1}
    py_sdk.trigger(channel, "from-python", {"n": 2})
    (entry,) = js.wait(name, type="channel", channel=channel, event="from-python")
    assert entry["data"] == {"n": 2}


def test_private_channel_authorised_by_the_node_sdk(js, client, uid) -> None:
    name = client()
    assert js.subscribe(name, f"private-{uid}")["succeeded"]


def test_bad_signature_reaches_the_channel_as_subscription_error(js, client, uid) -> None:
    name = client()
    js.call("set_auth_mode", client=name, mode="bad_signature")
    result = js.subscribe(name, f"private-{uid}")
    assert result["succeeded"] is False
    assert js.call("state", client=name)["state"] == "connected"


def test_presence_members_join_and_leave(js, client, uid) -> None:
    alice, bob = client(), client()
    channel = f"presence-{uid}"
    js.call("set_presence", client=alice, user_id="alice", user_info={"name": "Alice"})
    js.call("set_presence", client=bob, user_id="bob", user_info={"name": "Bob"})
    assert js.subscribe(alice, channel)["succeeded"]
    mark = js.mark(alice)
    assert js.subscribe(bob, channel)["succeeded"]
    members = js.call("members", client=bob, channel=channel)
    assert members["count"] == 2
    assert members["members"] == {"alice": {"name": "Alice"}, "bob": {"name": "Bob"}}
    assert members["me"]["id"] == "bob"
    (added,) = js.wait(alice, since=mark, type="channel", event="pusher:member_added")
    assert added["data"]["id"] == "bob"
    js.call("unsubscribe", client=bob, channel=channel)
    (removed,) = js.wait(alice, since=mark, type="channel", event="pusher:member_removed")
    assert removed["data"]["id"] == "bob"
    assert js.call("members", client=alice, channel=channel)["count"] == 1


def test_client_events_between_pusher_js_clients(js, client, uid) -> None:
    a, b = client(), client()
    channel = f"presence-chat-{uid}"
    js.call("set_presence", client=a, user_id="a")
    js.call("set_presence", client=b, user_id="b")
    assert js.subscribe(a, channel)["succeeded"] and js.subscribe(b, channel)["succeeded"]
    mark_a = js.mark(a)
    assert js.call(
        "client_event", client=a, channel=channel, event="client-typing", data={"on": True}
    )
    (entry,) = js.wait(b, type="channel", event="client-typing")
    assert entry["data"] == {"on": True} and entry["user_id"] == "a"
    with pytest.raises(JsDriverError):  # never echoed to the sender
        js.wait(a, since=mark_a, timeout_ms=500, type="channel", event="client-typing")


def test_encrypted_channel_decrypts_in_pusher_js(js, server, client, uid) -> None:
    name = client()
    channel = f"private-encrypted-{uid}"
    assert js.subscribe(name, channel)["succeeded"]
    assert node_sdk(js, server, "trigger", channel, "secret", {"msg": "hidden"})["status"] == 200
    (entry,) = js.wait(name, type="channel", channel=channel, event="secret")
    assert entry["data"] == {"msg": "hidden"}


def test_unsubscribe_stops_events(js, server, client, uid) -> None:
    name = client()
    channel = f"stop-{uid}"
    assert js.subscribe(name, channel)["succeeded"]
    js.call("unsubscribe", client=name, channel=channel)
    mark = js.mark(name)
    # a second subscriber proves the trigger went out
    other = client()
    assert js.subscribe(other, channel)["succeeded"]
    node_sdk(js, server, "trigger", channel, "after", {})
    js.wait(other, type="channel", event="after")
    with pytest.raises(JsDriverError):
        js.wait(name, since=mark, timeout_ms=300, type="channel", event="after")


def test_node_sdk_queries_and_terminate(js, server, client, uid) -> None:
    name = client()
    js.call("set_presence", client=name, user_id="u-1")
    assert js.subscribe(name, f"presence-q-{uid}")["succeeded"]
    channels = node_sdk(
        js,
        server,
        "get",
        {
            "path": "/channels",
            "params": {"filter_by_prefix": f"presence-q-{uid}", "info": "user_count"},
        },
    )
    assert channels["status"] == 200
    assert channels["body"] == {"channels": {f"presence-q-{uid}": {"user_count": 1}}}
    info = node_sdk(
        js, server, "get", {"path": f"/channels/presence-q-{uid}", "params": {"info": "user_count"}}
    )
    assert info["body"] == {"occupied": True, "user_count": 1}
    users = node_sdk(js, server, "get", {"path": f"/channels/presence-q-{uid}/users"})
    assert users["body"] == {"users": [{"id": "u-1"}]}
    bad = node_sdk(js, server, "get", {"path": "/channels", "params": {"info": "user_count"}})
    assert bad["status"] == 400
    assert node_sdk(js, server, "terminateUserConnections", "nobody")["status"] == 200


def test_trigger_batch_from_node(js, server, client, uid) -> None:
    name = client()
    channel = f"batch-{uid}"
    assert js.subscribe(name, channel)["succeeded"]
    result = node_sdk(
        js,
        server,
        "triggerBatch",
        [
            {"channel": channel, "name": "one", "data": {"i": 1}},
            {"channel": channel, "name": "two", "data": {"i": 2}},
        ],
    )
    assert result["status"] == 200
    js.wait(name, type="channel", event="two")


def test_unknown_key_is_refused(js, server, version) -> None:
    with pytest.raises(JsDriverError):
        js.connect(
            f"bad{next(_names)}",
            server.port,
            "no-such-key",
            "x",
            "1",
            version,
            connect_timeout=3000,
        )
