"""The classic Pusher chat tutorial, pointed at pyserver: the whole backend.

It serves one page (static/) and turns each posted message into a Pusher event with the
official `pusher` SDK. It keeps no messages: pyserver's channel history (docs/history.md)
gives a new page the last messages (rewind) and a page whose connection dropped exactly the
ones it missed (catch-up), so the tutorial's message store, its "load the history" route
and its "fetch what came after the last id I saw" code are gone.

    python -m pyserver --config examples/chat/pyserver.toml   # the Pusher-compatible server
    python examples/chat/app.py                               # this backend, then open
                                                              # http://127.0.0.1:5000

Configuration (environment, defaults match pyserver.toml): PUSHER_APP_ID, PUSHER_KEY,
PUSHER_SECRET, PUSHER_HOST, PUSHER_PORT (where the SDK and the page reach pyserver),
CHAT_HOST and CHAT_PORT (where this backend listens), CHAT_CHANNEL, and PUSHER_JS: a local
copy of pusher.min.js to serve to the page (without it the page loads pusher-js from
its CDN).

Only the standard library and the `pusher` SDK (`pip install pusher`).
"""

from __future__ import annotations

import json
import os
import time
import uuid
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pusher

STATIC = Path(__file__).resolve().parent / "static"
PUSHER_JS_CDN = "https://js.pusher.com/8.4.0/pusher.min.js"
MAX_NAME = 40
MAX_TEXT = 1000


@dataclass(frozen=True)
class Config:
    app_id: str
    key: str
    secret: str
    pusher_host: str
    pusher_port: int
    host: str
    port: int
    channel: str
    pusher_js: Path | None

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> Config:
        env = dict(os.environ if env is None else env)
        pusher_js = env.get("PUSHER_JS")
        return cls(
            app_id=env.get("PUSHER_APP_ID", "1001"),
            key=env.get("PUSHER_KEY", "chat-key"),
            secret=env.get("PUSHER_SECRET", "chat-secret-change-me"),
            pusher_host=env.get("PUSHER_HOST", "127.0.0.1"),
            pusher_port=int(env.get("PUSHER_PORT", "6001")),
            host=env.get("CHAT_HOST", "127.0.0.1"),
            port=int(env.get("CHAT_PORT", "5000")),
            channel=env.get("CHAT_CHANNEL", "chat-room"),
            pusher_js=Path(pusher_js) if pusher_js else None,
        )


class ChatServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, config: Config) -> None:
        super().__init__((config.host, config.port), ChatHandler)
        self.config = config
        self.pusher = pusher.Pusher(
            app_id=config.app_id,
            key=config.key,
            secret=config.secret,
            host=config.pusher_host,
            port=config.pusher_port,
            ssl=False,
        )

    def page_config(self) -> dict[str, Any]:
        """What the page needs to connect: the key, where pyserver is, the channel."""
        c = self.config
        return {
            "key": c.key,
            "wsHost": c.pusher_host,
            "wsPort": c.pusher_port,
            "channel": c.channel,
        }


class ChatHandler(BaseHTTPRequestHandler):
    server: ChatServer

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        if path in ("/", "/index.html"):
            self._file(STATIC / "index.html", "text/html; charset=utf-8")
        elif path == "/chat.js":
            self._file(STATIC / "chat.js", "text/javascript; charset=utf-8")
        elif path == "/config.js":
            body = f"window.CHAT_CONFIG = {json.dumps(self.server.page_config())};\n"
            self._send(HTTPStatus.OK, body.encode(), "text/javascript; charset=utf-8")
        elif path == "/pusher.min.js":
            local = self.server.config.pusher_js
            if local is None:
                self.send_response(HTTPStatus.FOUND)
                self.send_header("Location", PUSHER_JS_CDN)
                self.send_header("Content-Length", "0")
                self.end_headers()
            else:
                self._file(local, "text/javascript; charset=utf-8")
        else:
            self._json(HTTPStatus.NOT_FOUND, {"error": "not found"})

    def do_POST(self) -> None:
        if self.path != "/messages":
            self._json(HTTPStatus.NOT_FOUND, {"error": "not found"})
            return
        try:
            length = int(self.headers.get("Content-Length", "0"))
            body = json.loads(self.rfile.read(min(length, 16_384)) or b"{}")
            name = str(body.get("name", "")).strip()[:MAX_NAME] or "anonymous"
            text = str(body["text"]).strip()[:MAX_TEXT]
        except (ValueError, KeyError, TypeError, AttributeError):
            self._json(HTTPStatus.BAD_REQUEST, {"error": 'send {"name": …, "text": …}'})
            return
        if not text:
            self._json(HTTPStatus.BAD_REQUEST, {"error": "empty message"})
            return
        # The id lets a page drop a message it already shows (docs/history.md: catch-up may
        # send again what was written to a dying connection after its last answered ping).
        message = {"id": uuid.uuid4().hex, "name": name, "text": text, "time": time.time()}
        try:
            self.server.pusher.trigger(self.server.config.channel, "message", message)
        except Exception as exc:  # the SDK raises its own errors and requests' ones
            self._json(HTTPStatus.BAD_GATEWAY, {"error": f"pyserver refused: {exc}"})
            return
        self._json(HTTPStatus.OK, {"id": message["id"]})

    def _file(self, path: Path, content_type: str) -> None:
        try:
            body = path.read_bytes()
        except OSError:
            self._json(HTTPStatus.NOT_FOUND, {"error": f"{path.name} not found"})
            return
        self._send(HTTPStatus.OK, body, content_type)

    def _json(self, status: HTTPStatus, value: dict[str, Any]) -> None:
        self._send(status, json.dumps(value).encode(), "application/json")

    def _send(self, status: HTTPStatus, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        if os.environ.get("CHAT_QUIET") != "1":
            super().log_message(format, *args)


def main() -> None:
    config = Config.from_env()
    server = ChatServer(config)
    port = server.server_address[1]  # the one the OS chose when CHAT_PORT is 0
    pyserver_at = f"{config.pusher_host}:{config.pusher_port}"
    print(f"chat on http://{config.host}:{port} (pyserver at {pyserver_at})", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


if __name__ == "__main__":
    main()
