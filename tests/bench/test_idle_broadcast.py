"""`python -m bench idle --broadcast`: every idle connection subscribes, and one trigger to
all of them is timed across client processes until the last one has read it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from bench.scenarios.idle import broadcast_s, rss_per_connection
from tests.bench.pyserverproc import REPO


def test_broadcast_reaches_every_idle_client_in_two_processes(
    server: tuple[int, int], tmp_path: Path
) -> None:
    port, pid = server
    run = subprocess.run(
        [
            sys.executable, "-m", "bench", "idle", "--port", str(port),
            "--connections", "400", "--processes", "2", "--broadcast",
            "--duration", "2", "--server-pid", str(pid),
            "--out", str(tmp_path), "--no-chart", "--no-progress",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )  # fmt: skip
    assert run.returncode == 0, run.stdout + run.stderr
    result = json.loads(next(tmp_path.glob("*.json")).read_text())
    summary = result["summary"]
    assert summary["processes"] == 2
    assert summary["subscribed"] == 400
    assert summary["broadcast_received"] == 400
    assert summary["broadcast_s"] is not None and 0 < summary["broadcast_s"] < 10
    assert summary["rss_bytes_per_connection"] is not None
    assert "broadcast_s" in run.stdout


def test_broadcast_time_is_the_last_receive_of_any_worker() -> None:
    extras = [
        {"broadcast_last_ns": 3_000_000_000},
        {"broadcast_last_ns": None},
        {"broadcast_last_ns": 1_500_000_000},
    ]
    assert broadcast_s(1_000_000_000, extras) == 2.0
    assert broadcast_s(None, extras) is None  # the trigger was not accepted
    assert broadcast_s(1_000_000_000, [{"broadcast_last_ns": None}]) is None


def test_rss_per_connection_in_bytes() -> None:
    assert rss_per_connection(1000, 3000, 1024) == 2000
    assert rss_per_connection(None, 3000, 10) is None
    assert rss_per_connection(1000, 3000, 0) is None
