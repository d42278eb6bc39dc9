"""Stats over time for the dashboard: per app, per minute for 24 hours, per UTC day for 30 days.

`StatsHistory` is fed periodic samples of each app's *cumulative* counters (those `/metrics`
already counts, plus the current connection count) and keeps what changed between two
samples. So the dashboard costs the hot path nothing: no new counting per message, only a
read of a few integers per app per sample.

Sans-I/O: no asyncio, no sockets, no clock reads. Every call takes `now` (unix seconds) from
its caller, so tests drive it with a hand-set clock.

Time base: a minute is `floor(unix_seconds / 60)`, a day is `floor(unix_seconds / 86400)`,
which is a UTC day (unix time has no leap seconds). Points are served with `time`, the unix
second at which they start.

Invariants:
- Fixed memory per app: two rings of `array("q")` (1440 minute slots, 30 day slots), made at
  the app's first non-idle sample and never grown; a node-wide ring records which minutes
  and days were sampled at all. Recording writes in place; nothing is appended.
- A slot remembers which minute (or day) it holds, so a slot last written more than 24 hours
  (30 days) ago reads as that old period, never as the current one: roll-over needs no sweep.
- A delta is attributed to the minute and the day of the sample that sees it.
- A counter lower than at the previous sample was restarted from zero (a process restart, an
  app re-created): its whole value is the delta, as Prometheus' `rate()` reads it.
- Time never goes back: a sample whose minute is before the latest one recorded is attributed
  to the latest minute, so a wall-clock step back rewrites no history.
- A minute (day) in which no sample was recorded is a gap: served with `nodes: 0` and `null`
  values, never as zeros. A sampled minute in which an app was idle is zeros.
- Peaks are of sampled values: a connection that opens and closes between two samples is
  not in `peak_connections` (the sampler samples often, see `pyserver/console/sampler.py`).

Several nodes (the Redis adapter, issue 16 part 2): each node keeps its own deltas;
`merge_minutes` sums one minute's deltas from several nodes into one point. Connection
counts are summed too, so a cluster's `peak_connections` is the sum of the nodes' peaks in
that minute: exact on one node, an upper bound on several.
"""

from __future__ import annotations

import time
from array import array
from collections.abc import Iterable
from dataclasses import dataclass, fields
from typing import Any

MINUTE = 60
DAY = 86400
MINUTES_KEPT = 24 * 60
"""Per-minute points kept per app: 24 hours."""
DAYS_KEPT = 30
"""Per-day points kept per app."""

COUNTERS = (
    "messages_sent",
    "messages_received",
    "api_calls",
    "webhook_deliveries",
    "webhook_failures",
)
"""The cumulative counters a sample carries, in the order `Sample` holds them."""


@dataclass(frozen=True, slots=True)
class Sample:
    """One app's counters at one instant. Every field but `connections` is cumulative."""

    connections: int
    """WebSocket connections open at this instant."""
    messages_sent: int = 0
    """WebSocket messages sent to clients (every frame, as `ws_messages_sent_total`)."""
    messages_received: int = 0
    """WebSocket messages received from clients (`ws_messages_received_total`)."""
    api_calls: int = 0
    """HTTP API calls received (`http_calls_received_total`)."""
    webhook_deliveries: int = 0
    """Webhook requests answered with 2xx."""
    webhook_failures: int = 0
    """Webhook attempts that failed (each retry counts)."""

    def counters(self) -> tuple[int, ...]:
        return (
            self.messages_sent,
            self.messages_received,
            self.api_calls,
            self.webhook_deliveries,
            self.webhook_failures,
        )


@dataclass(slots=True)
class Day:
    """One app's counts for one UTC day, on one node (`nodes == 1`) or summed over several."""

    peak_connections: int = 0
    """The highest sampled connection count (of a day: its largest minute peak)."""
    messages_sent: int = 0
    messages_received: int = 0
    api_calls: int = 0
    webhook_deliveries: int = 0
    webhook_failures: int = 0
    nodes: int = 1
    """How many nodes recorded it (0 only in a merge of nothing: a gap)."""


@dataclass(slots=True)
class Minute(Day):
    """One app's counts for one minute: a day's counts, and the connections open at its end."""

    connections: int = 0
    """Open connections at the minute's last sample (for the current minute: now)."""


_SUMMED = tuple(f.name for f in fields(Minute))
_DAY_FIELDS = tuple(f.name for f in fields(Day) if f.name != "nodes")
_MINUTE_FIELDS = ("connections", *_DAY_FIELDS)
"""The counts of a served point, in the order they are served."""


def merge_minutes(parts: Iterable[Minute]) -> Minute | None:
    """One minute's counts from several nodes summed into one point (connections and
    peaks too); None when there are none (no node recorded that minute: a gap)."""
    total: Minute | None = None
    for part in parts:
        if total is None:
            total = Minute(nodes=0)
        for name in _SUMMED:
            setattr(total, name, getattr(total, name) + getattr(part, name))
    return total


def minute_point(minute: int, value: Minute | None) -> dict[str, Any]:
    """The JSON object of one minute: `time`, `nodes`, then every count (null in a gap)."""
    return _point({"time": minute * MINUTE}, value, _MINUTE_FIELDS)


def day_point(day: int, value: Day | None) -> dict[str, Any]:
    """The JSON object of one UTC day: `time`, `date`, `nodes`, then every count."""
    head = {"time": day * DAY, "date": time.strftime("%Y-%m-%d", time.gmtime(day * DAY))}
    return _point(head, value, _DAY_FIELDS)


def _point(point: dict[str, Any], value: Day | None, names: tuple[str, ...]) -> dict[str, Any]:
    point["nodes"] = 0 if value is None else value.nodes
    for name in names:
        point[name] = None if value is None else getattr(value, name)
    return point


class _Ring:
    """`size` slots of `width` integers in one flat array. Cell 0 of a slot is the period
    (minute or day number) it holds, -1 when never written; period p lives in slot p % size."""

    __slots__ = ("cells", "size", "width")

    def __init__(self, size: int, width: int) -> None:
        self.size = size
        self.width = width
        self.cells = array("q", [-1] + [0] * (width - 1)) * size

    def find(self, period: int) -> int:
        """The index of period's slot, or -1 when the slot holds another period."""
        base = (period % self.size) * self.width
        return base if self.cells[base] == period else -1

    def claim(self, period: int) -> int:
        """The index of period's slot, cleared first when it held another period."""
        base = (period % self.size) * self.width
        cells = self.cells
        if cells[base] != period:
            cells[base] = period
            for i in range(base + 1, base + self.width):
                cells[i] = 0
        return base


# Cells of an app's minute slot after the period: connections, peak, then COUNTERS.
_M_CONNECTIONS, _M_PEAK, _M_COUNTERS = 1, 2, 3
_MINUTE_WIDTH = _M_COUNTERS + len(COUNTERS)
# Cells of an app's day slot after the period: peak, then COUNTERS.
_D_PEAK, _D_COUNTERS = 1, 2
_DAY_WIDTH = _D_COUNTERS + len(COUNTERS)


class _AppSeries:
    __slots__ = ("baseline", "days", "minutes")

    def __init__(self) -> None:
        self.baseline: tuple[int, ...] = (0,) * len(COUNTERS)
        """The cumulative counters of the previous sample (zeros before the first)."""
        self.minutes: _Ring | None = None
        self.days: _Ring | None = None


class StatsHistory:
    """Every app's per-minute and per-day counts on this node, fed by `record`."""

    def __init__(self, minutes: int = MINUTES_KEPT, days: int = DAYS_KEPT) -> None:
        self.minutes_kept = minutes
        self.days_kept = days
        self._apps: dict[str, _AppSeries] = {}
        self._sampled_minutes = _Ring(minutes, 1)
        self._sampled_days = _Ring(days, 1)
        self._latest_minute = -1

    # --- recording ---------------------------------------------------------------------

    def record(self, app_id: str, sample: Sample, now: float) -> None:
        """Add what changed since the app's previous sample to the minute and day of `now`."""
        minute = self._minute(now)
        self._latest_minute = minute
        day = minute * MINUTE // DAY
        self._sampled_minutes.claim(minute)
        self._sampled_days.claim(day)
        series = self._apps.get(app_id)
        if series is None:
            series = self._apps[app_id] = _AppSeries()
        current = sample.counters()
        deltas = [
            new - old if new >= old else new  # lower: restarted from zero
            for new, old in zip(current, series.baseline, strict=True)
        ]
        series.baseline = current
        connections = sample.connections
        idle = connections == 0 and not any(deltas)
        if series.minutes is None or series.days is None:
            if idle:
                return  # an app that never did anything costs no rings
            series.minutes = _Ring(self.minutes_kept, _MINUTE_WIDTH)
            series.days = _Ring(self.days_kept, _DAY_WIDTH)
        if idle and series.minutes.find(minute) < 0:
            return  # zeros already: a sampled minute without a slot reads as idle
        cells = series.minutes.cells
        base = series.minutes.claim(minute)
        cells[base + _M_CONNECTIONS] = connections
        if connections > cells[base + _M_PEAK]:
            cells[base + _M_PEAK] = connections
        for i, delta in enumerate(deltas, base + _M_COUNTERS):
            cells[i] += delta
        cells = series.days.cells
        base = series.days.claim(day)
        if connections > cells[base + _D_PEAK]:
            cells[base + _D_PEAK] = connections
        for i, delta in enumerate(deltas, base + _D_COUNTERS):
            cells[i] += delta

    @property
    def latest_minute(self) -> int:
        """The minute of the latest sample (-1 before the first)."""
        return self._latest_minute

    def app_ids(self) -> list[str]:
        """The apps that have been sampled."""
        return list(self._apps)

    def forget(self, app_id: str) -> None:
        """Drop an app's history (the app was removed)."""
        self._apps.pop(app_id, None)

    def _minute(self, now: float) -> int:
        return max(int(now // MINUTE), self._latest_minute)

    # --- reading -----------------------------------------------------------------------

    def minute(self, app_id: str, minute: int) -> Minute | None:
        """The app's counts in `minute` on this node; None when this node sampled nothing then."""
        if self._sampled_minutes.find(minute) < 0:
            return None
        series = self._apps.get(app_id)
        ring = series.minutes if series is not None else None
        base = ring.find(minute) if ring is not None else -1
        if ring is None or base < 0:
            return Minute()
        c = ring.cells
        counts = dict(zip(COUNTERS, c[base + _M_COUNTERS : base + _MINUTE_WIDTH], strict=True))
        return Minute(c[base + _M_PEAK], connections=c[base + _M_CONNECTIONS], **counts)

    def day(self, app_id: str, day: int) -> Day | None:
        """The app's counts on UTC `day` on this node; None when this node sampled nothing then."""
        if self._sampled_days.find(day) < 0:
            return None
        series = self._apps.get(app_id)
        ring = series.days if series is not None else None
        base = ring.find(day) if ring is not None else -1
        if ring is None or base < 0:
            return Day()
        c = ring.cells
        return Day(c[base + _D_PEAK], *c[base + _D_COUNTERS : base + _DAY_WIDTH])

    def report(self, app_id: str, now: float, since: float | None = None) -> dict[str, Any]:
        """The JSON of `GET /console/api/stats`: the last 24 hours' minutes and the last 30
        days, oldest first, ending with the ones `now` is in; with `since`, only the points
        that end after it (those a page that has the rest needs to update)."""
        last_minute = self._minute(now)
        last_day = last_minute * MINUTE // DAY
        first_minute = last_minute - self.minutes_kept + 1
        first_day = last_day - self.days_kept + 1
        if since is not None:
            first_minute = max(first_minute, int(since // MINUTE))
            first_day = max(first_day, int(since // DAY))
        return {
            "app": app_id,
            "now": now,
            "minutes": [
                minute_point(m, self.minute(app_id, m))
                for m in range(first_minute, last_minute + 1)
            ],
            "days": [day_point(d, self.day(app_id, d)) for d in range(first_day, last_day + 1)],
        }
