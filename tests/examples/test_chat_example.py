"""The chat example (examples/chat) as a user runs it: pyserver with the example's own
configuration, the example's backend (official `pusher` SDK) and its page in real headless
Chromium with stock pusher-js.

The browser half (tests/js/chat_example.mjs) opens three pages. One goes offline mid-chat,
first silently (pyserver keeps writing into a connection nothing reads), then for good, while
the other keeps sending; when it comes back it must show every message once, in order, and a
page opened last must show the channel's last messages (rewind). The backend half checks the
backend's own answers.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
from websockets.sync.client import connect

from tests.integration.serverproc import ROOT, ServerProcess

EXAMPLE = ROOT / "examples" / "chat"
PUSHER_JS = ROOT / "tests" / "js" / "node_modules" / "pusher-js" / "dist" / "web" / "pusher.min.js"
_LISTENING = re.compile(r"chat on (http://127\.0\.0\.1:\d+)")


class ChatApp:
    """`python examples/chat/app.py` on a free loopback port, pointed at `pusher_port`."""

    def __init__(self, pusher_port: int) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("PUSHER_", "CHAT_"))}
        env.update(
            PUSHER_PORT=str(pusher_port),
            CHAT_PORT="0",
            CHAT_QUIET="1",
            PUSHER_JS=str(PUSHER_JS),
        )
        self.proc = subprocess.Popen(
            [sys.executable, str(EXAMPLE / "app.py")],
            cwd=ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        match = _LISTENING.search(line)
        if match is None:
            self.proc.kill()
            rest = self.proc.communicate(timeout=10)[0]
            raise RuntimeError(f"the chat backend did not start:\n{line}{rest}")
        self.url = match.group(1) + "/"

    def stop(self) -> str:
        self.proc.terminate()
        try:
            out = self.proc.communicate(timeout=10)[0]
        except subprocess.TimeoutExpired:
            self.proc.kill()
            out = self.proc.communicate()[0]
        return out or ""


@pytest.fixture(scope="module")
def chat() -> Iterator[tuple[ServerProcess, ChatApp]]:
    server = ServerProcess(config=(EXAMPLE / "pyserver.toml").read_text())
    app = ChatApp(server.port)
    try:
        yield server, app
    finally:
        out = app.stop()
        server.stop()
        assert "Traceback" not in out, out


def _post(url: str, body: bytes) -> tuple[int, Any]:
    request = urllib.request.Request(
        url + "messages", data=body, headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def test_backend_triggers_each_message_once_and_refuses_bad_ones(chat) -> None:
    server, app = chat
    url = f"ws://127.0.0.1:{server.port}/app/chat-key?protocol=7&client=py&version=1"
    with connect(url, open_timeout=10) as ws:
        assert json.loads(ws.recv(timeout=10))["event"] == "pusher:connection_established"
        ws.send(json.dumps({"event": "pusher:subscribe", "data": {"channel": "chat-room"}}))
        while True:  # the rewind of earlier tests may come first
            frame = json.loads(ws.recv(timeout=10))
            if frame["event"] == "pusher_internal:subscription_succeeded":
                break
        status, body = _post(app.url, b'{"name": " ann ", "text": "  <b>hi</b> "}')
        assert status == 200, body
        while True:
            frame = json.loads(ws.recv(timeout=10))
            if frame["event"] == "message":
                break
        data = json.loads(frame["data"])
        assert frame["channel"] == "chat-room"
        assert data["id"] == body["id"]
        assert (data["name"], data["text"]) == ("ann", "<b>hi</b>")  # the page escapes it
    for bad in (b"not json", b'{"name": "x"}', b'{"text": "   "}', b"[1]"):
        status, body = _post(app.url, bad)
        assert status == 400 and "error" in body, (bad, status, body)


def test_page_assets_are_served(chat) -> None:
    _, app = chat
    with urllib.request.urlopen(app.url, timeout=10) as response:
        page = response.read().decode()
    assert '<script src="/pusher.min.js">' in page and '<script src="/chat.js">' in page
    with urllib.request.urlopen(app.url + "config.js", timeout=10) as response:
        config = response.read().decode()
    assert '"key": "chat-key"' in config and '"channel": "chat-room"' in config
    with urllib.request.urlopen(app.url + "pusher.min.js", timeout=10) as response:
        assert response.read() == PUSHER_JS.read_bytes()


SENT = [
    *(f"before-{i}" for i in range(3)),
    "live-0",
    *(f"unread-{i}" for i in range(3)),
    *(f"away-{i}" for i in range(3)),
    "after-0",
]
"""What tests/js/chat_example.mjs sends, in order."""


def _drive(app: ChatApp, *args: str) -> dict[str, Any]:
    """Run the browser half against `app`; what it saw."""
    assert shutil.which("chromium") or os.environ.get("CHROMIUM"), (
        "chromium is missing: scripts/test.sh installs it"
    )
    result = subprocess.run(
        ["node", str(ROOT / "tests" / "js" / "chat_example.mjs"), app.url, *args],
        capture_output=True,
        text=True,
        timeout=110,
        cwd=ROOT / "tests" / "js",
    )
    lines = result.stdout.strip().splitlines()
    assert lines, result.stderr[-3000:]
    seen: dict[str, Any] = json.loads(lines[-1])
    assert result.returncode == 0 and "error" not in seen, json.dumps(seen, indent=1)
    return seen


def test_offline_page_catches_up_once_in_order_and_new_page_rewinds(chat) -> None:
    _, app = chat
    seen = _drive(app)
    sent = SENT
    # Rewind: both pages opened after `before-*` was sent show it, and only it.
    assert seen["rewound"]["alice"][-3:] == sent[:3], seen["rewound"]
    assert seen["rewound"]["bob"][-3:] == sent[:3], seen["rewound"]
    # Offline for real: nothing reached the page while the proxy was silent or down.
    assert "unread-0" not in seen["duringFreeze"] and "away-0" not in seen["whileAway"], seen
    # Back: every message once, in order, on the page that stayed and on the one that left.
    for page in ("alice", "bob"):
        assert seen[page][-len(sent) :] == sent, (page, seen[page])
        assert len(seen[page]) == len(set(seen[page])), (page, seen[page])
    # It was catch-up, not a reload: no `pusher:recovery_failed`, one more resume token
    # (the second connection), and nothing missing from what the socket delivered.
    assert seen["bobRecoveryFailed"] == [] and seen["bobNotice"] == "", seen
    assert seen["bobResumeTokens"] >= 2, seen
    received = seen["bobReceived"]
    assert [t for t in sent if t not in received] == [], received
    first = [received.index(t) for t in sent[-7:]]
    assert first == sorted(first), received  # in publish order as they arrived
    # A page opened last shows the channel's last messages (rewind = 50 > all of them).
    assert seen["carol"][-len(sent) :] == sent, seen["carol"]
    assert seen["problems"] == [], seen["problems"]


def test_page_away_longer_than_the_window_is_told_and_starts_over_from_the_rewind() -> None:
    config = (EXAMPLE / "pyserver.toml").read_text()
    assert "recovery_window = 300" in config
    server = ServerProcess(config=config.replace("recovery_window = 300", "recovery_window = 1"))
    app = ChatApp(server.port)
    try:
        seen = _drive(app, "2500")  # away 2.5 s > recovery_window
    finally:
        out = app.stop()
        server.stop()
    assert "Traceback" not in out, out
    # Not recovered, and said so: the page's pusher:recovery_failed handler ran ...
    assert seen["bobRecoveryFailed"] == [{"reason": "window"}], seen
    assert "could not be recovered (window)" in seen["bobNotice"], seen["bobNotice"]
    # ... and the rewind that follows (the last 50, here all of them) refilled the list:
    # every message once, in order, nothing kept from before the notice.
    assert seen["bob"] == SENT, seen["bob"]
    assert seen["alice"] == SENT and seen["carol"] == SENT, seen
