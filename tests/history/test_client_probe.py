"""What unmodified pusher-js 8 and 7 and Laravel Echo do with the frames the history feature
needs, proven against a bare loopback WebSocket server that scripts every frame (these facts
decided the server's design; test_live.py runs the real server):

- a `pusher:`-prefixed event on a channel reaches `channel.bind`, `channel.bind_global`,
  `pusher.bind_global` and Echo's `.listen('.pusher:…')`, but not Echo's `.listenToAll`;
- a `pusher_internal:` frame without a channel is visible to `pusher.connection.bind('message')`
  and to nothing else;
- the anonymous catch-up snippet, bound to `state_change`, gets its `pusher:resume` to the
  server before the automatic re-subscribes (private ones included); bound to `connected` it
  comes after them.
"""

from __future__ import annotations

import asyncio
import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.server import ServerConnection, serve

JS_DIR = Path(__file__).resolve().parents[1] / "js"
PROBE = JS_DIR / "resume_probe.mjs"

pytestmark = pytest.mark.skipif(
    shutil.which("node") is None or not (JS_DIR / "node_modules" / "pusher-js").is_dir(),
    reason="node and tests/js/node_modules (npm ci) are needed",
)


def established(socket_id: str) -> str:
    data = json.dumps({"socket_id": socket_id, "activity_timeout": 120})
    return json.dumps({"event": "pusher:connection_established", "data": data})


def event(name: str, channel: str | None, data: Any) -> str:
    frame: dict[str, Any] = {"event": name, "data": json.dumps(data)}
    if channel is not None:
        frame["channel"] = channel
    return json.dumps(frame)


CHANNELS = {"chat-1", "private-chat-2"}


class ScriptedServer:
    """Connection 1: hand out token T1, answer the subscribes, send the history frames, then
    close with 4200 (pusher-js reconnects at once). Connection 2: record what arrives until
    both channels are subscribed again, then say `probe-done`."""

    def __init__(self) -> None:
        self.connections = 0
        self.second: list[dict[str, Any]] = []

    async def handle(self, ws: ServerConnection) -> None:
        self.connections += 1
        number = self.connections
        await ws.send(established(f"{number}.{number}"))
        await ws.send(event("pusher_internal:resume_token", None, {"token": f"T{number}"}))
        pending = set(CHANNELS)
        async for raw in ws:
            frame = json.loads(raw)
            if number == 2:
                self.second.append(frame)
            if frame["event"] == "pusher:ping":
                await ws.send(json.dumps({"event": "pusher:pong", "data": {}}))
            if frame["event"] != "pusher:subscribe":
                continue
            channel = frame["data"]["channel"]
            pending.discard(channel)
            await ws.send(event("pusher_internal:subscription_succeeded", channel, {}))
            if pending:
                continue
            if number == 1:
                for name in sorted(CHANNELS):
                    await ws.send(event("pusher:recovery_failed", name, {"reason": "ttl"}))
                await ws.send(event("hello", "chat-1", {"n": 1}))
                await ws.close(4200, "reconnect now")
                return
            await ws.send(event("probe-done", "chat-1", {}))


async def probe(version: str, mode: str) -> tuple[ScriptedServer, list[dict[str, Any]]]:
    server = ScriptedServer()
    async with serve(server.handle, "127.0.0.1", 0) as ws_server:
        port = next(iter(ws_server.sockets)).getsockname()[1]
        node = await asyncio.create_subprocess_exec(
            "node",
            str(PROBE),
            str(port),
            version,
            mode,
            cwd=JS_DIR,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(node.communicate(), 30)
    seen = [json.loads(line) for line in out.decode().splitlines() if line.strip()]
    assert node.returncode == 0, (seen, err.decode()[-2000:])
    return server, seen


def _order(frames: list[dict[str, Any]]) -> list[str]:
    return [
        f["event"] + (":" + f["data"]["channel"] if f["event"] == "pusher:subscribe" else "")
        for f in frames
        if f["event"] != "pusher:ping"
    ]


@pytest.mark.parametrize("version", ["8", "7"])
def test_resume_on_state_change_reaches_the_server_before_the_resubscribes(version: str) -> None:
    server, _ = asyncio.run(probe(version, "state_change"))
    order = _order(server.second)
    assert order[0] == "pusher:resume", order
    assert server.second[0]["data"] == {"token": "T1"}, "the previous connection's token"
    assert set(order[1:3]) == {"pusher:subscribe:chat-1", "pusher:subscribe:private-chat-2"}


def test_resume_on_connected_comes_after_the_resubscribes() -> None:
    server, _ = asyncio.run(probe("8", "connected"))
    order = _order(server.second)
    assert order.index("pusher:resume") > order.index("pusher:subscribe:chat-1"), order


@pytest.mark.parametrize("version", ["8", "7"])
def test_a_pusher_prefixed_channel_event_reaches_the_apps_listeners(version: str) -> None:
    _, seen = asyncio.run(probe(version, "state_change"))
    failed = [
        s
        for s in seen
        if s.get("event", "pusher:recovery_failed") == "pusher:recovery_failed"
        and s["via"] != "done"
    ]
    via = {(s["via"], s.get("name")) for s in failed if s.get("data") == {"reason": "ttl"}}
    assert ("channel.bind", "chat-1") in via and ("channel.bind", "private-chat-2") in via
    assert ("channel.bind_global", "chat-1") in via
    assert ("channel.bind_global", "private-chat-2") in via
    assert ("pusher.bind_global", None) in via
    assert ("echo.listen", None) in via
    to_all = [s for s in seen if s["via"] == "echo.listenToAll"]
    assert [s["event"] for s in to_all] == [".hello", ".probe-done"], "no pusher: events"
    internal = [s for s in seen if "resume_token" in json.dumps(s)]
    assert not internal, "the token frame reaches no listener but connection 'message'"
