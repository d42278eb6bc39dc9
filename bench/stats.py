"""Latency and throughput maths: pure functions over plain numbers.

Percentiles use the nearest-rank method: the p-th percentile of n sorted values is the value
at rank ceil(p/100 * n) (1-based), so every reported percentile is a value that was actually
observed, and p100 is the maximum.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

PERCENTILES: tuple[tuple[str, float], ...] = (
    ("p50", 50.0),
    ("p90", 90.0),
    ("p99", 99.0),
    ("p999", 99.9),
)


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile `q` (0 < q <= 100) of already sorted values."""
    if not sorted_values:
        raise ValueError("percentile of no values")
    if not 0.0 < q <= 100.0:
        raise ValueError(f"percentile {q} outside (0, 100]")
    # Round away float noise such as 99.9 * 1000 / 100 = 999.0000000000001 before ceil.
    rank = math.ceil(round(q * len(sorted_values) / 100.0, 9))
    return sorted_values[max(rank, 1) - 1]


def summarize(values: Iterable[float], scale: float = 1.0) -> dict[str, float | int]:
    """count, mean, min, p50, p90, p99, p999 and max of `values`, each divided by `scale`.

    An empty input gives `{"count": 0}`.
    """
    ordered = sorted(values)
    if not ordered:
        return {"count": 0}
    out: dict[str, float | int] = {
        "count": len(ordered),
        "mean": sum(ordered) / len(ordered) / scale,
        "min": ordered[0] / scale,
    }
    for name, q in PERCENTILES:
        out[name] = percentile(ordered, q) / scale
    out["max"] = ordered[-1] / scale
    return out


def bucket_index(offset_ns: int, bucket_ns: int) -> int:
    """Index of the time bucket holding `offset_ns` (negative offsets go to bucket 0)."""
    return max(offset_ns, 0) // bucket_ns


def add_series(a: Sequence[int], b: Sequence[int]) -> list[int]:
    """Element-wise sum of two count series of possibly different lengths."""
    n = max(len(a), len(b))
    return [(a[i] if i < len(a) else 0) + (b[i] if i < len(b) else 0) for i in range(n)]


def percentiles_by_bucket(
    offsets_ms: Sequence[int],
    values: Sequence[float],
    bucket_ms: int = 1000,
    qs: Sequence[float] = (50.0, 90.0, 99.0),
    scale: float = 1.0,
) -> list[dict[str, float | int]]:
    """Per time bucket: `{"t": bucket middle in s, "count": n, "p50": .., ...}`.

    `offsets_ms[i]` is when sample `values[i]` was taken, relative to the run's start. Buckets
    without samples are left out.
    """
    if len(offsets_ms) != len(values):
        raise ValueError("offsets and values differ in length")
    buckets: dict[int, list[float]] = {}
    for offset, value in zip(offsets_ms, values, strict=True):
        buckets.setdefault(max(offset, 0) // bucket_ms, []).append(value)
    rows: list[dict[str, float | int]] = []
    for index in sorted(buckets):
        ordered = sorted(buckets[index])
        start_s = index * bucket_ms / 1000.0
        row: dict[str, float | int] = {"t": start_s + bucket_ms / 2000.0, "count": len(ordered)}
        for q in qs:
            row[_label(q)] = percentile(ordered, q) / scale
        rows.append(row)
    return rows


def ratio(delivered: int, expected: int) -> float | None:
    """delivered / expected, or None when nothing was expected."""
    if expected <= 0:
        return None
    return delivered / expected


def rate(count: int, seconds: float) -> float:
    """count per second over `seconds` (0 when no time passed)."""
    return count / seconds if seconds > 0 else 0.0


def _label(q: float) -> str:
    for name, known in PERCENTILES:
        if known == q:
            return name
    return "p" + f"{q:g}".replace(".", "")
