"""Socket-free stand-ins for unit tests of the app layer."""

from __future__ import annotations

import contextlib
from typing import Any

from pyserver.protocol.members import SignedInUser
from pyserver.protocol.session import PusherSession


class FakeClient:
    """A connection that records what it was sent."""

    def __init__(self, socket_id: str) -> None:
        self.socket_id = socket_id
        self.session = PusherSession()
        self.session.open(socket_id, 120, now=0.0, auth_timeout=0.0)
        self.log = None
        self.sent: list[bytes] = []
        self.busy = False
        self.queued: list[Any] = []

    def send(self, frame: bytes) -> None:
        self.sent.append(frame)

    def send_message(self, payload: bytes) -> None:
        self.sent.append(payload)

    def report(self, error: object) -> None:
        raise AssertionError(error)

    @property
    def channels(self) -> dict[str, str | None]:
        return self.session.channels

    @property
    def user(self) -> SignedInUser | None:
        return self.session.user

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
