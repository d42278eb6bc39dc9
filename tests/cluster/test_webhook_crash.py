"""Webhooks survive a crash (issue 14 item 3): two nodes on one Redis, a receiver that fails,
node A SIGKILLed while its retries are pending, then the receiver comes back. Every event
arrives, with its original `time_ms`, no delivery is sent by two nodes at once, and batched
requests still never mix apps (one app batches, the other sends one event per request)."""

from __future__ import annotations

import hashlib
import hmac
import re
import signal
import time
import urllib.request
from collections.abc import Iterator

import pytest

from tests.cluster.watching_receiver import WatchingReceiver
from tests.integration.conftest import MAIN, AppCreds, PusherSocket
from tests.integration.serverproc import ServerProcess
from tests.redisproc import RedisProcess

SECOND = AppCreds("2001", "second-key", "second-secret")
APPS = {app.key: app for app in (MAIN, SECOND)}


@pytest.fixture(scope="module")
def redis() -> Iterator[RedisProcess]:
    proc = RedisProcess()
    yield proc
    proc.stop()


def _config(receiver: WatchingReceiver) -> str:
    return f"""
webhook_delay = 0.5
webhook_retry_base = 0.5
webhook_timeout = 1
webhook_lease = 1

[[apps]]
id = "{MAIN.id}"
key = "{MAIN.key}"
secret = "{MAIN.secret}"
webhook_batch_ms = 300

[[apps.webhooks]]
url = "{receiver.url()}"
event_types = ["channel_occupied"]

[[apps]]
id = "{SECOND.id}"
key = "{SECOND.key}"
secret = "{SECOND.secret}"

[[apps.webhooks]]
url = "{receiver.url()}"
event_types = ["channel_occupied"]
"""


def _queue_depth(node: ServerProcess) -> int:
    url = f"http://127.0.0.1:{node.metrics_port()}/metrics"
    with urllib.request.urlopen(url, timeout=5) as response:
        text = response.read().decode()
    match = re.search(r"^pyserver_webhook_queue_depth (\d+)$", text, re.MULTILINE)
    assert match, text
    return int(match.group(1))


def test_a_node_killed_with_retries_pending_loses_no_webhook(redis, uid) -> None:
    receiver = WatchingReceiver(hold=0.5, failing=True)
    env = {
        "PYSERVER_ADAPTER": "redis",
        "PYSERVER_REDIS_URL": redis.url,
        "PYSERVER_REDIS_PREFIX": f"crash-{uid}",
        "PYSERVER_REDIS_HEARTBEAT": "0.5",
        "PYSERVER_REDIS_DEAD_AFTER": "2",
    }
    a = ServerProcess(_config(receiver), env=env)
    b = ServerProcess(_config(receiver), env=env)
    sockets: list[PusherSocket] = []
    try:
        channels = {f"{app.id}-room{i}-{uid}" for app in APPS.values() for i in range(8)}
        for channel in sorted(channels):
            app = MAIN if channel.startswith(MAIN.id) else SECOND
            sock = PusherSocket(a.port, app)  # every event starts on node A
            sock.subscribe(channel)
            sockets.append(sock)

        def first_seen() -> dict[str, int]:
            """Each channel's `time_ms` in the first request that carried it."""
            seen: dict[str, int] = {}
            for request in list(receiver.requests):
                for event in request.json["events"]:
                    seen.setdefault(event["channel"], request.json["time_ms"])
            return seen

        assert receiver.wait_until(lambda: set(first_seen()) >= channels, 10), first_seen()
        original = first_seen()
        time.sleep(1.2)  # every delivery has failed and waits for a retry, on either node
        receiver.wait_until(lambda: receiver.in_flight(), 5)  # some are being sent, maybe by A
        assert not receiver.answered(), "the receiver is still failing"
        a.proc.send_signal(signal.SIGKILL)
        a.proc.wait(5)
        time.sleep(0.5)
        receiver.failing = False  # the receiver comes back

        def delivered() -> dict[str, list[int]]:
            got: dict[str, list[int]] = {}
            for request in receiver.answered():
                for event in request.json["events"]:
                    if event["name"] == "channel_occupied":
                        got.setdefault(event["channel"], []).append(request.json["time_ms"])
            return got

        # within the retry window: backoff (at most 4 s here) plus a lease (6 s) plus slack
        assert receiver.wait_until(lambda: set(delivered()) >= channels, 20), (
            sorted(channels - set(delivered())),
            b.output()[-3000:],
        )
        time.sleep(1.0)  # any concurrent or late second send would arrive meanwhile
        got = delivered()
        assert {c: times[0] for c, times in got.items() if c in channels} == original
        assert all(len(set(times)) == 1 for times in got.values()), "time_ms never changes"
        assert receiver.overlaps == [], "a delivery was sent by two nodes at the same time"

        for request in receiver.answered():
            app = APPS[request.headers["x-pusher-key"]]
            expected = hmac.new(app.secret.encode(), request.body, hashlib.sha256).hexdigest()
            assert request.headers["x-pusher-signature"] == expected
            assert all(e["channel"].startswith(app.id) for e in request.json["events"]), (
                "a batch mixed apps"
            )
        assert receiver.wait_until(lambda: _queue_depth(b) == 0, 10), "the shared queue empties"
    finally:
        for sock in sockets:
            sock.close()
        a.stop(signal.SIGKILL)
        b.stop()
        receiver.close()
