"""End to end: a short `fanout` run of `python -m bench` against a real pyserver on loopback.

The server is started as `python -m pyserver --host 127.0.0.1 --port 0`; its port is read
from its `listening on 127.0.0.1:PORT` log line, and it is stopped with SIGTERM by PID.
"""

from __future__ import annotations

import json
import os
import queue
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
LISTENING = re.compile(r"listening on 127\.0\.0\.1:(\d+)")
START_TIMEOUT = 15.0


def _drain(stream: Any, lines: queue.Queue[str]) -> None:
    for line in stream:
        lines.put(line)


@pytest.fixture(scope="module")
def server() -> Iterator[tuple[int, int]]:
    """(port, pid) of a pyserver started for these tests."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "pyserver", "--host", "127.0.0.1", "--port", "0"],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=_drain, args=(proc.stdout, lines), daemon=True).start()
    seen: list[str] = []
    port = None
    deadline = time.monotonic() + START_TIMEOUT
    try:
        while port is None and time.monotonic() < deadline and proc.poll() is None:
            try:
                line = lines.get(timeout=0.2)
            except queue.Empty:
                continue
            seen.append(line)
            match = LISTENING.search(line)
            if match:
                port = int(match.group(1))
        if port is None:
            pytest.fail("pyserver did not start:\n" + "".join(seen[-30:]))
        yield port, proc.pid
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)


def run_bench(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bench", *args, "--no-progress"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


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
    assert result["server"]["rss_kb"]["start"] > 0
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
