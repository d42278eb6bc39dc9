"""The bench's history cases: the `catchup` scenario (its pure parts, and a short run against
a real pyserver keeping history with bench/servers/pyserver-history.toml), the server CPU
per message that `fanout` reports, and compare's `history` profile."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from bench.compare import PROFILES, select_cases
from bench.config import BenchConfig, validate
from bench.metrics import Recorder
from bench.protocol import Frame, loads
from bench.scenarios.catchup import (
    CatchupDriver,
    Tracker,
    channel_name,
    probe_phase,
    resume_frame,
    resume_token,
)
from tests.bench.pyserverproc import REPO, run_bench, start_pyserver

HISTORY_CONFIG = REPO / "bench" / "servers" / "pyserver-history.toml"


def _cfg(**kw: object) -> BenchConfig:
    base: dict[str, object] = dict(
        scenario="catchup",
        host="127.0.0.1",
        connect_host="127.0.0.1",
        port=6001,
        app_id="app-id",
        key="app-key",
        secret="app-secret",
        duration=6.0,
        connections=10,
        rate=0.0,
        processes=2,
        run_id="r1",
    )
    base.update(kw)
    return BenchConfig(**base)  # type: ignore[arg-type]


def test_tracker_counts_each_event_once_and_notices_order() -> None:
    t = Tracker(5)
    assert [t.receive(s) for s in (0, 1, 3)] == ["ok", "ok", "ok"]
    assert t.receive(2) == "out_of_order"
    assert t.receive(3) == "duplicate" and t.receive(0) == "duplicate"
    assert t.receive(5) == "unknown" and t.receive(-1) == "unknown"
    assert (t.received, t.missing) == (4, 1)
    assert t.receive(4) == "ok" and t.missing == 0


def test_probe_phases_split_the_run_at_publish_and_return() -> None:
    assert probe_phase(0, 1.0, 3.0) == "probe_quiet"
    assert probe_phase(999_999_999, 1.0, 3.0) == "probe_quiet"
    assert probe_phase(1_000_000_000, 1.0, 3.0) == "probe_publish"
    assert probe_phase(3_000_000_000, 1.0, 3.0) == "probe_catchup"


def test_resume_token_frame_and_answer_are_those_of_the_documented_snippet() -> None:
    token_frame = Frame("pusher_internal:resume_token", None, '{"token":"abc.def"}')
    assert resume_token(token_frame) == "abc.def"
    assert resume_token(Frame("pusher_internal:resume_token", None, {"token": "x"})) == "x"
    assert resume_token(Frame("pusher_internal:resume_token", None, "{}")) is None
    assert resume_token(Frame("bench", "c", '{"token":"abc"}')) is None
    assert loads(resume_frame("abc")) == {"event": "pusher:resume", "data": {"token": "abc"}}
    assert channel_name("r1") == "bench-catchup-r1"


def test_watchers_get_a_process_of_their_own() -> None:
    driver = CatchupDriver(_cfg(connections=10, watchers=3), Recorder())
    assert driver.plans(3) == [{"watchers": 3, "count": 0}, {"count": 5}, {"count": 5}]
    assert driver.plans(1) == [{"watchers": 3, "count": 10}]


def test_options_are_bounded() -> None:
    assert validate(_cfg()) == []
    problems = " ".join(
        validate(_cfg(catchup_events=0, away=0.0, probe_interval=0.5, watchers=0, duration=1))
    )
    for option in ("--catchup-events", "--away", "--probe-interval", "--watchers", "--duration"):
        assert option in problems


def test_history_profile_compares_fanout_by_server_cpu_per_message() -> None:
    cases = select_cases("history", "", "")
    assert [c.name for c in cases] == ["fanout-n1000-max", "fanout-n1000-r50k"]
    for case in cases:
        assert "summary.server_cpu_us_per_message" in [m.path for m in case.metrics]
    assert "history" in PROFILES


@pytest.fixture(scope="module")
def history_server() -> object:
    with start_pyserver(HISTORY_CONFIG) as running:
        yield running


def _result(done: subprocess.CompletedProcess[str], out: Path) -> dict[str, object]:
    assert done.returncode == 0, done.stdout + done.stderr
    files = sorted(out.glob("*.json"))
    assert len(files) == 1, list(out.iterdir())
    result: dict[str, object] = json.loads(files[0].read_text())
    assert result["status"] == "ok", result["abort_reason"]
    return result


def test_catchup_run_replays_every_missed_event_once_in_order(
    history_server: tuple[int, int], tmp_path: Path
) -> None:
    port, pid = history_server
    done = run_bench(
        "catchup", "--port", str(port), "--connections", "20", "--catchup-events", "100",
        "--away", "1", "--duration", "3", "--processes", "2", "--watchers", "2",
        "--server-pid", str(pid), "--no-chart", "--out", str(tmp_path),
    )  # fmt: skip
    result = _result(done, tmp_path)
    s = result["summary"]
    assert isinstance(s, dict)
    assert s["subscribers"] == s["tokens"] == s["returned"] == 20, s
    assert s["published"] == s["published_before_return"] == 100, s
    assert s["expected"] == s["delivered"] == 2000 and s["caught_up"] == 20, s
    assert s["duplicates"] == s["out_of_order"] == s["missing"] == s["recovery_failed"] == 0, s
    assert s["probe_shares_process"] is False and s["probes"] > 0, s
    latency = result["latency_ms"]
    assert isinstance(latency, dict)
    for stream in ("probe_quiet", "probe_publish", "probe_catchup", "catchup"):
        assert latency[stream]["count"] > 0, stream
    assert latency["catchup"]["count"] == 20
    # /proc counts CPU in 10 ms ticks, and 2000 small replays can cost less than one tick on a
    # fast machine: the run must report the figure, not a particular size of it.
    assert isinstance(s["server_cpu_after_return_s"], float), s
    assert s["server_cpu_after_return_s"] >= 0, s
    assert s["server_cpu_us_per_replayed"] == pytest.approx(
        1e6 * s["server_cpu_after_return_s"] / 2000, rel=0.01
    )


def test_catchup_against_a_server_without_history_says_why(tmp_path: Path) -> None:
    with start_pyserver() as (port, _pid):
        done = run_bench(
            "catchup", "--port", str(port), "--connections", "3", "--catchup-events", "5",
            "--away", "0.5", "--duration", "2", "--no-chart", "--out", str(tmp_path),
        )  # fmt: skip
    assert done.returncode == 1, done.stdout + done.stderr
    assert "no resume token" in done.stdout


def test_fanout_reports_server_cpu_per_message(
    history_server: tuple[int, int], tmp_path: Path
) -> None:
    port, pid = history_server
    done = run_bench(
        "fanout", "--port", str(port), "--connections", "20", "--rate", "50",
        "--duration", "2", "--server-pid", str(pid), "--no-chart", "--out", str(tmp_path),
    )  # fmt: skip
    s = _result(done, tmp_path)["summary"]
    assert isinstance(s, dict)
    assert s["ratio"] == 1.0, s
    assert s["server_cpu_s"] is not None and s["server_cpu_s"] > 0, s
    assert 0 < s["server_cpu_pct"] <= 100 * 2, s  # 2 cores at most on this machine
    assert s["server_cpu_us_per_message"] == pytest.approx(
        1e6 * s["server_cpu_s"] / s["expected"], rel=0.01
    )
