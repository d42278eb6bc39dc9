"""Two pyserver nodes on a throwaway Redis (one server, or a three-master Redis Cluster), with
a `python -m bench` run against them: WebSocket clients on node A, HTTP triggers to node B,
so every delivery crosses the Redis bus.

    python -m bench.topology --redis single -- fanout --connections 500 --rate 500
    python -m bench.topology --redis cluster -- channels --connections 500 --rate 1000

Everything after `--` is passed to `python -m bench` (`--port` and `--api-port` are added).
Every process runs on loopback, on free ports, in a temporary directory, and is stopped by
its PID when the run ends (the bench bounds its own time; start-up has timeouts). Needs
`redis-server` (7 or later for the cluster's sharded pub/sub) and `redis-cli` on PATH.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

START_TIMEOUT = 30.0
"""Seconds Redis or a node may take to start."""
APP = {
    "PYSERVER_APP_ID": "app-id",
    "PYSERVER_APP_KEY": "app-key",
    "PYSERVER_APP_SECRET": "app-secret",
}
"""The app `python -m bench` uses by default."""


def _free_port(pair: bool = False) -> int:
    """A free loopback port; with `pair`, one whose +10000 (a cluster bus port) is free too."""
    for _ in range(500):
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = int(sock.getsockname()[1])
        if not pair:
            return port
        candidate = 20_000 + port % 30_000
        try:
            with socket.socket() as a, socket.socket() as b:
                a.bind(("127.0.0.1", candidate))
                b.bind(("127.0.0.1", candidate + 10_000))
            return candidate
        except OSError:
            continue
    raise RuntimeError("no free port")


def _ping(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False


def _wait(check: object, what: str) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if callable(check) and check():
            return
        time.sleep(0.1)
    raise RuntimeError(f"timed out waiting for {what}")


class Topology:
    """The processes of one run; `stop()` ends each by its PID."""

    def __init__(self, kind: str, workdir: Path) -> None:
        self.kind = kind
        self.workdir = workdir
        self.procs: list[subprocess.Popen[bytes]] = []
        self.redis_ports: list[int] = []
        self.nodes: list[int] = []
        self.node_pids: list[int] = []

    def _spawn(self, argv: list[str], log: str, env: dict[str, str] | None = None) -> None:
        with (self.workdir / log).open("ab") as out:
            self.procs.append(
                subprocess.Popen(
                    argv, stdout=out, stderr=subprocess.STDOUT, cwd=self.workdir, env=env
                )
            )

    def start_redis(self) -> str:
        server = shutil.which("redis-server")
        if server is None:
            raise RuntimeError("redis-server is not on PATH")
        count = 3 if self.kind == "cluster" else 1
        for i in range(count):
            port = _free_port(pair=self.kind == "cluster")
            data = self.workdir / f"redis-{i}"
            data.mkdir()
            argv = [server, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(data)]
            argv += ["--save", "", "--appendonly", "no"]
            if self.kind == "cluster":
                argv += ["--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf"]
            self._spawn(argv, f"redis-{i}.log")
            self.redis_ports.append(port)
        for port in self.redis_ports:
            _wait(lambda port=port: _ping(port), f"redis on {port}")
        if self.kind == "cluster":
            cli = shutil.which("redis-cli")
            if cli is None:
                raise RuntimeError("redis-cli is not on PATH")
            addresses = [f"127.0.0.1:{p}" for p in self.redis_ports]
            subprocess.run(
                [cli, "--cluster", "create", *addresses, "--cluster-yes"],
                check=True,
                capture_output=True,
                timeout=START_TIMEOUT,
            )

            def ok() -> bool:
                info = subprocess.run(
                    [cli, "-p", str(self.redis_ports[0]), "CLUSTER", "INFO"],
                    capture_output=True,
                    timeout=5,
                ).stdout
                return b"cluster_state:ok" in info

            _wait(ok, "cluster_state:ok")
        return f"redis://127.0.0.1:{self.redis_ports[0]}/0"

    def start_nodes(self, url: str, count: int = 2) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PYSERVER_")}
        env.update(APP)
        env.update(
            PYSERVER_ADAPTER="redis",
            PYSERVER_REDIS_URL=url,
            PYSERVER_REDIS_CLUSTER="true" if self.kind == "cluster" else "false",
            PYSERVER_REDIS_PREFIX="bench",
            PYSERVER_METRICS_PORT="0",
            PYSERVER_LOG_LEVEL="warning",
        )
        root = Path(__file__).resolve().parents[1]
        for i in range(count):
            port = _free_port()
            argv = [sys.executable, "-m", "pyserver", "--host", "127.0.0.1", "--port", str(port)]
            with (self.workdir / f"node-{i}.log").open("ab") as out:
                proc = subprocess.Popen(
                    argv, stdout=out, stderr=subprocess.STDOUT, cwd=root, env=env
                )
            self.procs.append(proc)
            self.nodes.append(port)
            self.node_pids.append(proc.pid)
        for port in self.nodes:
            _wait(lambda port=port: _http_up(port), f"pyserver on {port}")

    def stop(self) -> None:
        for proc in reversed(self.procs):
            if proc.poll() is None:
                proc.terminate()
        for proc in reversed(self.procs):
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)


def _http_up(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
            sock.sendall(b"GET /ready HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            return bool(re.match(rb"HTTP/1\.1 200", sock.recv(64)))
    except OSError:
        return False


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.topology",
        description="Run python -m bench against two pyserver nodes on a throwaway Redis.",
    )
    parser.add_argument("--redis", choices=("single", "cluster"), default="single")
    parser.add_argument("--keep-logs", action="store_true", help="print where the logs are")
    parser.add_argument("bench", nargs=argparse.REMAINDER, help="-- then python -m bench args")
    args = parser.parse_args(argv)
    bench_args = [a for a in args.bench if a != "--"] if args.bench else []
    if not bench_args:
        parser.error("give the bench arguments after --, e.g. -- fanout --connections 500")
    workdir = Path(tempfile.mkdtemp(prefix="pyserver-topology-"))
    topology = Topology(args.redis, workdir)
    try:
        url = topology.start_redis()
        topology.start_nodes(url)
        a, b = topology.nodes
        label = f"two nodes, {args.redis} redis ({len(topology.redis_ports)} shard(s))"
        command = [sys.executable, "-m", "bench", *bench_args, "--port", str(a)]
        command += ["--api-port", str(b), "--label", label]
        print(f"bench.topology: nodes on {a} (clients) and {b} (triggers), redis {url}")
        return subprocess.run(command, check=False).returncode
    finally:
        topology.stop()
        if args.keep_logs:
            print(f"bench.topology: logs in {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
