"""A real HTTP server that records webhook deliveries, for the tests.

Each path can be told to answer with failures first (`fail_next`), to check retries.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    at: float

    @property
    def json(self) -> dict[str, Any]:
        value: dict[str, Any] = json.loads(self.body)
        return value


class WebhookReceiver:
    def __init__(self) -> None:
        self.received: list[Received] = []
        self.failures: dict[str, int] = {}
        self.attempts: dict[str, int] = {}
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", 0))
                body = self.rfile.read(length)
                with receiver.lock:
                    receiver.attempts[self.path] = receiver.attempts.get(self.path, 0) + 1
                    failing = receiver.failures.get(self.path, 0)
                    if failing:
                        receiver.failures[self.path] = failing - 1
                    else:
                        receiver.received.append(
                            Received(
                                self.path,
                                {k.lower(): v for k, v in self.headers.items()},
                                body,
                                time.time(),
                            )
                        )
                self.send_response(503 if failing else 200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def fail_next(self, path: str, times: int) -> None:
        with self.lock:
            self.failures[path] = times

    def events(self, path: str | None = None) -> list[tuple[Received, dict[str, Any]]]:
        """Every (delivery, event) received, optionally on one path."""
        with self.lock:
            deliveries = [r for r in self.received if path is None or r.path == path]
        return [(r, e) for r in deliveries for e in r.json["events"]]

    def wait_for(self, predicate, timeout: float = 5.0, path: str | None = None):
        """The first (delivery, event) matching `predicate(event)`, waiting up to `timeout`."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for delivery, event in self.events(path):
                if predicate(event):
                    return delivery, event
            time.sleep(0.02)
        raise AssertionError(f"no matching webhook in {timeout} s; got {self.events(path)}")

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
