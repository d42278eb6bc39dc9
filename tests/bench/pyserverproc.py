"""A real pyserver on loopback, and `python -m bench`, for the bench's end-to-end tests.

`start_pyserver()` runs `python -m pyserver --host 127.0.0.1 --port 0`, reads its port from
the `listening on 127.0.0.1:PORT` log line, and stops it with SIGTERM by PID (SIGKILL if it
does not exit within 10 s).
"""

from __future__ import annotations

import contextlib
import os
import queue
import re
import signal
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


@contextlib.contextmanager
def start_pyserver(config: Path | None = None) -> Iterator[tuple[int, int]]:
    """(port, pid) of a pyserver that runs for the `with` block (with `config`, a TOML file)."""
    extra = ["--config", str(config)] if config is not None else []
    proc = subprocess.Popen(
        [sys.executable, "-m", "pyserver", "--host", "127.0.0.1", "--port", "0", *extra],
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
    """`python -m bench ARGS --no-progress` from the repository root."""
    return subprocess.run(
        [sys.executable, "-m", "bench", *args, "--no-progress"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
