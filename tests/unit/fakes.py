"""Socket-free stand-ins for unit tests of the app layer."""

from __future__ import annotations

import contextlib
from typing import Any


class FakeClient:
    """A connection that records what it was sent."""

    def __init__(self, socket_id: str) -> None:
        self.socket_id = socket_id
        self.channels: dict[str, str | None] = {}
        self.user = None
        self.auth_deadline = 0.0
        self.sent: list[bytes] = []
        self.busy = False
        self.queued: list[Any] = []

    def send(self, frame: bytes) -> None:
        self.sent.append(frame)

    def send_message(self, payload: bytes) -> None:
        self.sent.append(payload)

    def report(self, error: object) -> None:
        raise AssertionError(error)

    def take_client_event_token(self, per_second: int) -> bool:
        return True

    def run_when_idle(self, action: Any) -> None:
        if self.busy:  # like a Connection whose handler is still running
            self.queued.append(action)
        else:
            drive(action())


def drive(result: Any) -> None:
    """Run a handler's result to completion (the local Adapter never suspends)."""
    if result is not None:
        with contextlib.suppress(StopIteration):
            result.send(None)
        assert result.cr_frame is None, "the coroutine suspended"
