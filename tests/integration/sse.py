"""A server-sent-events client over a raw socket, for the console stream's tests: it sends
`GET`, checks the head, and parses events (`id`, `event`, JSON `data`) as they arrive."""

from __future__ import annotations

import json
import socket
import time
from dataclasses import dataclass
from typing import Any


@dataclass
class Event:
    name: str
    data: Any
    id: str | None = None


class SseClient:
    def __init__(
        self,
        port: int,
        path: str,
        headers: dict[str, str] | None = None,
        rcvbuf: int | None = None,
    ) -> None:
        self.sock = socket.socket()
        if rcvbuf is not None:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.settimeout(10)
        self.sock.connect(("127.0.0.1", port))
        lines = [f"GET {path} HTTP/1.1", f"Host: 127.0.0.1:{port}", "Accept: text/event-stream"]
        lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
        self.sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        self.buffer = b""
        self.closed = False
        head = self._until(b"\r\n\r\n", 10)
        assert head is not None, "no response head"
        self.status = int(head.split(b" ", 2)[1])
        self.head = head.decode("latin-1")

    def _until(self, marker: bytes, timeout: float) -> bytes | None:
        deadline = time.monotonic() + timeout
        while marker not in self.buffer:
            left = deadline - time.monotonic()
            if left <= 0 or self.closed:
                return None
            self.sock.settimeout(left)
            try:
                chunk = self.sock.recv(65536)
            except TimeoutError:
                return None
            except OSError:
                chunk = b""
            if not chunk:
                self.closed = True
                continue
            self.buffer += chunk
        block, _, self.buffer = self.buffer.partition(marker)
        return block

    def next(self, timeout: float = 5.0) -> Event | None:
        """The next event (comments skipped), or None when none came in `timeout` seconds."""
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            block = self._until(b"\n\n", left)
            if block is None:
                return None
            fields: dict[str, str] = {}
            for line in block.decode().split("\n"):
                if not line or line.startswith(":"):
                    continue
                name, _, value = line.partition(":")
                fields[name] = value[1:] if value.startswith(" ") else value
            if "data" in fields:
                return Event(
                    fields.get("event", "message"), json.loads(fields["data"]), fields.get("id")
                )
        return None

    def events(self, name: str, count: int, timeout: float = 5.0) -> list[Event]:
        """The next `count` events called `name` (others skipped)."""
        found: list[Event] = []
        deadline = time.monotonic() + timeout
        while len(found) < count and (left := deadline - time.monotonic()) > 0:
            event = self.next(left)
            if event is None:
                break
            if event.name == name:
                found.append(event)
        return found

    def drain(self, seconds: float) -> list[Event]:
        """Every event that arrives within `seconds`."""
        found: list[Event] = []
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            event = self.next(left)
            if event is None:
                break
            found.append(event)
        return found

    def close(self) -> None:
        self.sock.close()
