"""One clock for every process of a run.

Latency is measured from a timestamp taken in one process (the trigger sender) to the moment
another process (a subscriber worker) reads the event, so the clock must be system-wide.
On Linux and macOS `CLOCK_MONOTONIC` is; elsewhere `perf_counter_ns` (QueryPerformanceCounter
on Windows) is the closest equivalent.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable

NS_PER_S = 1_000_000_000


def _pick_clock() -> Callable[[], int]:
    clock_id = getattr(time, "CLOCK_MONOTONIC", None)
    if clock_id is not None and hasattr(time, "clock_gettime_ns"):
        return functools.partial(time.clock_gettime_ns, clock_id)
    return time.perf_counter_ns


now_ns: Callable[[], int] = _pick_clock()
"""Nanoseconds on a clock shared by all processes on this machine."""
