"""History in the running server, through unmodified pusher-js 8 and 7, Laravel Echo, the Node
SDK's `get` and Python: rewind, catch-up after a dropped socket (several tabs too), the
not-recovered event, client events kept or not, and the history API.

Every test runs on `local` (one server), `redis` (two nodes sharing a real Redis) and
`cluster` (two nodes on a three-master Redis Cluster): WebSocket clients on node A and every
HTTP call (triggers, history reads) on node B.
The servers are shared by the whole module; each test uses its own channel names.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import re
import threading
import time
from collections.abc import Callable, Coroutine, Iterator
from typing import Any

import pusher
import pytest
from pusher.http import GET, Request

from tests.integration.conftest import AppCreds, Deployment, PusherSocket, deploy
from tests.integration.httpapi import request
from tests.integration.jsdriver import JsDriver, js_deps_installed
from tests.integration.serverproc import ServerProcess
from tests.redisproc import RedisProcess, free_port
from tests.tcpproxy import TcpProxy

pytestmark = pytest.mark.skipif(not js_deps_installed(), reason="npm ci in tests/js")

APP = AppCreds("2001", "hist-key", "hist-secret")

CONFIG = """
[[apps]]
id = "2001"
key = "hist-key"
secret = "hist-secret"

[[apps.history]]
channels = "chat-*"
limit = 50
ttl = 600
rewind = 3

[[apps.history]]
channels = "presence-short-*"
limit = 3
rewind = 1

[[apps.history]]
channels = "presence-room-*"
limit = 100
rewind = 0
client_events = true

[[apps.history]]
channels = "private-quiet-*"
rewind = 5
client_events = false
"""

ENV = {"PYSERVER_ACTIVITY_TIMEOUT": "1", "PYSERVER_PONG_TIMEOUT": "1"}
"""Pings (and so delivery confirmations) every second, and a silent client given up in two."""

_names = itertools.count()


@pytest.fixture(scope="module", params=["local", "redis", "cluster"])
def hist(request: pytest.FixtureRequest) -> Iterator[Deployment]:
    deployment = deploy(CONFIG, str(request.param), env=ENV)
    yield deployment
    deployment.stop()


@pytest.fixture(scope="module")
def js() -> Iterator[JsDriver]:
    with JsDriver() as driver:
        yield driver


def name(prefix: str) -> str:
    return f"{prefix}{time.monotonic_ns() % 10**9}-{next(_names)}"


def api(deployment: Deployment) -> pusher.Pusher:
    return pusher.Pusher(
        app_id=APP.id,
        key=APP.key,
        secret=APP.secret,
        host="127.0.0.1",
        port=deployment.api_port,
        ssl=False,
    )


def channel_history(client: pusher.Pusher, channel: str, **params: Any) -> Any:
    """The Python helper of docs/history.md: the SDK's own signed request."""
    sdk = client._pusher_client
    query = {key: str(value) for key, value in params.items()}
    request = Request(sdk, GET, f"/apps/{sdk.app_id}/channels/{channel}/history", query)
    return sdk.http.send_request(request)


def connect(js: JsDriver, deployment: Deployment, version: str = "8", **kw: Any) -> str:
    client = f"h{next(_names)}"
    js.connect(client, kw.pop("port", deployment.port), APP.key, APP.secret, APP.id, version, **kw)
    return client


def received(js: JsDriver, client: str, channel: str, event: str = "m") -> list[Any]:
    """The `data` of every `event` the client's channel listeners got, in order."""
    return [
        e["data"]
        for e in js.events(client)
        if e["type"] == "channel" and e["channel"] == channel and e["event"] == event
    ]


def numbers(js: JsDriver, client: str, channel: str) -> list[int]:
    return [d["n"] for d in received(js, client, channel)]


def wait_numbers(js: JsDriver, client: str, channel: str, count: int) -> list[int]:
    js.wait(client, type="channel", channel=channel, event="m", count=count)
    return numbers(js, client, channel)


def trigger(client: pusher.Pusher, channel: str, values: range) -> None:
    for n in values:
        client.trigger(channel, "m", {"n": n})


# --- rewind ------------------------------------------------------------------------------------


@pytest.mark.parametrize("version", ["8", "7"])
def test_rewind_comes_first_in_order_and_never_twice(
    hist: Deployment, js: JsDriver, version: str
) -> None:
    channel = name("chat-")
    backend = api(hist)
    trigger(backend, channel, range(6))
    client = connect(js, hist, version)
    js.subscribe(client, channel)
    assert wait_numbers(js, client, channel, 3) == [3, 4, 5]
    trigger(backend, channel, range(6, 8))
    assert wait_numbers(js, client, channel, 5) == [3, 4, 5, 6, 7]
    time.sleep(0.3)
    assert numbers(js, client, channel) == [3, 4, 5, 6, 7]
    js.call("disconnect", client=client)


def test_rewind_races_live_events_without_gap_or_duplicate(hist: Deployment, js: JsDriver) -> None:
    """Events published while subscribers are replaying reach each of them exactly once, after
    the replay and in order."""
    channel = name("chat-")
    backend = api(hist)
    trigger(backend, channel, range(3))
    clients = [connect(js, hist) for _ in range(3)]
    publisher = threading.Thread(target=trigger, args=(api(hist), channel, range(3, 40)))
    publisher.start()
    for client in clients:
        js.subscribe(client, channel)
    publisher.join()
    for client in clients:
        js.wait(client, type="channel", channel=channel, event="m", data={"n": 39})
        got = numbers(js, client, channel)
        assert got == list(range(got[0], 40)), got  # in order, no gap, no duplicate
        js.call("disconnect", client=client)


def test_rewind_through_laravel_echo(hist: Deployment, js: JsDriver) -> None:
    channel = name("chat-")
    trigger(api(hist), channel, range(4))
    client = f"echo{next(_names)}"
    js.call(
        "echo_connect",
        client=client,
        key=APP.key,
        secret=APP.secret,
        app_id=APP.id,
        port=hist.port,
    )
    js.call("echo_listen", client=client, kind="channel", name=channel, event=".m")
    js.wait(client, type="echo_event", channel=channel, count=3)
    got = [e["data"]["n"] for e in js.events(client) if e["type"] == "echo_event"]
    assert got == [1, 2, 3]
    js.call("disconnect", client=client)


# --- catch-up ----------------------------------------------------------------------------------


def join(js: JsDriver, deployment: Deployment, channel: str, user: str, version: str = "8") -> str:
    client = connect(js, deployment, version)
    js.call("set_presence", client=client, user_id=user, user_info={"name": user})
    js.subscribe(client, channel)
    return client


@pytest.mark.parametrize("version", ["8", "7"])
def test_catch_up_after_a_dropped_socket_replaces_the_rewind(
    hist: Deployment, js: JsDriver, version: str
) -> None:
    channel = name("presence-room-")
    backend = api(hist)
    first = join(js, hist, channel, "ann", version)
    trigger(backend, channel, range(3))
    assert wait_numbers(js, first, channel, 3) == [0, 1, 2]
    time.sleep(2.5)  # a ping and its pong confirm what the client received
    js.call("disconnect", client=first)  # the socket closes; no unsubscribe
    time.sleep(0.3)
    trigger(backend, channel, range(3, 7))
    again = join(js, hist, channel, "ann", version)
    trigger(backend, channel, range(7, 9))
    assert wait_numbers(js, again, channel, 6) == [3, 4, 5, 6, 7, 8]
    time.sleep(0.3)
    assert numbers(js, again, channel) == [3, 4, 5, 6, 7, 8]
    js.call("disconnect", client=again)


def test_several_tabs_recover_from_the_earliest_position(hist: Deployment, js: JsDriver) -> None:
    channel = name("presence-room-")
    backend = api(hist)
    tab1, tab2 = join(js, hist, channel, "bob"), join(js, hist, channel, "bob")
    trigger(backend, channel, range(2))
    wait_numbers(js, tab1, channel, 2)
    wait_numbers(js, tab2, channel, 2)
    time.sleep(2.5)
    js.call("disconnect", client=tab1)
    time.sleep(0.3)
    trigger(backend, channel, range(2, 4))  # only tab 2 gets these
    wait_numbers(js, tab2, channel, 4)
    time.sleep(2.5)
    js.call("disconnect", client=tab2)
    time.sleep(0.3)
    trigger(backend, channel, range(4, 6))
    back1, back2 = join(js, hist, channel, "bob"), join(js, hist, channel, "bob")
    assert wait_numbers(js, back1, channel, 4) == [2, 3, 4, 5]
    assert wait_numbers(js, back2, channel, 4) == [2, 3, 4, 5]
    for client in (back1, back2):
        js.call("disconnect", client=client)


def test_a_gap_that_is_gone_is_announced_then_rewound(hist: Deployment, js: JsDriver) -> None:
    channel = name("presence-short-")
    backend = api(hist)
    first = join(js, hist, channel, "cy")
    trigger(backend, channel, range(1))
    wait_numbers(js, first, channel, 1)
    js.call("disconnect", client=first)
    time.sleep(0.3)
    trigger(backend, channel, range(1, 6))  # 5 events, the channel keeps 3
    again = join(js, hist, channel, "cy")
    js.wait(again, type="channel", channel=channel, event="m", count=1)
    events = [
        (e["event"], e["data"])
        for e in js.events(again)
        if e["type"] == "channel" and not e["event"].startswith("pusher:subscription")
    ]
    assert events == [("pusher:recovery_failed", {"reason": "limit"}), ("m", {"n": 5})]
    js.call("disconnect", client=again)


def test_the_recovery_failed_event_reaches_echo(hist: Deployment, js: JsDriver) -> None:
    room = name("short-")
    channel = f"presence-{room}"
    backend = api(hist)
    first = f"echo{next(_names)}"
    creds = {"key": APP.key, "secret": APP.secret, "app_id": APP.id, "port": hist.port}
    js.call("echo_connect", client=first, user_id="dee", **creds)
    js.call("echo_join", client=first, name=room)
    js.call("disconnect", client=first)
    time.sleep(0.3)
    trigger(backend, channel, range(5))
    again = f"echo{next(_names)}"
    js.call("echo_connect", client=again, user_id="dee", **creds)
    listen = {"kind": "presence", "name": room, "event": ".pusher:recovery_failed"}
    js.call("echo_listen", client=again, **listen)
    (entry,) = js.wait(again, type="echo_event", channel=channel)
    assert entry["data"] == {"reason": "limit"}
    js.call("disconnect", client=again)


# --- client events -----------------------------------------------------------------------------


def test_client_events_are_kept_only_where_the_rule_says(hist: Deployment, js: JsDriver) -> None:
    kept, dropped = name("presence-room-"), name("private-quiet-")
    sender = join(js, hist, kept, "eve")
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
    js.call("disconnect", client=sender)


# --- the HTTP API ------------------------------------------------------------------------------


def test_history_api_pages_through_python(hist: Deployment) -> None:
    channel = name("chat-")
    backend = api(hist)
    head = channel_history(backend, channel, limit=0)
    assert head["events"] == [] and head["next"] is None
    trigger(backend, channel, range(5))
    page = channel_history(backend, channel, limit=2)
    assert [json.loads(e["data"])["n"] for e in page["events"]] == [4, 3]
    assert page["epoch"] == head["epoch"] and page["position"] == page["events"][0]["position"]
    older = channel_history(backend, channel, limit=2, before=page["next"])
    assert [json.loads(e["data"])["n"] for e in older["events"]] == [2, 1]
    after = channel_history(backend, channel, direction="forward", after=head["position"])
    assert [json.loads(e["data"])["n"] for e in after["events"]] == [0, 1, 2, 3, 4]
    assert after["next"] is None


def test_history_api_through_the_node_sdk_get(hist: Deployment, js: JsDriver) -> None:
    channel = name("chat-")
    trigger(api(hist), channel, range(3))
    sdk = {"port": hist.api_port, "key": APP.key, "secret": APP.secret, "app_id": APP.id}
    got = js.sdk("get", {"path": f"/channels/{channel}/history", "params": {"limit": 2}}, **sdk)
    assert got["status"] == 200
    assert [json.loads(e["data"])["n"] for e in got["body"]["events"]] == [2, 1]
    nxt = got["body"]["next"]
    older = js.sdk(
        "get", {"path": f"/channels/{channel}/history", "params": {"before": nxt}}, **sdk
    )
    assert [json.loads(e["data"])["n"] for e in older["body"]["events"]] == [0]


def test_history_api_errors(hist: Deployment) -> None:
    backend = api(hist)
    channel = name("chat-")
    trigger(backend, channel, range(1))
    epoch = channel_history(backend, channel, limit=0)["epoch"]
    cases: list[tuple[str, dict[str, Any], int]] = [
        (name("nohistory-"), {}, 404),
        (channel, {"limit": "1001"}, 400),
        (channel, {"direction": "sideways"}, 400),
        (channel, {"before": "not-a-position"}, 400),
        (channel, {"after": f"{epoch}.29.0"}, 400),  # serial 9: never reached
        (channel, {"after": "zz.11.0"}, 409),
    ]
    for target, params, status in cases:
        with pytest.raises(pusher.errors.PusherError) as failure:
            channel_history(backend, target, **params)
        text = str(failure.value)
        body = json.loads(text[text.index("{") :])
        assert body["status"] == status, (params, body)
        if status == 409:
            assert body["epoch"] == epoch


def test_metrics_count_history(hist: Deployment) -> None:
    import urllib.request

    channel = name("chat-")
    trigger(api(hist), channel, range(2))
    node = hist.nodes[-1]  # the node that stored them
    body = urllib.request.urlopen(f"http://127.0.0.1:{node.metrics_port()}/metrics").read()
    text = body.decode()
    assert "history_events_stored_total" in text
    stored = re.search(r"^\w*history_events_stored_total (\d+)$", text, re.M)
    assert stored is not None and int(stored.group(1)) >= 2
    if len(hist.nodes) == 1:  # the in-memory store's size (Redis keeps it cluster-wide)
        held = re.search(r"^\w*history_events (\d+)$", text, re.M)
        assert held is not None and int(held.group(1)) >= 2
        assert re.search(r"^\w*history_channels [1-9]", text, re.M)


# --- what counts as delivered: a client that goes silent without a FIN -----------------------


class Proxy:
    """`tests/tcpproxy.TcpProxy` on its own event loop thread, driven from a sync test."""

    def __init__(self, target_port: int) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.proxy = TcpProxy(target_port)
        self._run(self.proxy.start())
        self.port = self.proxy.port

    def _run(self, work: Coroutine[Any, Any, None]) -> None:
        asyncio.run_coroutine_threadsafe(work, self.loop).result(10)

    def freeze(self) -> None:
        self._run(self._do(self.proxy.freeze))

    def cut(self) -> None:
        """Abort the connections through the proxy (a RST both ways) and forward new ones."""

        def cut() -> None:
            for pipe in self.proxy.pipes:
                if pipe.transport is not None:
                    pipe.transport.abort()
            self.proxy.pipes.clear()
            self.proxy.frozen = False

        self._run(self._do(cut))

    def cut_client(self) -> None:
        """Abort only the client's side: the server's side stays open and silent (frozen),
        as when a phone moves to another network."""

        def cut() -> None:
            for pipe in list(self.proxy.pipes):
                transport = pipe.transport
                if transport is None or transport.get_extra_info("sockname")[1] != self.port:
                    continue  # the server's side
                if pipe.peer is not None:
                    pipe.peer.peer = None
                pipe.peer = None
                transport.abort()
                self.proxy.pipes.remove(pipe)
            self.proxy.frozen = False

        self._run(self._do(cut))

    @staticmethod
    async def _do(action: Callable[[], None]) -> None:
        action()

    def close(self) -> None:
        self._run(self.proxy.close())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.loop.close()


def test_a_half_open_client_recovers_what_it_never_read(hist: Deployment, js: JsDriver) -> None:
    """The client stops reading and its packets stop, without a FIN, while events keep flowing
    into its socket; the server gives up at the ping timeout. Back on a new connection, the
    client gets every event it never read, although the server wrote them all."""
    channel = name("presence-room-")
    backend = api(hist)
    proxy = Proxy(hist.port)
    try:
        client = connect(js, hist, port=proxy.port)
        js.call("set_presence", client=client, user_id="fay", user_info={})
        js.subscribe(client, channel)
        trigger(backend, channel, range(5))
        assert wait_numbers(js, client, channel, 5) == [0, 1, 2, 3, 4]
        time.sleep(2.5)  # pongs confirm 0..4
        proxy.freeze()
        for n in range(5, 45):  # written by the server, never read by the client
            backend.trigger(channel, "m", {"n": n})
            time.sleep(0.02)
        deadline = time.monotonic() + 15
        while backend.users_info(channel)["users"]:  # the server gives the socket up
            assert time.monotonic() < deadline, "the server never gave up the silent client"
            time.sleep(0.2)
        trigger(backend, channel, range(45, 50))
        proxy.cut()  # the client notices now and reconnects through the proxy
        js.wait(
            client, type="channel", channel=channel, event="m", data={"n": 49}, timeout_ms=15000
        )
        trigger(backend, channel, range(50, 51))
        js.wait(client, type="channel", channel=channel, event="m", data={"n": 50})
        got = numbers(js, client, channel)
        assert got[:5] == [0, 1, 2, 3, 4]
        assert got[5:] == list(range(5, 51)), got  # no gap, nothing twice
        js.call("disconnect", client=client)
    finally:
        proxy.close()


def test_the_resume_snippet_recovers_an_anonymous_page(hist: Deployment, js: JsDriver) -> None:
    channel = name("chat-")
    backend = api(hist)
    proxy = Proxy(hist.port)
    try:
        client = f"h{next(_names)}"
        js.call(
            "connect",
            client=client,
            key=APP.key,
            secret=APP.secret,
            app_id=APP.id,
            port=proxy.port,
            resume_snippet=True,
        )
        js.subscribe(client, channel)
        trigger(backend, channel, range(3))
        assert wait_numbers(js, client, channel, 3) == [0, 1, 2]
        time.sleep(2.5)
        proxy.freeze()
        trigger(backend, channel, range(3, 8))  # never read; the rewind (3) would miss some
        proxy.cut()  # the server sees the connection end; pusher-js reconnects and resumes
        js.wait(client, type="channel", channel=channel, event="m", data={"n": 7}, timeout_ms=15000)
        trigger(backend, channel, range(8, 9))
        js.wait(client, type="channel", channel=channel, event="m", data={"n": 8})
        assert numbers(js, client, channel) == list(range(9))
        js.call("disconnect", client=client)
    finally:
        proxy.close()


def test_an_unknown_resume_token_is_not_recovered(hist: Deployment) -> None:
    channel = name("chat-")
    trigger(api(hist), channel, range(4))
    sock = PusherSocket(hist.port, APP)
    try:
        assert sock.recv()["event"] == "pusher_internal:resume_token"
        sock.send_json({"event": "pusher:resume", "data": {"token": "never-issued"}})
        assert sock.subscribe(channel)["event"] == "pusher_internal:subscription_succeeded"
        failed = sock.recv()
        assert failed["event"] == "pusher:recovery_failed" and failed["channel"] == channel
        assert json.loads(failed["data"]) == {"reason": "window"}
        assert [json.loads(sock.recv()["data"])["n"] for _ in range(3)] == [1, 2, 3]
    finally:
        sock.close()


def test_a_signed_in_user_catches_up_on_a_public_channel(hist: Deployment, js: JsDriver) -> None:
    channel = name("chat-")
    backend = api(hist)

    def signed_in() -> str:
        client = connect(js, hist)
        js.call("set_user", client=client, user_data={"id": "gus"})
        js.call("signin", client=client, wait=True)
        js.subscribe(client, channel)
        return client

    first = signed_in()
    trigger(backend, channel, range(2))
    assert wait_numbers(js, first, channel, 2) == [0, 1]
    time.sleep(2.5)
    js.call("disconnect", client=first)
    time.sleep(0.3)
    trigger(backend, channel, range(2, 7))  # 5 missed; the rewind would give only 3
    again = signed_in()
    assert wait_numbers(js, again, channel, 5) == [2, 3, 4, 5, 6]
    js.call("disconnect", client=again)


# --- a Redis restart: a new epoch ------------------------------------------------------------


def test_a_redis_restart_starts_a_new_epoch(js: JsDriver) -> None:
    """Redis loses every key: node B's API answers old positions with 409 and the new epoch,
    a returning user on node A is told `epoch`, and a trigger during the outage is refused
    rather than answered 200 without being stored."""
    redis = RedisProcess(free_port())
    env = {
        **ENV,
        "PYSERVER_ADAPTER": "redis",
        "PYSERVER_REDIS_URL": redis.url,
        "PYSERVER_REDIS_PREFIX": "restart",
    }
    deployment = Deployment([ServerProcess(CONFIG, env=env) for _ in range(2)])
    try:
        channel = name("presence-short-")
        backend = api(deployment)
        first = join(js, deployment, channel, "hal")
        trigger(backend, channel, range(2))
        wait_numbers(js, first, channel, 2)
        old = channel_history(backend, channel, limit=0)
        time.sleep(2.5)
        js.call("disconnect", client=first)
        time.sleep(0.3)
        redis.stop()
        with pytest.raises(pusher.errors.PusherError, match="503"):
            backend.trigger(channel, "m", {"n": -1})
        redis.start()
        deadline = time.monotonic() + 30
        for node in deployment.nodes:
            while request(node.port, "GET", "/ready")[0] != 200:
                assert time.monotonic() < deadline, "a node never came back"
                time.sleep(0.2)
        trigger(backend, channel, range(2, 4))
        with pytest.raises(pusher.errors.PusherError) as failure:
            channel_history(backend, channel, after=old["position"])
        text = str(failure.value)
        conflict = json.loads(text[text.index("{") :])
        assert conflict["status"] == 409 and conflict["epoch"] != old["epoch"]
        again = join(js, deployment, channel, "hal")
        js.wait(again, type="channel", channel=channel, event="m", count=1)
        events = [
            (e["event"], e["data"])
            for e in js.events(again)
            if e["type"] == "channel" and not e["event"].startswith("pusher:subscription")
        ]
        assert events == [("pusher:recovery_failed", {"reason": "epoch"}), ("m", {"n": 3})]
        js.call("disconnect", client=again)
    finally:
        deployment.stop()
        redis.stop()


def test_a_user_who_comes_back_on_another_node_catches_up(hist: Deployment, js: JsDriver) -> None:
    """With Redis the drops are shared: gone from node A, back on node B (one node locally)."""
    channel = name("presence-room-")
    backend = api(hist)
    first = join(js, hist, channel, "ida")
    trigger(backend, channel, range(2))
    wait_numbers(js, first, channel, 2)
    time.sleep(2.5)
    js.call("disconnect", client=first)
    time.sleep(0.3)
    trigger(backend, channel, range(2, 5))
    other = Deployment(hist.nodes[::-1])  # WebSocket clients on the last node now
    again = join(js, other, channel, "ida")
    assert wait_numbers(js, again, channel, 3) == [2, 3, 4]
    js.call("disconnect", client=again)


def test_a_user_back_before_the_server_gave_up_the_old_socket(js: JsDriver) -> None:
    """A phone on a new network comes back while its old socket is still half-open on the
    server (a long pong timeout here): the old subscription stopped answering pings, so the
    new one catches up from what the old one confirmed instead of getting the rewind."""
    deployment = deploy(
        CONFIG, "local", env={"PYSERVER_ACTIVITY_TIMEOUT": "1", "PYSERVER_PONG_TIMEOUT": "30"}
    )
    proxy = Proxy(deployment.port)
    try:
        channel = name("presence-room-")
        backend = api(deployment)
        client = connect(js, deployment, port=proxy.port)
        js.call("set_presence", client=client, user_id="kim", user_info={})
        js.subscribe(client, channel)
        trigger(backend, channel, range(3))
        assert wait_numbers(js, client, channel, 3) == [0, 1, 2]
        time.sleep(2.5)  # pongs confirm 0..2
        proxy.freeze()
        trigger(backend, channel, range(3, 10))  # into the half-open socket
        time.sleep(2.5)  # the server's next ping goes unanswered
        proxy.cut_client()  # pusher-js reconnects; the server still holds the old socket
        js.wait(client, type="channel", channel=channel, event="m", data={"n": 9}, timeout_ms=15000)
        assert len(backend.users_info(channel)["users"]) == 1  # the old one is still there
        trigger(backend, channel, range(10, 11))
        js.wait(client, type="channel", channel=channel, event="m", data={"n": 10})
        assert numbers(js, client, channel) == list(range(11))
        js.call("disconnect", client=client)
    finally:
        proxy.close()
        deployment.stop()


def test_batch_triggers_are_stored_before_the_answer(hist: Deployment) -> None:
    channel, plain = name("chat-"), name("plain-")
    backend = api(hist)
    backend.trigger_batch(
        [
            {"channel": channel, "name": "m", "data": {"n": 0}},
            {"channel": plain, "name": "m", "data": {"n": 1}},
            {"channel": channel, "name": "m", "data": {"n": 2}},
        ]
    )
    page = channel_history(backend, channel, direction="forward")  # at once, on the other node
    assert [json.loads(e["data"])["n"] for e in page["events"]] == [0, 2]
