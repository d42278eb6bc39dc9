"""Issue 16: the dashboard's stats over time, through `GET /console/api/stats` after known
traffic on a real server, and drawn in real headless Chromium
(`tests/js/dashboard_screenshot.mjs`): charts drawn from that traffic, a feed entry pushed
within a second, the page's stream dropped and resumed without a lost or repeated entry;
screenshots kept in test-artifacts/dashboard.png and dashboard-charts.png. The stream's
own rules over raw HTTP are in `test_stream_*` below."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.integration.conftest import PusherSocket, sdk
from tests.integration.httpapi import request
from tests.integration.serverproc import ROOT, ServerProcess
from tests.integration.sse import SseClient
from tests.integration.test_console import basic
from tests.integration.webhook_receiver import WebhookReceiver

TOKEN = "t0ken-for-the-dashboard"
CONFIG = """
console_token = "{token}"
webhook_retry_base = 0.1

[[apps]]
id = "1001"
key = "app-key"
secret = "app-secret"

[[apps.webhooks]]
url = "{hook}"
event_types = ["channel_occupied"]

[[apps]]
id = "1002"
key = "other-key"
secret = "other-secret"
"""
HOOK = "/dashboard-hooks"


APP = basic("1001", "app-secret")
OTHER = basic("1002", "other-secret")
BEARER = {"Authorization": f"Bearer {TOKEN}"}
FIELDS = (
    "messages_sent",
    "messages_received",
    "api_calls",
    "webhook_deliveries",
    "webhook_failures",
)


@pytest.fixture(scope="module")
def receiver() -> Iterator[WebhookReceiver]:
    r = WebhookReceiver()
    yield r
    r.close()


@pytest.fixture(scope="module")
def traffic(receiver: WebhookReceiver) -> Iterator[tuple[ServerProcess, list[PusherSocket]]]:
    """A fresh server, and known traffic on app 1001 whose sockets stay open.

    Frames sent to clients: 3 connection_established, 3 subscription_succeeded, 2 triggers
    to the 2 room members and 1 to the news reader, 1 client event to the other member: 12.
    Received from clients: 3 subscribes and 1 client event: 4. API calls: 3 triggers.
    Webhooks: channel_occupied for both channels, the first 2 attempts answered 503."""
    receiver.fail_next(HOOK, 2)
    proc = ServerProcess(CONFIG.format(token=TOKEN, hook=receiver.url(HOOK)))
    port = proc.port
    alice, bob, reader = (PusherSocket(port) for _ in range(3))
    alice.signed_subscribe("private-room")
    bob.signed_subscribe("private-room")
    reader.subscribe("news")
    client = sdk(port)
    client.trigger("private-room", "one", {"n": 1})
    client.trigger("private-room", "two", {"n": 2})
    client.trigger("news", "headline", {"n": 3})
    alice.send_json({"event": "client-typing", "channel": "private-room", "data": {}})
    for sock, name in ((alice, "one"), (alice, "two"), (bob, "one"), (bob, "two")):
        sock.recv_event(name)
    reader.recv_event("headline")
    bob.recv_event("client-typing")
    for channel in ("private-room", "news"):
        receiver.wait_for(lambda e, c=channel: e.get("channel") == c, path=HOOK)
    sockets = [alice, bob, reader]
    yield proc, sockets
    for sock in sockets:
        sock.close()
    proc.stop()


def _stats(port: int, headers: dict[str, str], query: str = "?app=1001") -> tuple[int, Any]:
    status, body, _ = request(port, "GET", "/console/api/stats" + query, headers=headers)
    return status, body


def _sums(points: list[dict[str, Any]]) -> dict[str, int]:
    return {name: sum(p[name] or 0 for p in points) for name in FIELDS}


def _settled(port: int, expected: dict[str, int], timeout: float = 10.0) -> dict[str, Any]:
    """The stats once the sampler has seen the traffic (one sample a second)."""
    deadline = time.monotonic() + timeout
    while True:
        body = _stats(port, APP)[1]
        if _sums(body["minutes"]) == expected or time.monotonic() > deadline:
            return dict(body)
        time.sleep(0.2)


EXPECTED = {
    "messages_sent": 12,
    "messages_received": 4,
    "api_calls": 3,
    "webhook_deliveries": 2,
    "webhook_failures": 2,
}


def test_stats_after_known_traffic_are_exact(traffic, receiver) -> None:
    proc, _ = traffic
    delivered = len({id(r) for r, _ in receiver.events(HOOK)})
    assert (delivered, receiver.attempts[HOOK] - delivered) == (2, 2)
    body = _settled(proc.port, EXPECTED)
    assert body["app"] == "1001" and abs(body["now"] - time.time()) < 5
    minutes, days = body["minutes"], body["days"]
    assert len(minutes) == 1440 and len(days) == 30
    assert _sums(minutes) == EXPECTED
    assert _sums(days) == EXPECTED  # one UTC day, or two around midnight: the same sums
    sampled = [p for p in minutes if p["nodes"]]
    assert sampled and all(p["nodes"] == 1 for p in sampled)
    assert minutes[-1]["nodes"] == 1 and minutes[-1]["connections"] == 3
    assert max(p["peak_connections"] for p in sampled) == 3
    assert max(p["peak_connections"] or 0 for p in days) == 3
    # Before the server started: gaps, with every count null.
    assert minutes[0]["nodes"] == 0 and all(minutes[0][name] is None for name in FIELDS)
    assert [p["time"] for p in minutes] == list(
        range(minutes[-1]["time"] - 1439 * 60, minutes[-1]["time"] + 1, 60)
    )
    assert days[-1]["date"] == time.strftime("%Y-%m-%d", time.gmtime(days[-1]["time"]))
    # Another app's numbers are its own.
    other = _stats(proc.port, OTHER, "?app=1002")[1]
    assert _sums(other["minutes"]) == dict.fromkeys(FIELDS, 0)
    assert other["minutes"][-1]["connections"] == 0
    # `from` serves only the minutes (and days) that end after it.
    last = minutes[-1]["time"]
    tail = _stats(proc.port, BEARER, f"?app=1001&from={last}")[1]
    assert [p["time"] for p in tail["minutes"]][:1] == [last] and len(tail["days"]) == 1


def test_stats_need_the_console_login(traffic) -> None:
    proc, _ = traffic
    port = proc.port
    assert _stats(port, {})[0] == 401
    assert _stats(port, basic("1001", "wrong"))[0] == 401
    assert _stats(port, OTHER, "?app=1001")[0] == 404  # an app login sees only its app
    status, body = _stats(port, OTHER, "")
    assert status == 200 and body["app"] == "1002"
    assert _stats(port, BEARER, "?app=1002")[0] == 200
    for bad in ("x", "nan", "inf", "1e999"):
        status, body = _stats(port, APP, f"?app=1001&from={bad}")
        assert status == 400 and "from" in body["error"], bad
    status, _, _ = request(port, "POST", "/console/api/stats?app=1001", headers=APP)
    assert status == 405


def test_dashboard_in_headless_chromium(traffic, receiver) -> None:
    assert shutil.which("chromium"), "chromium is missing: scripts/test.sh installs it"
    proc, sockets = traffic
    port = proc.port
    before = _settled(port, EXPECTED)
    out = ROOT / "test-artifacts" / "dashboard.png"
    charts = ROOT / "test-artifacts" / "dashboard-charts.png"
    out.unlink(missing_ok=True)
    charts.unlink(missing_ok=True)
    result = subprocess.run(
        [
            "node",
            str(ROOT / "tests" / "js" / "dashboard_screenshot.mjs"),
            f"http://127.0.0.1:{port}/console",
            "1001",
            "app-secret",
            "news",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT / "tests" / "js",
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    seen = json.loads(result.stdout.strip().splitlines()[-1])
    after = _stats(port, APP)[1]

    # What was drawn first is what the server served: the points with data in the last
    # hour (one more if a minute began meanwhile), the highest values of each chart.
    drawn = seen["drawn"]["60"]
    sampled = [sum(1 for p in body["minutes"][-60:] if p["nodes"]) for body in (before, after)]
    for chart in ("connections", "messages"):
        assert drawn[chart]["window"] == 60 and drawn[chart]["points"] in sampled, drawn
    assert drawn["connections"]["paths"] == ["peak_connections", "connections"]
    assert drawn["messages"]["paths"] == ["messages_sent", "messages_received"]
    assert drawn["connections"]["max"] == 3
    assert drawn["messages"]["max"] == max(
        max(p["messages_sent"] or 0, p["messages_received"] or 0) for p in before["minutes"]
    )
    assert drawn["days"]["window"] == 30 and drawn["days"]["bars"] >= 2  # sent and received
    assert drawn["days"]["max"] == max(
        (p["messages_sent"] or 0) + (p["messages_received"] or 0) for p in before["days"]
    )
    totals = dict(drawn["totals"])
    today = before["days"][-1]
    assert totals["API calls"] == str(today["api_calls"])
    assert totals["peak connections"] == "3"
    assert totals["sent to clients"] == str(today["messages_sent"])

    # The range switch: 6 h and 24 h have as many slots as minutes, the same points.
    for minutes in ("360", "1440"):
        for chart in ("connections", "messages"):
            assert seen["drawn"][minutes][chart]["window"] == int(minutes)
            assert seen["drawn"][minutes][chart]["points"] in sampled
    assert (
        seen["drawn"]["60"]["connections"]["labels"]
        != seen["drawn"]["360"]["connections"]["labels"]
    )
    assert "sent" in seen["hover"]
    first_day = before["days"][0]["date"]
    assert seen["firstDay"] == f"{first_day} (UTC): no data"
    assert seen["today"].startswith(before["days"][-1]["date"] + " (UTC): ")
    assert "API calls" in seen["today"]

    # Live: the event triggered from the page reached the reader and the charts.
    assert sockets[2].recv_event("from-dashboard")["data"] == '{"hello":"charts"}'
    assert int(dict(seen["live"]["totals"])["sent to clients"]) > int(totals["sent to clients"])
    # Pushed within a second; the dropped stream resumed with nothing lost or repeated.
    assert seen["pushMs"] < 1000, seen["pushMs"]
    resumed = seen["resumed"]
    assert resumed["stream"]["opened"] == resumed["opened"] + 1, resumed
    assert resumed["stream"]["resets"] == [], "the resume id was still held: no reset"
    names = resumed["names"]
    for name in ("from-dashboard", "pushed-now", "while-away-0", "while-away-1", "while-away-2"):
        assert names.count(name) == 1, (name, names)
    away = [n for n in names if n.startswith("while-away-")]
    assert away == ["while-away-0", "while-away-1", "while-away-2"]
    assert out.stat().st_size > 20_000, "the screenshot looks empty"
    assert charts.stat().st_size > 10_000, "the charts' screenshot looks empty"


def _trigger(port: int, event: str) -> None:
    body = json.dumps({"app": "1001", "channel": "news", "event": event, "data": "{}"})
    status, _, _ = request(port, "POST", "/console/api/trigger", body.encode(), headers=APP)
    assert status == 200


def _feed(client: SseClient, *names: str) -> list[Any]:
    """Feed events until every one of `names` has come."""
    found: list[Any] = []
    missing = set(names)
    deadline = time.monotonic() + 10
    while missing:
        event = client.next(max(0.0, deadline - time.monotonic()))
        assert event is not None, f"{missing} did not come: {[e.data for e in found]}"
        if event.name == "feed":
            found.append(event)
            missing.discard(event.data["event"])
    return found


def test_stream_needs_the_console_login(traffic) -> None:
    proc, _ = traffic
    refused = SseClient(proc.port, "/console/api/stream?app=1001")
    assert refused.status == 401
    refused.close()
    other = SseClient(proc.port, "/console/api/stream?app=1001", OTHER)
    assert other.status == 404
    other.close()
    status, _, _ = request(proc.port, "POST", "/console/api/stream?app=1001", headers=APP)
    assert status == 405


def test_stream_pushes_feed_stats_and_state_and_resumes_exactly(traffic) -> None:
    proc, _ = traffic
    port = proc.port
    client = SseClient(port, "/console/api/stream?app=1001", APP)
    assert client.status == 200
    assert "text/event-stream" in client.head and "X-Accel-Buffering: no" in client.head
    opening = client.drain(1.5)
    kinds = {e.name for e in opening}
    assert {"feed", "stats", "state"} <= kinds, kinds
    whole = next(e for e in opening if e.name == "stats").data
    assert len(whole["minutes"]) == 1440 and len(whole["days"]) == 30
    state = next(e for e in opening if e.name == "state").data
    assert state["connections"] == 3 and {c["name"] for c in state["channels"]} >= {"news"}
    _trigger(port, "live-one")
    first = _feed(client, "live-one")
    last_id = first[-1].id
    assert last_id and first[-1].data["channel"] == "news"
    later = client.events("stats", 1, 5)  # every 2 s: this minute and the one before
    assert later and len(later[0].data["minutes"]) == 2 and len(later[0].data["days"]) <= 2
    client.close()

    for n in range(3):  # while no stream is open
        _trigger(port, f"away-{n}")
    again = SseClient(port, "/console/api/stream?app=1001", {**APP, "Last-Event-ID": last_id})
    resumed = _feed(again, "away-0", "away-1", "away-2")
    assert [e.data["event"] for e in resumed] == ["away-0", "away-1", "away-2"]
    again.close()
    # The id in the query does the same (for clients that cannot set headers).
    query = SseClient(port, f"/console/api/stream?app=1001&last_event_id={last_id}", APP)
    assert [e.data["event"] for e in _feed(query, "away-2")] == ["away-0", "away-1", "away-2"]
    query.close()

    # An id this server never made (another start): an explicit reset, then what is held.
    stale = SseClient(port, "/console/api/stream?app=1001", {**APP, "Last-Event-ID": "1-5"})
    events = stale.drain(1.0)
    feed = [e for e in events if e.name in ("reset", "feed")]
    assert feed[0].name == "reset" and feed[0].data == {"dropped": None, "reason": "unknown-id"}
    assert feed[-1].data["event"] == "away-2"
    stale.close()
