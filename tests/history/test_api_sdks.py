"""The history API through the official SDKs, before it is routed in the server: a loopback
HTTP server verifies each request's signature with pyserver's own check and answers with the
history handler. Node's `pusher.get({path, params})` and the Python helper documented in
docs/history.md must both get through unchanged, their query values unescaped as positions
allow."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

import pusher
import pytest
from pusher.http import GET, Request

from pyserver.auth.requests import verify_request
from pyserver.config import HistoryRule
from pyserver.history.api import history_reply
from pyserver.history.memory import MemoryHistoryStore
from pyserver.protocol import frames
from pyserver.protocol.history import RuleBook

JS_DIR = Path(__file__).resolve().parents[1] / "js"
APP_ID, KEY, SECRET = "1234", "app-key", "app-secret"
RULES = RuleBook([HistoryRule(channels="chat-*", limit=100, ttl=3600)])


def channel_history(client: pusher.Pusher, channel: str, **params: Any) -> Any:
    """GET /apps/{app_id}/channels/{channel}/history, signed like every SDK call.

    The helper of docs/history.md ("From Python"), verbatim: pusher-http-python has no
    generic GET, so it builds the SDK's own signed Request."""
    sdk = client._pusher_client  # pusher.Pusher hands its HTTP calls to this client
    query = {name: str(value) for name, value in params.items()}
    request = Request(sdk, GET, f"/apps/{sdk.app_id}/channels/{channel}/history", query)
    return sdk.http.send_request(request)


@pytest.fixture(scope="module")
def server() -> Iterator[tuple[int, MemoryHistoryStore, list[str]]]:
    store = MemoryHistoryStore(1 << 24)
    rule = RULES.rule_for("chat-1")
    assert rule is not None
    for n in range(1, 6):
        payload = frames.channel_event("message", "chat-1", f"text {n}")
        store.append_now(APP_ID, "chat-1", rule, payload, 1_733_300_000_000 + n)
    targets: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            targets.append(self.path)
            split = urlsplit(self.path)
            query = dict(parse_qsl(split.query, keep_blank_values=True))
            verify_request(
                method="GET",
                paths=[split.path, unquote(split.path)],
                params=query,
                body=b"",
                app_key=KEY,
                secret=SECRET,
                now=time.time(),
            )
            channel = unquote(split.path).split("/")[4]
            reply = asyncio.run(history_reply(RULES, store, APP_ID, channel, query))
            body = json.dumps(reply.body).encode()
            self.send_response(reply.status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=http.serve_forever, daemon=True)
    thread.start()
    yield http.server_address[1], store, targets
    http.shutdown()
    http.server_close()


def test_the_python_helper_reads_pages(server: tuple[int, MemoryHistoryStore, list[str]]) -> None:
    port, store, targets = server
    client = pusher.Pusher(APP_ID, KEY, SECRET, host="127.0.0.1", port=port, ssl=False)
    first = channel_history(client, "chat-1", limit=2)
    assert [e["data"] for e in first["events"]] == ["text 5", "text 4"]
    assert first["epoch"] == store.epoch
    second = channel_history(client, "chat-1", limit=2, before=first["next"])
    assert [e["data"] for e in second["events"]] == ["text 3", "text 2"]
    assert f"before={first['next']}" in targets[-1], "the position went into the URL as is"
    forward = channel_history(client, "chat-1", direction="forward", after=first["position"])
    assert forward["events"] == [] and forward["next"] is None
    with pytest.raises(pusher.errors.PusherBadRequest):
        channel_history(client, "chat-1", limit=5000)


@pytest.mark.skipif(
    shutil.which("node") is None or not (JS_DIR / "node_modules" / "pusher").is_dir(),
    reason="node and tests/js/node_modules (npm ci) are needed",
)
def test_the_node_sdk_get_reads_pages(server: tuple[int, MemoryHistoryStore, list[str]]) -> None:
    port, store, _ = server
    script = f"""
import Pusher from 'pusher';
const pusher = new Pusher({{appId: '{APP_ID}', key: '{KEY}', secret: '{SECRET}',
  host: '127.0.0.1', port: '{port}', useTLS: false}});
const first = await (await pusher.get({{path: '/channels/chat-1/history',
  params: {{limit: 2}}}})).json();
const second = await (await pusher.get({{path: '/channels/chat-1/history',
  params: {{limit: 2, before: first.next}}}})).json();
let conflict = null;
try {{
  await pusher.get({{path: '/channels/chat-1/history', params: {{after: 'zzzz.11.0'}}}});
}} catch (error) {{ conflict = {{status: error.status, body: JSON.parse(error.body)}}; }}
console.log(JSON.stringify({{first, second, conflict}}));
"""
    result = subprocess.run(
        ["node", "--input-type=module", "-e", script],
        cwd=JS_DIR,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    answer = json.loads(result.stdout)
    assert [e["data"] for e in answer["first"]["events"]] == ["text 5", "text 4"]
    assert [e["data"] for e in answer["second"]["events"]] == ["text 3", "text 2"]
    assert answer["conflict"]["status"] == 409
    assert answer["conflict"]["body"]["epoch"] == store.epoch
