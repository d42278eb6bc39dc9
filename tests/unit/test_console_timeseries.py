"""Issue 16: stats over time (`pyserver/console/timeseries.py`), driven by a hand-set clock.

Each test feeds cumulative samples as the sampler would and reads the points back, as
`GET /console/api/stats` serves them."""

from __future__ import annotations

import tracemalloc
from typing import Any

from pyserver.console.timeseries import (
    DAY,
    MINUTE,
    Day,
    Minute,
    Sample,
    StatsHistory,
    merge_minutes,
)

T0 = 1_767_225_600.0
"""2026-01-01T00:00:00Z: the start of a UTC day and of a minute."""


def _counts(point: dict[str, Any]) -> tuple[Any, ...]:
    return (
        point["connections"],
        point["peak_connections"],
        point["messages_sent"],
        point["messages_received"],
        point["api_calls"],
        point["webhook_deliveries"],
        point["webhook_failures"],
    )


def test_deltas_of_cumulative_counters_land_in_the_sample_minute() -> None:
    history = StatsHistory()
    history.record("a", Sample(2, messages_sent=10, messages_received=1, api_calls=3), T0 + 1)
    history.record("a", Sample(5, messages_sent=25, messages_received=4, api_calls=3), T0 + 30)
    history.record("a", Sample(4, 40, 4, 5, webhook_deliveries=2, webhook_failures=1), T0 + 59)
    history.record("a", Sample(1, 41, 6, 5, 2, 1), T0 + 60)  # the next minute
    report = history.report("a", T0 + 61)
    first, second = report["minutes"][-2:]
    assert first["time"] == T0 and second["time"] == T0 + MINUTE
    assert _counts(first) == (4, 5, 40, 4, 5, 2, 1)
    assert _counts(second) == (1, 1, 1, 2, 0, 0, 0)
    assert first["nodes"] == second["nodes"] == 1
    today = report["days"][-1]
    assert today["date"] == "2026-01-01" and today["time"] == T0
    assert (today["messages_sent"], today["messages_received"], today["api_calls"]) == (41, 6, 5)
    assert (today["peak_connections"], today["webhook_deliveries"]) == (5, 2)
    assert today["webhook_failures"] == 1 and report["app"] == "a" and report["now"] == T0 + 61


def test_the_window_is_24_hours_of_minutes_and_30_days() -> None:
    history = StatsHistory()
    history.record("a", Sample(1, messages_sent=7), T0)
    report = history.report("a", T0 + 10)
    assert len(report["minutes"]) == 24 * 60 and len(report["days"]) == 30
    minutes = [p["time"] for p in report["minutes"]]
    assert minutes == [T0 - (1439 - i) * MINUTE for i in range(1440)]
    assert [p["time"] for p in report["days"]] == [T0 - (29 - i) * DAY for i in range(30)]
    assert report["days"][0]["date"] == "2025-12-03"
    # Only the minute and the day sampled hold data; the rest are gaps.
    assert [p["nodes"] for p in report["minutes"]].count(1) == 1
    assert report["minutes"][-1]["messages_sent"] == 7
    # 24 hours later that minute has left the window; 30 days later the day has too.
    history.record("a", Sample(1, messages_sent=7), T0 + DAY)
    later = history.report("a", T0 + DAY)
    assert later["minutes"][0]["time"] == T0 + MINUTE
    assert all(p["messages_sent"] in (None, 0) for p in later["minutes"])
    assert later["days"][-2]["messages_sent"] == 7 and later["days"][-2]["date"] == "2026-01-01"
    history.record("a", Sample(1, messages_sent=7), T0 + 30 * DAY)
    assert all(p["time"] > T0 for p in history.report("a", T0 + 30 * DAY)["days"])


def test_minute_roll_over_reuses_a_slot_without_leaking_the_old_minute() -> None:
    history = StatsHistory()
    history.record("a", Sample(3, messages_sent=100), T0 + 5)
    # Exactly 24 hours later the same ring slot holds the new minute, from zero.
    history.record("a", Sample(1, messages_sent=101), T0 + DAY + 5)
    assert history.minute("a", int(T0 // MINUTE)) is None  # overwritten: no longer known
    now = history.minute("a", int((T0 + DAY) // MINUTE))
    assert now == Minute(connections=1, peak_connections=1, messages_sent=1)
    # A minute boundary: a sample at :59.999 and one at :00.000 land in different minutes.
    history.record("a", Sample(1, messages_sent=102), T0 + DAY + MINUTE - 0.001)
    history.record("a", Sample(1, messages_sent=104), T0 + DAY + MINUTE)
    points = history.report("a", T0 + DAY + MINUTE)["minutes"]
    assert [p["messages_sent"] for p in points[-2:]] == [2, 2]


def test_day_roll_over_is_at_utc_midnight() -> None:
    history = StatsHistory()
    history.record("a", Sample(9, messages_sent=10, api_calls=1), T0 - 1)  # 2025-12-31 23:59:59
    history.record("a", Sample(2, messages_sent=15, api_calls=4), T0)  # 2026-01-01 00:00:00
    days = history.report("a", T0)["days"]
    yesterday, today = days[-2:]
    assert (yesterday["date"], yesterday["messages_sent"], yesterday["api_calls"]) == (
        "2025-12-31",
        10,
        1,
    )
    assert (today["date"], today["messages_sent"], today["api_calls"]) == ("2026-01-01", 5, 3)
    assert (yesterday["peak_connections"], today["peak_connections"]) == (9, 2)
    # A day slot is reused 30 days on, from zero.
    history.record("a", Sample(1, messages_sent=16), T0 + 30 * DAY)
    assert history.day("a", int(T0 // DAY)) is None
    assert history.day("a", int(T0 // DAY) + 30) == Day(peak_connections=1, messages_sent=1)


def test_a_counter_that_goes_backwards_restarted_from_zero() -> None:
    history = StatsHistory()
    history.record("a", Sample(1, messages_sent=1000, api_calls=50), T0)
    history.record("a", Sample(1, messages_sent=30, api_calls=2), T0 + 10)  # a restart
    history.record("a", Sample(1, messages_sent=35, api_calls=2), T0 + 20)
    point = history.report("a", T0 + 20)["minutes"][-1]
    assert (point["messages_sent"], point["api_calls"]) == (1000 + 30 + 5, 50 + 2)
    assert all(v >= 0 for v in _counts(point))


def test_peaks_are_the_highest_sample_and_current_is_the_last() -> None:
    history = StatsHistory()
    for second, connections in enumerate([3, 8, 12, 7, 0]):
        history.record("a", Sample(connections), T0 + second)
    history.record("a", Sample(4), T0 + MINUTE)
    old, new = history.report("a", T0 + MINUTE)["minutes"][-2:]
    assert (old["connections"], old["peak_connections"]) == (0, 12)
    assert (new["connections"], new["peak_connections"]) == (4, 4)
    assert history.report("a", T0 + MINUTE)["days"][-1]["peak_connections"] == 12


def test_gaps_are_null_and_idle_minutes_are_zero() -> None:
    history = StatsHistory()
    history.record("a", Sample(2, messages_sent=5), T0)
    history.record("a", Sample(0, messages_sent=5), T0 + MINUTE)  # sampled, idle
    # The server was down for three minutes.
    history.record("a", Sample(1, messages_sent=8), T0 + 5 * MINUTE)
    points = history.report("a", T0 + 5 * MINUTE)["minutes"][-6:]
    assert [p["nodes"] for p in points] == [1, 1, 0, 0, 0, 1]
    assert [p["messages_sent"] for p in points] == [5, 0, None, None, None, 3]
    assert points[2] == {
        "time": T0 + 2 * MINUTE,
        "nodes": 0,
        "connections": None,
        "peak_connections": None,
        "messages_sent": None,
        "messages_received": None,
        "api_calls": None,
        "webhook_deliveries": None,
        "webhook_failures": None,
    }
    # An app that was never active reads as zeros where the node sampled, gaps elsewhere.
    history.record("quiet", Sample(0), T0 + 5 * MINUTE)
    quiet = history.report("quiet", T0 + 5 * MINUTE)["minutes"][-6:]
    assert [p["messages_sent"] for p in quiet] == [0, 0, None, None, None, 0]
    days = history.report("quiet", T0 + 5 * MINUTE)["days"]
    assert days[-1]["messages_sent"] == 0 and days[-2]["nodes"] == 0
    assert days[-2]["messages_sent"] is None


def test_the_clock_stepping_back_rewrites_no_history() -> None:
    history = StatsHistory()
    history.record("a", Sample(1, messages_sent=1), T0 + 10 * MINUTE)
    history.record("a", Sample(1, messages_sent=4), T0 + 2 * MINUTE)  # NTP stepped back
    points = history.report("a", T0 + 2 * MINUTE)["minutes"]
    assert points[-1]["time"] == T0 + 10 * MINUTE and points[-1]["messages_sent"] == 4
    assert history.minute("a", int(T0 // MINUTE) + 2) is None


def test_since_serves_only_the_points_that_end_after_it() -> None:
    history = StatsHistory()
    for m in range(5):
        history.record("a", Sample(1, messages_sent=m + 1), T0 + m * MINUTE)
    report = history.report("a", T0 + 4 * MINUTE + 30, since=T0 + 3 * MINUTE)
    assert [p["time"] for p in report["minutes"]] == [T0 + 3 * MINUTE, T0 + 4 * MINUTE]
    assert [p["time"] for p in report["days"]] == [T0]
    # Inside a minute: that minute is still open, so it is served.
    inside = history.report("a", T0 + 4 * MINUTE + 30, since=T0 + 4 * MINUTE + 10)
    assert [p["time"] for p in inside["minutes"]] == [T0 + 4 * MINUTE]
    assert history.report("a", T0, since=T0 + DAY) == {
        "app": "a",
        "now": T0,
        "minutes": [],
        "days": [],
    }


def test_merging_nodes_sums_counts_and_counts_the_nodes() -> None:
    one, two = StatsHistory(), StatsHistory()
    one.record("a", Sample(3, messages_sent=10, messages_received=2, api_calls=1), T0)
    one.record("a", Sample(5, messages_sent=20, messages_received=2, api_calls=1), T0 + 20)
    two.record("a", Sample(4, messages_sent=7, api_calls=2, webhook_failures=1), T0 + 40)
    minute = int(T0 // MINUTE)
    merged = merge_minutes(
        part for part in (one.minute("a", minute), two.minute("a", minute)) if part is not None
    )
    assert merged == Minute(
        connections=9,
        peak_connections=9,
        messages_sent=27,
        messages_received=2,
        api_calls=3,
        webhook_deliveries=0,
        webhook_failures=1,
        nodes=2,
    )
    # A node that did not sample that minute adds nothing; no node at all is a gap.
    assert merge_minutes([p for p in [one.minute("a", minute + 1)] if p]) is None
    assert merge_minutes([one.minute("a", minute) or Minute()]) == one.minute("a", minute)
    # Merging is associative: a merged point merges again with a third node.
    third = Minute(connections=1, peak_connections=1, messages_sent=1)
    assert merge_minutes([merged, third]) == Minute(
        connections=10,
        peak_connections=10,
        messages_sent=28,
        messages_received=2,
        api_calls=3,
        webhook_deliveries=0,
        webhook_failures=1,
        nodes=3,
    )


def test_memory_is_fixed_per_app() -> None:
    history = StatsHistory()
    history.record("a", Sample(1, messages_sent=1), T0)
    series = history._apps["a"]
    assert series.minutes is not None and series.days is not None
    minute_cells, day_cells = len(series.minutes.cells), len(series.days.cells)
    assert minute_cells * 8 <= 100_000  # about 90 KiB for 24 hours of minutes
    tracemalloc.start()
    try:
        sent = 1
        # Two days and a half of one sample every 20 s: the rings wrap more than twice.
        for i in range(int(2.5 * DAY / 20)):
            sent += i % 7
            history.record("a", Sample(i % 50, messages_sent=sent, api_calls=i), T0 + i * 20)
            if i == 1000:
                before, _ = tracemalloc.get_traced_memory()
        after, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert after - before < 2_000, (before, after)
    assert (len(series.minutes.cells), len(series.days.cells)) == (minute_cells, day_cells)


def test_idle_apps_cost_no_rings_and_forget_drops_an_app() -> None:
    history = StatsHistory()
    for i in range(100):
        history.record(f"idle-{i}", Sample(0), T0 + i)
    assert all(s.minutes is None for s in history._apps.values())
    history.record("idle-0", Sample(1), T0 + 200)
    assert history._apps["idle-0"].minutes is not None
    history.forget("idle-0")
    assert "idle-0" not in history._apps
    assert history.minute("idle-0", int((T0 + 200) // MINUTE)) == Minute()
