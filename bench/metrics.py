"""Counting and latency sampling inside one process, and merging the results of several.

A `Recorder` keeps:
- counters: name -> total;
- series: name -> counts per one-second bucket since the run's start (`t0_ns`);
- samples: name -> (offset in ms since start, value in µs) pairs, capped by reservoir
  sampling so memory stays bounded however long the run; `seen` keeps the exact count.

`export()` turns it into plain picklable data that crosses process boundaries; `merge()` adds
exports together.
"""

from __future__ import annotations

import random
from array import array
from dataclasses import dataclass, field
from typing import Any

from bench.clock import NS_PER_S

MAX_BUCKETS = 3_600
"""Series never grow past an hour of one-second buckets, whatever the timestamps say."""


@dataclass
class Samples:
    """A bounded uniform sample of (offset ms, value µs) pairs."""

    cap: int
    offsets_ms: array[int] = field(default_factory=lambda: array("q"))
    values_us: array[int] = field(default_factory=lambda: array("q"))
    seen: int = 0

    def add(self, offset_ms: int, value_us: int, rng: random.Random) -> None:
        self.seen += 1
        if len(self.values_us) < self.cap:
            self.offsets_ms.append(offset_ms)
            self.values_us.append(value_us)
            return
        slot = rng.randrange(self.seen)
        if slot < self.cap:
            self.offsets_ms[slot] = offset_ms
            self.values_us[slot] = value_us


class Recorder:
    """Counters, per-second series and latency samples of one process."""

    def __init__(self, max_samples: int = 1_000_000, seed: int | None = None) -> None:
        self.t0_ns: int | None = None
        self.frozen = False
        self.max_samples = max(1, max_samples)
        self.counters: dict[str, int] = {}
        self.series: dict[str, list[int]] = {}
        self.samples: dict[str, Samples] = {}
        self._rng = random.Random(seed)

    def start(self, t0_ns: int) -> None:
        """Set the start of the measured phase; series and samples count from here."""
        self.t0_ns = t0_ns

    def freeze(self) -> None:
        """Ignore everything from now on (the run is over; late arrivals do not count)."""
        self.frozen = True

    def count(self, name: str, now_ns: int | None = None, n: int = 1) -> None:
        """Add `n` to counter `name`, and to its series when the run has started."""
        if self.frozen:
            return
        self.counters[name] = self.counters.get(name, 0) + n
        if now_ns is None or self.t0_ns is None:
            return
        index = (now_ns - self.t0_ns) // NS_PER_S
        if index < 0:
            index = 0
        elif index >= MAX_BUCKETS:
            return
        series = self.series.get(name)
        if series is None:
            series = self.series[name] = []
        if index >= len(series):
            series.extend([0] * (index + 1 - len(series)))
        series[index] += n

    def sample(self, name: str, value_ns: int, now_ns: int) -> None:
        """Record one latency `value_ns` observed at `now_ns`."""
        if self.frozen:
            return
        samples = self.samples.get(name)
        if samples is None:
            samples = self.samples[name] = Samples(cap=self.max_samples)
        t0 = self.t0_ns
        offset_ms = (now_ns - t0) // 1_000_000 if t0 is not None else 0
        value_us = value_ns // 1_000 if value_ns > 0 else 0
        if len(samples.values_us) < samples.cap:  # the common case, inlined
            samples.seen += 1
            samples.offsets_ms.append(offset_ms)
            samples.values_us.append(value_us)
        else:
            samples.add(offset_ms, value_us, self._rng)

    def get(self, name: str) -> int:
        return self.counters.get(name, 0)

    def export(self) -> dict[str, Any]:
        """Plain data: counters, series, and samples as raw array bytes."""
        return {
            "counters": dict(self.counters),
            "series": {k: list(v) for k, v in self.series.items()},
            "samples": {
                k: {
                    "seen": s.seen,
                    "offsets_ms": s.offsets_ms.tobytes(),
                    "values_us": s.values_us.tobytes(),
                }
                for k, s in self.samples.items()
            },
        }


@dataclass
class Merged:
    """The sum of several recorders' exports."""

    counters: dict[str, int] = field(default_factory=dict)
    series: dict[str, list[int]] = field(default_factory=dict)
    offsets_ms: dict[str, list[int]] = field(default_factory=dict)
    values_us: dict[str, list[int]] = field(default_factory=dict)
    seen: dict[str, int] = field(default_factory=dict)

    def sampled(self, name: str) -> bool:
        """True when the samples of `name` are a subset of what was seen."""
        return self.seen.get(name, 0) > len(self.values_us.get(name, ()))


def merge(exports: list[dict[str, Any]]) -> Merged:
    """Add counters and series; concatenate samples."""
    out = Merged()
    for exp in exports:
        for k, v in exp.get("counters", {}).items():
            out.counters[k] = out.counters.get(k, 0) + v
        for k, series in exp.get("series", {}).items():
            mine = out.series.setdefault(k, [])
            if len(series) > len(mine):
                mine.extend([0] * (len(series) - len(mine)))
            for i, n in enumerate(series):
                mine[i] += n
        for k, s in exp.get("samples", {}).items():
            offsets, values = array("q"), array("q")
            offsets.frombytes(s["offsets_ms"])
            values.frombytes(s["values_us"])
            out.offsets_ms.setdefault(k, []).extend(offsets)
            out.values_us.setdefault(k, []).extend(values)
            out.seen[k] = out.seen.get(k, 0) + s["seen"]
    return out
