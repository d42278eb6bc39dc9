"""Feeds the dashboard's stats over time: samples every app's counters once a second.

`StatsSampler` owns the one timer that reads each app's cumulative counters (`AppStats`, the
ones `/metrics` serves) and its connection count into a `StatsHistory` (`timeseries.py`),
and serves the result as `GET /console/api/stats`. It also tallies webhook attempts per
app: the sender counts them for the whole server, and is told of each attempt's app and
outcome off the hot path (through the console's `webhook_attempt`).

Invariants:
- One timer for all apps, whatever the number of open consoles; nothing runs per message
  or per recipient. A sample reads counters and never writes one.
- What is kept is this node's view, bounded by `StatsHistory`'s fixed memory per app.
- `after_sample` callbacks run right after each sample, on the same timer: work that follows
  the samples (the cluster stats' flush) wakes the process no more often than sampling does.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from pyserver.console.timeseries import Sample, StatsHistory
from pyserver.protocol.errors import BadRequest

if TYPE_CHECKING:
    from pyserver.channels.app import App

SAMPLE_EVERY = 1.0
"""Seconds between two samples: the resolution of `peak_connections` and of live charts."""


class StatsSampler:
    def __init__(
        self,
        apps: Mapping[str, App],
        every: float = SAMPLE_EVERY,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.apps = apps
        self.every = every
        self.clock = clock
        self.history = StatsHistory()
        self._webhooks: dict[str, list[int]] = {}
        """app id -> [deliveries, failed attempts], cumulative."""
        self._timer: asyncio.TimerHandle | None = None
        self.after_sample: list[Callable[[], None]] = []
        """Called after each timed sample (must not block)."""

    def start(self) -> None:
        """Sample now and then every `every` seconds, until `stop`."""
        self.stop()
        self._tick()

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _tick(self) -> None:
        self._timer = asyncio.get_running_loop().call_later(self.every, self._tick)
        self.sample()
        for callback in self.after_sample:
            callback()

    def sample(self) -> None:
        now = self.clock()
        for app_id, app in self.apps.items():
            stats = app.stats
            deliveries, failures = self._webhooks.get(app_id) or (0, 0)
            self.history.record(
                app_id,
                Sample(
                    len(app.clients),
                    stats.ws_messages_sent_total,
                    stats.ws_messages_received_total,
                    stats.http_calls_received_total,
                    deliveries,
                    failures,
                ),
                now,
            )

    def webhook_attempt(self, app_id: str, outcome: str) -> None:
        """One delivery attempt for `app_id`: "delivered" or what failed."""
        tally = self._webhooks.get(app_id)
        if tally is None:
            if app_id not in self.apps:
                return  # an app removed meanwhile: keep nothing for ids that come and go
            tally = self._webhooks[app_id] = [0, 0]
        tally[0 if outcome == "delivered" else 1] += 1

    def report(self, app_id: str, since: str | None = None) -> dict[str, Any]:
        """The JSON of `GET /console/api/stats?app=ID[&from=UNIX_SECONDS]` on this node."""
        return self.history.report(app_id, self.clock(), self.since(since))

    @staticmethod
    def since(value: str | None) -> float | None:
        """The `from` parameter as unix seconds (None when absent), or `BadRequest`."""
        if not value:
            return None
        try:
            start = float(value)
        except ValueError:
            raise BadRequest("'from' must be a unix time in seconds") from None
        if not math.isfinite(start):
            raise BadRequest("'from' must be a unix time in seconds")
        return start
