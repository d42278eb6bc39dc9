"""A real HTTP webhook receiver that watches for the same delivery being sent twice at once.

Each request is held `hold` seconds before it is answered (so two senders of one delivery
would overlap), answered 503 while `failing` is set and 200 otherwise. Every request is
recorded with its body, its answer and when it started and ended.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Request:
    body: bytes
    headers: dict[str, str]
    status: int
    started: float
    ended: float = 0.0

    @property
    def json(self) -> dict[str, Any]:
        value: dict[str, Any] = json.loads(self.body)
        return value


class WatchingReceiver:
    def __init__(self, hold: float = 0.0, failing: bool = False) -> None:
        self.hold = hold
        self.failing = failing
        self.requests: list[Request] = []
        self.overlaps: list[bytes] = []
        """Bodies that arrived while the same body was still being answered."""
        self._open: dict[bytes, int] = {}
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with receiver.lock:
                    status = 503 if receiver.failing else 200
                    request = Request(
                        body,
                        {k.lower(): v for k, v in self.headers.items()},
                        status,
                        time.monotonic(),
                    )
                    receiver.requests.append(request)
                    if receiver._open.get(body):
                        receiver.overlaps.append(body)
                    receiver._open[body] = receiver._open.get(body, 0) + 1
                try:
                    time.sleep(receiver.hold)
                    self.send_response(status)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                except OSError:
                    pass  # the sender died meanwhile
                finally:
                    with receiver.lock:
                        receiver._open[body] -= 1
                        request.ended = time.monotonic()

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def url(self, path: str = "/hooks") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def answered(self, status: int = 200) -> list[Request]:
        with self.lock:
            return [r for r in self.requests if r.status == status and r.ended]

    def in_flight(self) -> int:
        """Requests being answered now."""
        with self.lock:
            return sum(self._open.values())

    def wait_until(self, predicate: Any, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():
                return True
            time.sleep(0.05)
        return bool(predicate())

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
