"""`path_prefix`: the server also answers under a path, for pusher-js's `wsPath` and for
proxies that share a domain; API signatures verify with or without the prefix."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from tests.integration.conftest import WS_QUERY
from tests.integration.httpapi import request, sign_params
from tests.integration.jsdriver import JsDriver
from tests.integration.rawws import RawWebSocket
from tests.integration.serverproc import ServerProcess

CONFIG = """
path_prefix = "/pusher/"

[[apps]]
id = "1001"
key = "app-key"
secret = "app-secret"
"""


@pytest.fixture(scope="module")
def prefixed() -> Iterator[ServerProcess]:
    proc = ServerProcess(CONFIG)
    yield proc
    proc.stop()


def test_pusher_js_with_ws_path(prefixed: ServerProcess, js: JsDriver, uid: str) -> None:
    name = f"prefixed-{uid}"
    js.connect(name, prefixed.port, app_id="1001", wsPath="/pusher")
    assert js.subscribe(name, f"room-{uid}")["succeeded"]
    trigger(prefixed.port, "/pusher/apps/1001/events", f"room-{uid}", signed_with_prefix=True)
    (entry,) = js.wait(name, type="channel", event="hello")
    assert entry["data"] == {"n": 1}


@pytest.mark.parametrize("signed_with_prefix", [True, False])
def test_api_signed_with_or_without_the_prefix(
    prefixed: ServerProcess, uid: str, signed_with_prefix: bool
) -> None:
    ws = RawWebSocket(prefixed.port, f"/pusher/app/app-key{WS_QUERY}")
    assert ws.recv()["event"] == "pusher:connection_established"
    ws.send_json({"event": "pusher:subscribe", "data": {"channel": f"c-{uid}"}})
    assert ws.recv()["event"] == "pusher_internal:subscription_succeeded"
    status = trigger(prefixed.port, "/pusher/apps/1001/events", f"c-{uid}", signed_with_prefix)
    assert status == 200
    assert ws.recv()["event"] == "hello"
    ws.close()


def test_paths_without_the_prefix_still_work(prefixed: ServerProcess, uid: str) -> None:
    ws = RawWebSocket(prefixed.port, f"/app/app-key{WS_QUERY}")
    assert ws.recv()["event"] == "pusher:connection_established"
    ws.close()
    assert trigger(prefixed.port, "/apps/1001/events", f"c-{uid}", False) == 200
    assert request(prefixed.port, "GET", "/pusher/up")[0] == 200


def test_a_prefix_is_a_whole_path_segment(prefixed: ServerProcess) -> None:
    ws = RawWebSocket(prefixed.port, f"/pusherx/app/app-key{WS_QUERY}")
    error = ws.recv()
    assert error["event"] == "pusher:error" and error["data"]["code"] == 4005


def trigger(port: int, path: str, channel: str, signed_with_prefix: bool) -> int:
    body = json.dumps({"name": "hello", "channel": channel, "data": '{"n":1}'}).encode()
    signed_path = path if signed_with_prefix else path.removeprefix("/pusher")
    status, _, _ = request(port, "POST", path, body, sign_params("POST", signed_path, {}, body))
    return status
