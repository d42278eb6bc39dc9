"""Issue 4: webhooks delivered to a real HTTP receiver, checked with the official SDKs'
validators (Python `validate_webhook`, Node `pusher.webhook(...)`)."""

from __future__ import annotations

import time

import pusher
import pytest

from tests.integration.conftest import KINDS, AppCreds, PusherSocket, deploy
from tests.integration.jsdriver import JsDriver
from tests.integration.serverproc import ServerProcess
from tests.integration.webhook_receiver import WebhookReceiver

HOOK = AppCreds("2001", "hook-key", "hook-secret")
BATCH_A = AppCreds("2002", "batch-a-key", "batch-a-secret")
BATCH_B = AppCreds("2003", "batch-b-key", "batch-b-secret")
RETRY = AppCreds("2004", "retry-key", "retry-secret")
ALL_TYPES = (
    '["channel_occupied", "channel_vacated", "member_added", "member_removed", '
    '"client_event", "cache_miss", "subscription_count", "user_online", "user_offline"]'
)


def _config(receiver: WebhookReceiver) -> str:
    return f"""
webhook_delay = 1.5
webhook_retry_base = 0.2
webhook_concurrency = 2

[[apps]]
id = "{HOOK.id}"
key = "{HOOK.key}"
secret = "{HOOK.secret}"
subscription_count = true

[[apps.webhooks]]
url = "{receiver.url("/all")}"
event_types = {ALL_TYPES}

[[apps.webhooks]]
url = "{receiver.url("/vip")}"
event_types = ["member_added", "member_removed"]
channel_prefix = "presence-vip-"
headers = {{ X-Receiver-Token = "t0ken" }}

[[apps]]
id = "{BATCH_A.id}"
key = "{BATCH_A.key}"
secret = "{BATCH_A.secret}"
webhook_batch_ms = 400

[[apps.webhooks]]
url = "{receiver.url("/batch")}"

[[apps]]
id = "{BATCH_B.id}"
key = "{BATCH_B.key}"
secret = "{BATCH_B.secret}"
webhook_batch_ms = 400

[[apps.webhooks]]
url = "{receiver.url("/batch")}"

[[apps]]
id = "{RETRY.id}"
key = "{RETRY.key}"
secret = "{RETRY.secret}"

[[apps.webhooks]]
url = "{receiver.url("/retry")}"
event_types = ["channel_occupied"]
"""


@pytest.fixture(scope="module")
def receiver():
    r = WebhookReceiver()
    yield r
    r.close()


@pytest.fixture(scope="module", params=KINDS)
def hook_server(receiver, request):
    """One server, or two Redis nodes (clients connect to node A)."""
    deployment = deploy(_config(receiver), request.param)
    yield deployment
    deployment.stop()


def _client(app: AppCreds) -> pusher.Pusher:
    return pusher.Pusher(app_id=app.id, key=app.key, secret=app.secret)


def _validated(delivery, app: AppCreds = HOOK, js: JsDriver | None = None) -> dict:
    """Both official validators must accept a delivery as it arrived: pusher-http-python's
    `validate_webhook` and, when the JS driver is at hand, the Node SDK's `webhook()`."""
    result = _client(app).validate_webhook(
        key=delivery.headers["x-pusher-key"],
        signature=delivery.headers["x-pusher-signature"],
        body=delivery.body.decode(),
    )
    assert result is not None, "pusher-http-python rejected the webhook"
    assert delivery.headers["content-type"] == "application/json"
    if js is not None:
        node = js.call(
            "sdk",
            method="webhook",
            args=[{"headers": delivery.headers, "rawBody": delivery.body.decode()}],
            app_id=app.id,
            key=app.key,
            secret=app.secret,
            host="127.0.0.1",
            port=1,
        )
        assert node["valid"] is True, "the Node SDK rejected the webhook"
    return result


def test_occupied_and_vacated_signed_and_valid_for_both_sdks(
    hook_server, receiver, uid, js: JsDriver
) -> None:
    channel = f"room-{uid}"
    s = PusherSocket(hook_server.port, HOOK)
    s.subscribe(channel)
    delivery, _event = receiver.wait_for(
        lambda e: e == {"name": "channel_occupied", "channel": channel}, path="/all"
    )
    assert set(delivery.json) == {"time_ms", "events"} and len(delivery.json["events"]) == 1
    _validated(delivery, js=js)
    left = time.time()
    s.close()
    delivery, _ = receiver.wait_for(
        lambda e: e == {"name": "channel_vacated", "channel": channel}, path="/all"
    )
    assert delivery.at - left >= 1.4, "vacated waits for the debounce delay"
    _validated(delivery, js=js)


def test_reload_within_the_delay_sends_nothing(hook_server, receiver, uid) -> None:
    channel = f"presence-reload-{uid}"
    first = PusherSocket(hook_server.port, HOOK)
    first.signed_subscribe(channel, "u1")
    receiver.wait_for(lambda e: e.get("name") == "member_added" and e["channel"] == channel)
    first.close()  # F5: the page goes away ...
    time.sleep(0.2)
    second = PusherSocket(hook_server.port, HOOK)  # ... and comes back within the delay
    second.signed_subscribe(channel, "u1")
    time.sleep(2.0)
    names = [e["name"] for _, e in receiver.events("/all") if e.get("channel") == channel]
    # separate deliveries may arrive in either order; nothing about the reload is sent
    assert sorted(names) == ["channel_occupied", "member_added"]
    second.close()


def test_member_events_client_events_counts_and_filters(hook_server, receiver, uid) -> None:
    channel = f"presence-vip-{uid}"
    a, b = PusherSocket(hook_server.port, HOOK), PusherSocket(hook_server.port, HOOK)
    a.signed_subscribe(channel, "alice")
    b.signed_subscribe(channel, 42)
    a.recv_event("pusher_internal:member_added")
    b.send_json({"event": "client-hi", "channel": channel, "data": {"x": 1}})
    _, event = receiver.wait_for(
        lambda e: e.get("name") == "client_event" and e["channel"] == channel
    )
    assert event == {
        "name": "client_event",
        "channel": channel,
        "event": "client-hi",
        "data": '{"x":1}',
        "socket_id": b.socket_id,
        "user_id": "42",
    }
    b.close()
    receiver.wait_for(
        lambda e: e == {"name": "member_removed", "channel": channel, "user_id": "42"}
    )
    vip = [e for _, e in receiver.events("/vip")]
    assert {"name": "member_added", "channel": channel, "user_id": "alice"} in vip
    assert all(e["name"] in ("member_added", "member_removed") for e in vip)
    delivery, _ = receiver.wait_for(lambda e: True, path="/vip")
    assert delivery.headers["x-receiver-token"] == "t0ken"
    # the prefix filter keeps other channels out of /vip
    other = PusherSocket(hook_server.port, HOOK)
    other.signed_subscribe(f"presence-plain-{uid}", "z")
    receiver.wait_for(lambda e: e.get("channel") == f"presence-plain-{uid}", path="/all")
    assert not [e for _, e in receiver.events("/vip") if e["channel"].endswith(f"plain-{uid}")]
    a.close()
    other.close()


def test_client_event_on_private_channel_has_no_user_id(hook_server, receiver, uid) -> None:
    channel = f"private-{uid}"
    a, b = PusherSocket(hook_server.port, HOOK), PusherSocket(hook_server.port, HOOK)
    a.signed_subscribe(channel)
    b.signed_subscribe(channel)
    a.send_json({"event": "client-x", "channel": channel, "data": "text"})
    _, event = receiver.wait_for(
        lambda e: e.get("name") == "client_event" and e["channel"] == channel
    )
    assert "user_id" not in event and event["data"] == "text"
    _, count = receiver.wait_for(
        lambda e: (
            e.get("name") == "subscription_count"
            and e["channel"] == channel
            and e["subscription_count"] == 2
        )
    )
    assert count == {"name": "subscription_count", "channel": channel, "subscription_count": 2}
    a.close()
    b.close()


def test_cache_miss_once(hook_server, receiver, uid) -> None:
    channel = f"cache-{uid}"
    a, b = PusherSocket(hook_server.port, HOOK), PusherSocket(hook_server.port, HOOK)
    a.subscribe(channel)
    b.subscribe(channel)
    receiver.wait_for(lambda e: e == {"name": "cache_miss", "channel": channel})
    time.sleep(0.3)
    misses = [
        e for _, e in receiver.events("/all") if e == {"name": "cache_miss", "channel": channel}
    ]
    assert len(misses) == 1
    a.close()
    b.close()


def test_user_online_and_offline_extension(hook_server, receiver, uid) -> None:
    s = PusherSocket(hook_server.port, HOOK)
    auth = _client(HOOK).authenticate_user(s.socket_id, {"id": f"user-{uid}"})
    s.send_json({"event": "pusher:signin", "data": auth})
    s.recv_event("pusher:signin_success")
    receiver.wait_for(lambda e: e == {"name": "user_online", "user_id": f"user-{uid}"})
    s.close()
    receiver.wait_for(lambda e: e == {"name": "user_offline", "user_id": f"user-{uid}"})


def test_failing_receiver_gets_the_event_later_with_original_time(
    hook_server, receiver, uid, js: JsDriver
) -> None:
    # more failures than the server has delivery workers (2): none may be lost on the way
    receiver.fail_next("/retry", 3)
    created = time.time()
    s = PusherSocket(hook_server.port, RETRY)
    s.subscribe(f"r-{uid}")
    delivery, _ = receiver.wait_for(
        lambda e: e.get("channel") == f"r-{uid}", timeout=10, path="/retry"
    )
    assert receiver.attempts["/retry"] >= 4
    assert abs(delivery.json["time_ms"] / 1000 - created) < 0.3, "time_ms is the creation time"
    assert delivery.at - created >= 1.2, "three failures, each followed by a longer backoff"
    _validated(delivery, RETRY, js)
    # and the sender still works afterwards
    later = PusherSocket(hook_server.port, RETRY)
    later.subscribe(f"r2-{uid}")
    receiver.wait_for(lambda e: e.get("channel") == f"r2-{uid}", timeout=5, path="/retry")
    s.close()
    later.close()


def test_batching_collects_events_and_never_mixes_apps(
    hook_server, receiver, uid, js: JsDriver
) -> None:
    sockets = []
    for app in (BATCH_A, BATCH_B):
        for i in range(3):
            s = PusherSocket(hook_server.port, app)
            s.subscribe(f"b{i}-{uid}")
            sockets.append(s)
    receiver.wait_for(lambda e: e.get("channel") == f"b2-{uid}", path="/batch")
    time.sleep(0.6)
    deliveries = [
        r
        for r in receiver.received
        if r.path == "/batch" and any(e["channel"].endswith(uid) for e in r.json["events"])
    ]
    assert len(deliveries) == 2
    for delivery in deliveries:
        app = BATCH_A if delivery.headers["x-pusher-key"] == BATCH_A.key else BATCH_B
        assert len(_validated(delivery, app, js)["events"]) == 3
    for s in sockets:
        s.close()


def test_sigterm_flushes_pending_webhooks(receiver, uid) -> None:
    proc = ServerProcess(_config(receiver).replace("webhook_delay = 1.5", "webhook_delay = 30"))
    s = PusherSocket(proc.port, HOOK)
    s.subscribe(f"bye-{uid}")
    receiver.wait_for(lambda e: e == {"name": "channel_occupied", "channel": f"bye-{uid}"})
    proc.proc.send_signal(15)  # the client is closed with 4200, vacated waits 30 s ...
    assert proc.proc.wait(timeout=15) == 0
    # ... but shutdown sends it before exiting
    receiver.wait_for(
        lambda e: e == {"name": "channel_vacated", "channel": f"bye-{uid}"}, timeout=1
    )
    proc.stop()
    s.close()
