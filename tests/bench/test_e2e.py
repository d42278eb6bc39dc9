"""End to end: a short `fanout` run of `python -m bench` against a real pyserver on loopback
(the `server` fixture of conftest.py)."""

from __future__ import annotations

import json
import socket
import subprocess
import time
from pathlib import Path

import pytest

from tests.bench.pyserverproc import run_bench


@pytest.fixture(scope="module")
def fanout_run(
    server: tuple[int, int], tmp_path_factory: pytest.TempPathFactory
) -> tuple[subprocess.CompletedProcess[str], Path]:
    port, pid = server
    out = tmp_path_factory.mktemp("bench-results")
    done = run_bench(
        "fanout",
        "--port", str(port),
        "--duration", "2",
        "--connections", "20",
        "--processes", "1",
        "--rate", "20",
        "--server-pid", str(pid),
        "--out", str(out),
    )  # fmt: skip
    return done, out


def test_fanout_delivers_everything_and_writes_json(
    fanout_run: tuple[subprocess.CompletedProcess[str], Path],
) -> None:
    done, out = fanout_run
    assert done.returncode == 0, done.stdout + done.stderr
    files = sorted(out.glob("*.json"))
    assert len(files) == 1, list(out.iterdir())
    result = json.loads(files[0].read_text())
    assert result["status"] == "ok", result["abort_reason"]
    summary = result["summary"]
    assert summary["subscribers"] == 20
    assert summary["triggers_accepted"] > 0
    assert summary["expected"] == 20 * summary["triggers_accepted"]
    assert summary["delivered"] == summary["expected"]
    assert summary["ratio"] == 1.0
    delivery = result["latency_ms"]["delivery"]
    assert delivery["count"] == summary["delivered"]
    assert 0 <= delivery["p50"] <= delivery["p99"] <= delivery["p999"] <= delivery["max"]
    assert result["latency_clock"] == "kernel-receive"  # the default on Linux
    assert "latency clock        kernel-receive" in done.stdout
    assert result["server"]["rss_kb"]["start"] > 0
    # the server's CPU over the measured phase and drain, per accepted trigger
    assert result["server"]["cpu_s"] > 0
    per_op = result["server"]["cpu_s"] * 1e6 / summary["triggers_accepted"]
    assert result["server"]["cpu_us_per_op"] == pytest.approx(per_op, rel=0.01)
    assert "app-secret" not in files[0].read_text()
    assert "ratio" in done.stdout and str(files[0]) in done.stdout


def test_fanout_writes_a_png_chart(
    fanout_run: tuple[subprocess.CompletedProcess[str], Path],
) -> None:
    pytest.importorskip("matplotlib", reason="the chart needs the bench extra (matplotlib)")
    done, out = fanout_run
    pngs = list(out.glob("*.png"))
    assert len(pngs) == 1, done.stdout + done.stderr
    assert pngs[0].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert pngs[0].stat().st_size > 10_000


def test_a_run_against_a_closed_port_aborts_quickly(tmp_path: Path) -> None:
    with socket.socket() as sock:  # a loopback port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    started = time.monotonic()
    done = run_bench(
        "fanout", "--port", str(port), "--duration", "2", "--connections", "5",
        "--no-chart", "--out", str(tmp_path),
    )  # fmt: skip
    assert done.returncode == 1, done.stdout + done.stderr
    assert "aborted" in done.stdout and "no WebSocket connection" in done.stdout
    assert time.monotonic() - started < 15
    result = json.loads(next(tmp_path.glob("*.json")).read_text())
    assert result["status"] == "aborted"


@pytest.mark.parametrize("cork", [False, True])
def test_client_events_at_max_rate_run_a_bounded_closed_loop(tmp_path: Path, cork: bool) -> None:
    """`--rate 0`: each sender keeps --window events in flight and sends the next as its
    peer reads one; the loop goes on past the first window and every event is relayed once."""
    from tests.bench.pyserverproc import start_pyserver

    parity = Path(__file__).parents[2] / "bench" / "servers" / "pyserver-parity.toml"
    with start_pyserver(parity) as (port, pid):
        done = run_bench(
            "client-events",
            "--port", str(port),
            "--duration", "1.5",
            "--connections", "20",
            "--processes", "1",
            "--rate", "0",
            "--window", "3",
            "--server-pid", str(pid),
            "--out", str(tmp_path),
            *(["--cork"] if cork else []),
        )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    (file,) = tmp_path.glob("*.json")
    result = json.loads(file.read_text())
    assert result["status"] == "ok", result["abort_reason"]
    summary = result["summary"]
    assert summary["pairs"] == 10
    assert summary["sent"] > 20 * 3  # more than the first window: the loop refills
    assert summary["rate_limited"] == 0
    assert summary["delivered"] == summary["expected"] == summary["sent"]
    assert result["server"]["cpu_us_per_op"] > 0
