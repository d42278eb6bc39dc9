"""Percentile maths, per-bucket series and the sampling recorder."""

import random

import pytest

from bench import stats
from bench.clock import NS_PER_S
from bench.metrics import Recorder, merge


def test_nearest_rank_percentiles_of_1_to_100() -> None:
    values = list(range(1, 101))
    assert stats.percentile(values, 50) == 50
    assert stats.percentile(values, 90) == 90
    assert stats.percentile(values, 99) == 99
    assert stats.percentile(values, 99.9) == 100
    assert stats.percentile(values, 100) == 100
    assert stats.percentile(values, 0.5) == 1


def test_percentile_of_1_to_1000_has_no_float_noise() -> None:
    values = list(range(1, 1001))
    assert stats.percentile(values, 99.9) == 999  # 99.9 * 1000 / 100 is 999.0000000000001
    assert stats.percentile(values, 99) == 990


def test_percentile_small_sets() -> None:
    assert stats.percentile([7], 50) == 7
    assert stats.percentile([1, 2], 50) == 1
    assert stats.percentile([1, 2], 51) == 2
    assert stats.percentile([1, 2, 3, 4], 75) == 3


def test_percentile_rejects_bad_input() -> None:
    with pytest.raises(ValueError):
        stats.percentile([], 50)
    with pytest.raises(ValueError):
        stats.percentile([1], 0)
    with pytest.raises(ValueError):
        stats.percentile([1], 101)


def test_summarize_scales_and_ignores_order() -> None:
    values = list(range(1000, 0, -1))  # 1000 .. 1 in µs, shuffled order does not matter
    random.Random(1).shuffle(values)
    s = stats.summarize(values, scale=1000.0)
    assert s["count"] == 1000
    assert s["min"] == pytest.approx(0.001)
    assert s["p50"] == pytest.approx(0.5)
    assert s["p90"] == pytest.approx(0.9)
    assert s["p99"] == pytest.approx(0.99)
    assert s["p999"] == pytest.approx(0.999)
    assert s["max"] == pytest.approx(1.0)
    assert s["mean"] == pytest.approx(0.5005)


def test_summarize_empty() -> None:
    assert stats.summarize([]) == {"count": 0}


def test_percentiles_by_bucket() -> None:
    offsets = [0, 100, 900, 1000, 1500, 3999]
    values = [1, 2, 3, 10, 20, 7]
    rows = stats.percentiles_by_bucket(offsets, values)
    assert [r["t"] for r in rows] == [0.5, 1.5, 3.5]
    assert rows[0]["count"] == 3 and rows[0]["p50"] == 2 and rows[0]["p99"] == 3
    assert rows[1]["p50"] == 10 and rows[1]["p90"] == 20
    assert rows[2]["count"] == 1 and rows[2]["p99"] == 7


def test_series_helpers() -> None:
    assert stats.add_series([1, 2], [3, 4, 5]) == [4, 6, 5]
    assert stats.bucket_index(-5, 10) == 0
    assert stats.bucket_index(25, 10) == 2
    assert stats.ratio(5, 10) == 0.5
    assert stats.ratio(1, 0) is None
    assert stats.rate(10, 2.0) == 5.0
    assert stats.rate(10, 0.0) == 0.0


def test_recorder_counts_series_and_samples() -> None:
    rec = Recorder(max_samples=100, seed=0)
    rec.count("setup_only")  # before start: counter but no series
    t0 = 10 * NS_PER_S
    rec.start(t0)
    rec.count("delivered", t0 + 100)
    rec.count("delivered", t0 + NS_PER_S + 5, n=3)
    rec.count("delivered", t0 - 7)  # early: first bucket
    rec.sample("delivery", 2_500_000, t0 + 1_500_000_000)
    exp = rec.export()
    assert exp["counters"] == {"setup_only": 1, "delivered": 5}
    assert exp["series"] == {"delivered": [2, 3]}
    merged = merge([exp, exp])
    assert merged.counters["delivered"] == 10
    assert merged.series["delivered"] == [4, 6]
    assert merged.values_us["delivery"] == [2500, 2500]
    assert merged.offsets_ms["delivery"] == [1500, 1500]
    assert not merged.sampled("delivery")


def test_recorder_reservoir_stays_bounded_and_uniform() -> None:
    rec = Recorder(max_samples=1000, seed=42)
    rec.start(0)
    for i in range(100_000):
        rec.sample("x", i * 1000, i)
    merged = merge([rec.export()])
    kept = merged.values_us["x"]
    assert len(kept) == 1000
    assert merged.seen["x"] == 100_000
    assert merged.sampled("x")
    median = stats.percentile(sorted(kept), 50)
    assert 40_000 < median < 60_000  # a uniform sample of 0..99999 has its median near 50000


def test_merge_of_counters_only_exports() -> None:
    merged = merge([{"counters": {"a": 1}}, {"counters": {"a": 2, "b": 1}}])
    assert merged.counters == {"a": 3, "b": 1}
    assert merged.values_us == {}
