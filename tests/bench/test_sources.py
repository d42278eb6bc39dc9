"""`python -m bench idle --sources N --processes P`: connections leave from several loopback
addresses across several client processes, and the server sees those peers.

The server's own view is read from /proc: the sockets among its file descriptors that are
established on its port, and their remote addresses in /proc/net/tcp.
"""

from __future__ import annotations

import json
import os
import socket
import struct
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from bench.config import parse_sources
from bench.rss import parse_stat, process_tree
from bench.scenarios.idle import idle_cpu_pct
from tests.bench.pyserverproc import REPO

pytestmark = pytest.mark.skipif(
    not Path("/proc/net/tcp").exists(), reason="reads the server's sockets from /proc (Linux)"
)


def server_peers(pid: int, port: int) -> Counter[str]:
    """Remote IPv4 addresses of the established connections the server holds on `port`."""
    inodes: set[str] = set()
    for member in process_tree(pid):
        fd_dir = Path(f"/proc/{member}/fd")
        for fd in fd_dir.iterdir():
            try:
                target = os.readlink(fd)
            except OSError:
                continue
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
    peers: Counter[str] = Counter()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local, remote, state, inode = fields[1], fields[2], fields[3], fields[9]
        if state != "01" or inode not in inodes or int(local.split(":")[1], 16) != port:
            continue
        address = socket.inet_ntoa(struct.pack("<I", int(remote.split(":")[0], 16)))
        peers[address] += 1
    return peers


def test_idle_from_three_sources_in_two_processes(server: tuple[int, int], tmp_path: Path) -> None:
    port, pid = server
    run = subprocess.Popen(
        [
            sys.executable, "-m", "bench", "idle", "--port", str(port),
            "--connections", "300", "--sources", "3", "--processes", "2",
            "--duration", "4", "--server-pid", str(pid),
            "--out", str(tmp_path), "--no-chart", "--no-progress",
        ],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )  # fmt: skip
    try:
        peers: Counter[str] = Counter()
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and run.poll() is None:
            peers = server_peers(pid, port)
            if sum(peers.values()) >= 300:
                break
            time.sleep(0.1)
        output, _ = run.communicate(timeout=40)
    finally:
        if run.poll() is None:
            run.kill()
            run.wait(timeout=5)
    assert peers == {"127.0.0.2": 100, "127.0.0.3": 100, "127.0.0.4": 100}, output
    assert run.returncode == 0, output
    result = json.loads(next(tmp_path.glob("*.json")).read_text())
    summary = result["summary"]
    assert summary["connected"] == 300 and summary["failed"] == 0
    assert summary["processes"] == 2
    assert summary["per_source"] == {"127.0.0.2": 100, "127.0.0.3": 100, "127.0.0.4": 100}
    assert summary["connect_phase_s"] > 0
    assert summary["idle_cpu_pct"] is not None and summary["idle_cpu_pct"] >= 0
    assert result["server"]["connections_at_end"] == 300
    assert result["server"]["rss_kb_per_connection"] is not None
    assert [w["pid"] for w in result["workers"]] != [None, None]


def test_parse_sources() -> None:
    assert parse_sources("") == ()
    assert parse_sources("0") == ()
    assert parse_sources("3") == ("127.0.0.2", "127.0.0.3", "127.0.0.4")
    assert parse_sources("127.0.0.9, 127.0.0.9,127.0.0.10") == ("127.0.0.9", "127.0.0.10")
    for bad in ("::1", "localhost", "251", "127.0.0.300"):
        with pytest.raises(ValueError):
            parse_sources(bad)


def test_sources_must_be_loopback_and_ipv4_targets() -> None:
    from bench import cli

    assert cli.prepare(["idle", "--sources", "2"]).sources == ("127.0.0.2", "127.0.0.3")
    with pytest.raises(SystemExit):
        cli.prepare(["idle", "--sources", "10.0.0.1"])
    with pytest.raises(SystemExit):
        cli.prepare(["idle", "--host", "::1", "--sources", "2"])


def test_fd_and_port_warnings() -> None:
    from bench import cli

    cfg = cli.prepare(["idle", "--connections", "100000", "--processes", "1"])
    notes = " ".join(cli.warnings_for(cfg))
    hard = cli.fd_limit()
    if hard is not None and hard < 100_000:
        assert "raise --processes" in notes
    ports = cli.ephemeral_ports()
    if ports is not None and ports < 100_000:
        assert "--sources" in notes
    quiet = cli.prepare(["idle", "--connections", "1000", "--processes", "1"])
    assert cli.warnings_for(quiet) == []


def test_parse_stat_counts_fields_after_the_name() -> None:
    # A command name with spaces and a parenthesis must not shift the fields.
    text = "42 (a b) c) S 7 42 42 0 -1 0 0 0 0 0 150 50 0 0 20 0 1 0 100 0 0"
    assert parse_stat(text) == (7, 200)
    assert parse_stat("garbage") is None


def test_idle_cpu_pct_uses_the_window_after_connecting() -> None:
    second = 1_000_000_000
    samples = [(0, 0.0), (second, 0.9), (2 * second, 0.95), (4 * second, 1.05)]
    assert idle_cpu_pct(samples, 2.0) == 5.0  # 0.10 s of CPU over 2 s
    assert idle_cpu_pct(samples, 3.5) is None  # one sample left
    assert idle_cpu_pct([(0, 0.0), (second // 2, 0.1)], 0.0) is None  # window < 1 s
