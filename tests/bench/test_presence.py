"""The `presence` scenario against a real pyserver: churners join only during the measured
phase, also when they cannot keep the offered rate."""

from __future__ import annotations

import json
from pathlib import Path

from tests.bench.pyserverproc import run_bench

CHURNERS = 20


def test_churners_behind_their_schedule_stop_joining_at_the_end_of_the_measured_phase(
    server: tuple[int, int], tmp_path: Path
) -> None:
    """Offered 20,000 joins/s, far more than one generator process makes: every churner
    falls behind its schedule and joins as fast as it can. That must end with the measured
    phase (1 s), not run on through the drain until the stop, or joins/s (joins over the
    measured phase) grows with however long the drain happened to last."""
    port, pid = server
    done = run_bench(
        "presence",
        "--port", str(port),
        "--duration", "1",
        "--drain", "3",
        "--connections", str(CHURNERS),
        "--presence-channels", "2",
        "--watchers", "2",
        "--rate", "20000",
        "--hold", "0.1",
        "--processes", "1",
        "--server-pid", str(pid),
        "--no-chart",
        "--out", str(tmp_path),
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    (file,) = tmp_path.glob("*.json")
    result = json.loads(file.read_text())
    assert result["status"] == "ok", result["abort_reason"]
    summary = result["summary"]
    joins = result["timeseries"]["counts"]["joins"]  # one-second buckets from the start
    assert summary["join_failed"] == 0
    assert joins[0] > 10 * CHURNERS  # the churners were busy during the measured second
    # after it, only joins already in flight at its end: at most one per churner
    assert sum(joins[1:]) <= CHURNERS, joins
    assert summary["joins"] == sum(joins)
    assert summary["join_rate"] == summary["joins"] / result["timing_s"]["measured"]
    assert summary["leaves"] == summary["joins"]
