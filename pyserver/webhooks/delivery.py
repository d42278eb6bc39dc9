"""One webhook HTTP request to make, and its stored form (sans-I/O).

Invariants:
- The body and headers (signature included) are fixed when the delivery is created: every
  attempt, on any node, sends the same bytes, so `time_ms` survives retries and crashes.
- `attempts` counts the attempts made before the current one; only the sender raises it.
- `to_record` / `from_record` round-trip everything but `attempts`, which a durable queue
  keeps beside the record (it changes on every attempt, the record never does).
"""

from __future__ import annotations

from dataclasses import dataclass

import orjson


@dataclass(slots=True, eq=False)
class Delivery:
    """One HTTP request to send: its signed body is fixed at creation. Compared and hashed
    by identity: queues keep deliveries in sets and dicts while they are under way."""

    url: str
    body: bytes
    headers: dict[str, str]
    app_id: str
    expires_at: float
    """Wall-clock time after which no attempt is made: the events' `time_ms` plus the retry
    window, so no receiver ever gets a delivery older than that window."""
    attempts: int = 0

    def to_record(self) -> bytes:
        """The delivery as stored by a durable queue (JSON; the body is UTF-8 JSON too)."""
        return orjson.dumps(
            [self.url, self.app_id, self.expires_at, self.headers, self.body.decode()]
        )

    @classmethod
    def from_record(cls, record: bytes, attempts: int = 0) -> Delivery:
        url, app_id, expires_at, headers, body = orjson.loads(record)
        return cls(
            str(url), str(body).encode(), dict(headers), str(app_id), float(expires_at), attempts
        )
