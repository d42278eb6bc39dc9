"""Apps served from each store by a running pair of nodes (Redis adapter), changed with
`pyserver apps` while clients use them: real SQLite, PostgreSQL and MariaDB (tests/dbproc.py),
real Redis, real pusher-js and the Node and Python server SDKs.

One pair of nodes per store serves every test of this module (each test adds apps of its
own); the database servers are the session's (tests/apps/conftest.py). The nodes refresh at
the default `app_store_refresh` (5 s): a change seen much sooner came through the Redis
announcement, not the refresh.
"""

from __future__ import annotations

import hashlib
import hmac
import itertools
import json
import os
import random
import string
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pusher
import pytest

from tests.apps.conftest import STORES, database_server, fresh_url, with_store
from tests.integration.conftest import AppCreds, redis_env
from tests.integration.httpapi import signed_post
from tests.integration.jsdriver import JsDriver, js_deps_installed
from tests.integration.rawws import RawWebSocket
from tests.integration.serverproc import ROOT, ServerProcess
from tests.integration.webhook_receiver import WebhookReceiver
from tests.redisproc import RedisProcess

REFRESH = 5.0
"""The nodes' app_store_refresh (the default)."""
AT_ONCE = 3.0
"""Seconds after `pyserver apps` returns within which both nodes apply its change (well
within REFRESH: slack for a loaded machine; the announcement takes milliseconds)."""
WS_QUERY = "?protocol=7&client=js&version=8.4.0&flash=false"

_ids = itertools.count(5001)
_redis: RedisProcess | None = None


def shared_redis() -> RedisProcess:
    global _redis
    if _redis is None:
        _redis = RedisProcess()
    return _redis


def teardown_module() -> None:
    global _redis
    if _redis is not None:
        _redis.stop()
        _redis = None


@dataclass
class Pair:
    """Two nodes on one store and one Redis: clients on `a`, most API calls on `b`."""

    kind: str
    url: str
    env: dict[str, str]
    nodes: list[ServerProcess] = field(default_factory=list)

    @property
    def a(self) -> ServerProcess:
        return self.nodes[0]

    @property
    def b(self) -> ServerProcess:
        return self.nodes[1]

    def apps(self, *args: str, status: int = 0) -> subprocess.CompletedProcess[str]:
        """Run `pyserver apps ARGS` with the nodes' settings."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("PYSERVER_")}
        done = subprocess.run(
            [sys.executable, "-m", "pyserver", "apps", *args],
            env={**env, **self.env},
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == status, done.stdout + done.stderr
        return done

    def new_app(self, **options: str) -> AppCreds:
        app_id = str(next(_ids))
        secret = "".join(random.choices(string.ascii_letters, k=24))
        creds = AppCreds(app_id, f"key-{app_id}-{os.getpid()}", secret)
        flags = [x for name, value in options.items() for x in (f"--{name}", value)]
        self.apps("add", "--id", creds.id, "--key", creds.key, "--secret", secret, *flags)
        return creds


@pytest.fixture(scope="module", params=STORES)
def pair(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Pair]:
    kind = str(request.param)
    url = fresh_url(kind, tmp_path_factory.mktemp(kind))
    redis = shared_redis()
    env = {
        "PYSERVER_APP_STORE": url,
        "PYSERVER_ADAPTER": "redis",
        "PYSERVER_REDIS_URL": redis.url,
        "PYSERVER_REDIS_PREFIX": f"apps{os.getpid()}{kind}",
    }
    deployment = Pair(kind, url, env)
    deployment.nodes = [ServerProcess(env=env) for _ in range(2)]
    yield deployment
    for node in deployment.nodes:
        node.stop()
    if kind != "sqlite":
        database_server(kind).drop_database(url)


@pytest.fixture(scope="module")
def js() -> Iterator[JsDriver]:
    assert js_deps_installed(), "run `npm ci` in tests/js (scripts/test.sh does it)"
    with JsDriver() as driver:
        yield driver


def sdk(port: int, app: AppCreds, secret: str | None = None) -> pusher.Pusher:
    return pusher.Pusher(
        app_id=app.id,
        key=app.key,
        secret=secret or app.secret,
        host="127.0.0.1",
        port=port,
        ssl=False,
    )


def health(node: ServerProcess, path: str = "/ready") -> tuple[int, dict[str, Any]]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{node.port}{path}", timeout=5) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


class Socket(RawWebSocket):
    socket_id = ""


def established(node: ServerProcess, app: AppCreds) -> Socket:
    sock = Socket(node.port, f"/app/{app.key}{WS_QUERY}")
    message = sock.recv()
    assert message["event"] == "pusher:connection_established", message
    sock.socket_id = json.loads(message["data"])["socket_id"]
    return sock


def refused(node: ServerProcess, app: AppCreds) -> int | None:
    """The close code a new connection with the app's key gets."""
    sock = RawWebSocket(node.port, f"/app/{app.key}{WS_QUERY}")
    try:
        return sock.expect_close().code
    finally:
        sock.close()


def wait_for(check: Any, seconds: float, what: str) -> float:
    """Poll `check()` until true; the seconds it took."""
    started = time.monotonic()
    while time.monotonic() - started < seconds:
        if check():
            return time.monotonic() - started
        time.sleep(0.05)
    raise AssertionError(f"{what}: not within {seconds} s")


def wait_applied(pair: Pair, nodes: list[ServerProcess] | None = None) -> None:
    """Wait until the nodes have applied every change saved so far: their app directory's
    cursor (in /up) has reached the store's."""
    cursor = with_store(pair.url, lambda store: store.cursor())
    for node in pair.nodes if nodes is None else nodes:
        wait_for(
            lambda n=node: (health(n, "/up")[1]["app_store"]["cursor"] or 0) >= cursor,
            AT_ONCE,
            f"node on port {node.port} to apply change {cursor}",
        )


def trigger_status(port: int, app: AppCreds, secret: str | None = None) -> int:
    """The HTTP status of a trigger made by the Python SDK."""
    try:
        sdk(port, app, secret).trigger("status-channel", "ping", {"n": 1})
    except pusher.errors.PusherBadAuth:
        return 401
    except pusher.errors.PusherForbidden:
        return 403
    except pusher.errors.PusherBadStatus as exc:
        return int(str(exc).split(":", 1)[0])
    return 200


# --- a new app -----------------------------------------------------------------------------


def test_an_app_added_with_the_cli_works_at_once_on_both_nodes(pair: Pair, js: JsDriver) -> None:
    app = pair.new_app(name="Fresh")
    added = time.monotonic()
    channel = f"fresh-{app.id}"
    for index, node in enumerate(pair.nodes):
        name = f"{pair.kind}-fresh-{index}"
        js.connect(name, node.port, app.key, app.secret, app.id)
        assert js.subscribe(name, channel)["succeeded"]
    within = time.monotonic() - added
    assert within < AT_ONCE, f"the nodes served the new app {within:.2f} s after the CLI"
    # The Node and the Python SDK, each on node A and on node B: every client gets all four.
    js.sdk("trigger", channel, "hello", {"from": "node-a"}, port=pair.a.port, **_node(app))
    js.sdk("trigger", channel, "hello", {"from": "node-b"}, port=pair.b.port, **_node(app))
    sdk(pair.a.port, app).trigger(channel, "hello", {"from": "python-a"})
    sdk(pair.b.port, app).trigger(channel, "hello", {"from": "python-b"})
    for index in range(2):
        got = js.wait(f"{pair.kind}-fresh-{index}", type="channel", event="hello", count=4)
        senders = sorted(e["data"]["from"] for e in got)
        assert senders == ["node-a", "node-b", "python-a", "python-b"]
        js.call("disconnect", client=f"{pair.kind}-fresh-{index}")


def _node(app: AppCreds) -> dict[str, str]:
    return {"key": app.key, "secret": app.secret, "app_id": app.id}


# --- rotating a secret ---------------------------------------------------------------------


def _expiry(pair: Pair, app_id: str) -> float:
    """When the app's previous secret stops being valid, exactly, as the store holds it."""
    stored = with_store(pair.url, lambda store: store.get(app_id))
    assert stored is not None and stored.previous_secret_expires_at is not None
    return stored.previous_secret_expires_at


def _subscribes_privately(node: ServerProcess, app: AppCreds, secret: str) -> bool:
    """Whether a channel auth token signed with `secret` subscribes to a private channel."""
    sock = established(node, app)
    try:
        auth = sdk(1, app, secret).authenticate(
            channel="private-rotation", socket_id=sock.socket_id
        )
        sock.send_json(
            {"event": "pusher:subscribe", "data": {"channel": "private-rotation", **auth}}
        )
        event = sock.recv()["event"]
    finally:
        sock.close()
    assert event in ("pusher_internal:subscription_succeeded", "pusher:error"), event
    return event == "pusher_internal:subscription_succeeded"


def test_a_rotated_secret_keeps_the_old_one_for_the_grace_period(pair: Pair) -> None:
    """Two rotations, so that no check races the clock. The first, with a grace far longer
    than the test: once both nodes took the new secret, both secrets sign API calls and
    channel auth tokens on both nodes. The second, with a short grace, while an SDK keeps
    signing with the secret it replaces: each of its calls is judged against the exact
    expiry the store holds, by when it was sent and answered (a call answered before the
    expiry was accepted, one sent after it is refused), and the test waits for calls on
    both sides of it rather than for a fixed time."""
    app = pair.new_app()
    old = app.secret
    new = "rotated-" + "".join(random.choices(string.ascii_letters, k=16))
    newest = "rotated-again-" + "".join(random.choices(string.ascii_letters, k=16))

    pair.apps("rotate-secret", app.id, "--secret", new, "--grace", "600")
    for node in pair.nodes:
        wait_for(lambda n=node: trigger_status(n.port, app, new) == 200, AT_ONCE, "new secret")
    for node in pair.nodes:
        for secret in (old, new):
            assert trigger_status(node.port, app, secret) == 200
            assert _subscribes_privately(node, app, secret)

    calls: list[tuple[float, float, int]] = []
    """(sent, answered, status) of each call signed with `new`, through node B."""
    stop = threading.Event()

    def traffic() -> None:
        while not stop.is_set():
            sent = time.time()
            status = trigger_status(pair.b.port, app, new)
            calls.append((sent, time.time(), status))
            time.sleep(0.02)

    worker = threading.Thread(target=traffic)
    worker.start()
    try:
        wait_for(lambda: len(calls) >= 3, 10, "calls before the second rotation")
        grace = 4.0
        pair.apps("rotate-secret", app.id, "--secret", newest, "--grace", str(grace))
        expires = _expiry(pair, app.id)
        wait_for(lambda: trigger_status(pair.b.port, app, newest) == 200, AT_ONCE, "newest secret")
        applied = time.time()  # node B has the second rotation from here on
        # The first rotation's secret is gone at once: only the latest previous one is kept.
        assert trigger_status(pair.a.port, app, old) == 401
        assert not _subscribes_privately(pair.a, app, old)
        wait_for(
            lambda: any(sent > expires + 0.1 for sent, _, _ in calls[-3:]) and len(calls) > 3,
            grace + 10,
            "calls after the grace period",
        )
    finally:
        stop.set()
        worker.join()
    during = [status for sent, answered, status in calls if answered < expires]
    within_grace = [s for sent, answered, s in calls if sent > applied and answered < expires]
    after = [status for sent, _, status in calls if sent > expires]
    assert during and set(during) == {200}, during
    assert within_grace, "no call was answered between the rotation and the expiry"
    assert after and set(after) == {401}, after
    for node in pair.nodes:
        assert trigger_status(node.port, app, new) == 401
        assert trigger_status(node.port, app, newest) == 200
        assert not _subscribes_privately(node, app, new)
        assert _subscribes_privately(node, app, newest)


# --- disable, enable, remove, change limits ------------------------------------------------


def test_disable_enable_remove_and_limits(pair: Pair) -> None:
    app = pair.new_app()
    open_a, open_b = established(pair.a, app), established(pair.b, app)
    assert trigger_status(pair.b.port, app) == 200

    pair.apps("disable", app.id)
    assert open_a.expect_close(timeout=AT_ONCE).code == 4003
    assert open_b.expect_close(timeout=AT_ONCE).code == 4003
    assert refused(pair.a, app) == 4003
    assert trigger_status(pair.b.port, app) == 403
    status, _ = signed_post(pair.a.port, f"/apps/{app.id}/events", _event(), app)
    assert status == 403

    pair.apps("enable", app.id)
    wait_for(lambda: trigger_status(pair.b.port, app) == 200, AT_ONCE, "enabled on node B")
    established(pair.a, app).close()

    pair.apps("set", app.id, "--max-connections", "1")
    wait_applied(pair, [pair.a])
    first = established(pair.a, app)
    assert refused(pair.a, app) == 4004  # a new connection: over the changed limit
    pair.apps("set", app.id, "--reset", "max_connections")
    wait_applied(pair, [pair.a])
    second = established(pair.a, app)

    pair.apps("remove", app.id)
    assert first.expect_close(timeout=AT_ONCE).code == 4001
    assert second.expect_close(timeout=AT_ONCE).code == 4001
    assert refused(pair.b, app) == 4001
    status, body = signed_post(pair.b.port, f"/apps/{app.id}/events", _event(), app)
    assert status == 404, body


def _event() -> dict[str, Any]:
    return {"name": "e", "channels": ["c"], "data": "{}"}


# --- a flood of unknown keys ---------------------------------------------------------------


def test_a_thousand_unknown_keys_cost_a_bounded_number_of_queries(pair: Pair) -> None:
    known = pair.new_app()
    wait_applied(pair, [pair.a])  # the refresh the new app causes is not counted below
    window_opened = time.monotonic()
    _, before = health(pair.a, "/up")
    started = time.monotonic()
    for _ in range(1_000):
        key = "".join(random.choices(string.ascii_lowercase + string.digits, k=20))
        sock = RawWebSocket(pair.a.port, f"/app/{key}{WS_QUERY}")
        assert sock.expect_close().code == 4001
        sock.close()
    elapsed = time.monotonic() - started
    time.sleep(0.5)  # the lookups still waiting for their turn are dropped, not queued up
    _, after = health(pair.a, "/up")
    window = time.monotonic() - window_opened  # both counter reads inside it
    queries = after["app_store"]["queries"] - before["app_store"]["queries"]
    lookups = after["app_store"]["lookups"] - before["app_store"]["lookups"]
    # At most a burst of 20 then 10 a second (one more for a token that refills as the
    # window closes), plus the refreshes (up to 3 queries each).
    lookup_bound = 20 + 10 * window + 1
    bound = lookup_bound + 3 * (window / REFRESH + 2) + 5
    print(f"{pair.kind}: 1000 unknown keys, {elapsed:.1f} s: {queries} queries, {lookups} lookups")
    assert 0 < lookups <= lookup_bound, (lookups, lookup_bound)
    assert queries <= bound, (queries, bound)
    established(pair.a, known).close()  # still serving


# --- the database goes away ----------------------------------------------------------------


def test_the_nodes_keep_serving_while_the_database_is_away(pair: Pair, js: JsDriver) -> None:
    if pair.kind == "sqlite":
        pytest.skip("an SQLite store is a file of this host: there is no server to stop")
    app = pair.new_app()
    server = database_server(pair.kind)
    assert health(pair.a)[0] == 200
    late: ServerProcess | None = None
    server.stop()
    try:
        for node in pair.nodes:
            wait_for(lambda n=node: health(n)[0] == 503, REFRESH + 3, "/ready 503")
        _, state = health(pair.b)
        assert "app store" in state["reason"] and state["app_store"]["healthy"] is False
        metrics_url = f"http://127.0.0.1:{pair.b.metrics_port()}/metrics"
        with urllib.request.urlopen(metrics_url, timeout=5) as response:
            assert "app_store_healthy 0\n" in response.read().decode()
        # Serving goes on with the apps known: connections, subscriptions, triggers.
        js.connect(f"{pair.kind}-outage", pair.a.port, app.key, app.secret, app.id)
        assert js.subscribe(f"{pair.kind}-outage", "during-outage")["succeeded"]
        sdk(pair.b.port, app).trigger("during-outage", "still", {"ok": True})
        js.wait(f"{pair.kind}-outage", type="channel", event="still")
        assert refused(pair.a, AppCreds("0", "no-such-key", "x")) == 4001
        # A node started meanwhile starts too, serving nothing yet, not ready.
        late = ServerProcess(env=pair.env)
        status, state = health(late)
        assert status == 503 and state["app_store"]["apps"] == 0
    finally:
        server.start()
    assert late is not None
    for node in [*pair.nodes, late]:
        wait_for(lambda n=node: health(n)[0] == 200, 2 * REFRESH + 5, "/ready 200 again")
    established(late, app).close()
    late.stop()
    later = pair.new_app()  # changes flow again
    wait_for(lambda: trigger_status(pair.b.port, later) == 200, AT_ONCE, "a new app after")
    js.call("disconnect", client=f"{pair.kind}-outage")
    assert "reachable again" in pair.a.output()


# --- the announcement alone ----------------------------------------------------------------


@pytest.mark.parametrize("topology", ["redis", "sentinel", "cluster"])
def test_the_redis_announcement_alone_brings_a_change(topology: str, tmp_path: Path) -> None:
    """Nodes that would refresh only hourly still apply `pyserver apps` changes at once: the
    announcement on Redis, not the refresh, brings them (and the first connection works, so
    it is not the unknown-key lookup either). On a single Redis, behind Sentinel and on a
    Redis Cluster (sharded pub/sub)."""
    env = {
        "PYSERVER_APP_STORE": f"sqlite:///{tmp_path / 'apps.db'}",
        "PYSERVER_APP_STORE_REFRESH": "3600",
        "PYSERVER_ADAPTER": "redis",
        **(
            {"PYSERVER_REDIS_URL": shared_redis().url}
            if topology == "redis"
            else redis_env(topology)
        ),
        "PYSERVER_REDIS_PREFIX": f"announce{os.getpid()}{topology}",
    }
    hourly = Pair("sqlite", env["PYSERVER_APP_STORE"], env)
    hourly.nodes = [ServerProcess(env=env) for _ in range(2)]
    try:
        app = hourly.new_app()
        for node in hourly.nodes:
            established(node, app).close()
        open_b = established(hourly.b, app)
        hourly.apps("disable", app.id)
        assert open_b.expect_close(timeout=AT_ONCE).code == 4003
    finally:
        for node in hourly.nodes:
            node.stop()


# --- webhooks of an app from the store -----------------------------------------------------


def test_webhooks_of_a_new_app_are_signed_with_the_current_secret(pair: Pair) -> None:
    receiver = WebhookReceiver()
    try:
        hooks = json.dumps([{"url": receiver.url("/hooks"), "event_types": ["channel_occupied"]}])
        app = pair.new_app(webhooks=hooks)
        first = established(pair.a, app)
        first.send_json({"event": "pusher:subscribe", "data": {"channel": "hooked-1"}})
        first.recv()
        delivery, _ = receiver.wait_for(lambda e: e["channel"] == "hooked-1")
        assert delivery.headers["x-pusher-signature"] == _hmac(app.secret, delivery.body)

        pair.apps("rotate-secret", app.id, "--secret", "after-rotation")
        wait_applied(pair, [pair.b])
        second = established(pair.b, app)
        second.send_json({"event": "pusher:subscribe", "data": {"channel": "hooked-2"}})
        second.recv()
        delivery, _ = receiver.wait_for(lambda e: e["channel"] == "hooked-2")
        assert delivery.headers["x-pusher-signature"] == _hmac("after-rotation", delivery.body)
        first.close()
        second.close()
    finally:
        receiver.close()


def _hmac(secret: str, body: bytes) -> str:
    return hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
