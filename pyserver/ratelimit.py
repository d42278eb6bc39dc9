"""A token bucket: at most `rate` units per second on average, bursts up to `rate`.

Sans-I/O: the caller passes the current monotonic time. Used per app for the HTTP API's
`max_backend_events_per_second` and `max_read_requests_per_second` (on each node), and per
connection for `max_client_events_per_second` (`protocol.session`). It sits on the bottom
floor with `protocol/` and `auth/` and imports nothing.
"""

from __future__ import annotations


class TokenBucket:
    __slots__ = ("allowance", "rate", "stamp")

    def __init__(self, rate: float, now: float) -> None:
        self.rate = rate
        self.allowance = rate
        self.stamp = now

    def take(self, cost: float, now: float) -> bool:
        """Spend `cost` tokens if there are enough; a refusal spends nothing. A cost above
        `rate` costs `rate`: it needs a full bucket instead of never passing."""
        rate = self.rate
        if cost > rate:
            cost = rate
        allowance = self.allowance
        if now != self.stamp:  # several messages of one read share one refill
            allowance += (now - self.stamp) * rate
            if allowance > rate:
                allowance = rate
            self.stamp = now
        if allowance < cost:
            self.allowance = allowance
            return False
        self.allowance = allowance - cost
        return True

    def seconds_until(self, cost: float) -> float:
        """How long until `cost` tokens are there (for `Retry-After`)."""
        return max(0.0, (min(cost, self.rate) - self.allowance) / self.rate)
