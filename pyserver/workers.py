"""`pyserver --workers N`: N server processes sharing one port, supervised by this one.

Each worker is an ordinary `pyserver` process started with `PYSERVER_WORKERS=1` and
`PYSERVER_REUSE_PORT=true`, so the kernel spreads new connections over them (SO_REUSEPORT).
They share state through the configured adapter (Redis), as nodes of a cluster do.

Invariants:
- The supervisor binds the port first (with SO_REUSEPORT, never listening on it), so
  `--port 0` gives every worker the same port and start-up errors show before any worker.
- A worker that dies is restarted (at most once per second); SIGTERM/SIGINT are passed to
  every worker and the supervisor exits when they have; a second signal kills them.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import time

from pyserver.config import Settings

log = logging.getLogger("pyserver.workers")


def supervise(settings: Settings, argv: list[str]) -> int:
    family = socket.AF_INET6 if ":" in settings.host else socket.AF_INET
    holder = socket.socket(family, socket.SOCK_STREAM)
    holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        holder.bind((settings.host, settings.port))
    except OSError as exc:
        log.error("cannot listen on %s:%s: %s", settings.host, settings.port, exc)
        return 1
    port = holder.getsockname()[1]
    command = [sys.executable, "-m", "pyserver", *_without_port(argv), "--port", str(port)]
    env = {**os.environ, "PYSERVER_WORKERS": "1", "PYSERVER_REUSE_PORT": "true"}
    workers: dict[int, subprocess.Popen[bytes]] = {}
    started: dict[int, float] = {}

    def spawn(index: int) -> None:
        workers[index] = subprocess.Popen(command, env={**env, "PYSERVER_WORKER_INDEX": str(index)})
        started[index] = time.monotonic()

    for index in range(settings.workers):
        spawn(index)
    log.info(
        "pyserver supervisor: %d workers on %s:%d (pids %s)",
        settings.workers,
        settings.host,
        port,
        ", ".join(str(p.pid) for p in workers.values()),
    )
    stopping = 0

    def on_signal(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping += 1
        for proc in workers.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL if stopping > 1 else signum)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        while True:
            time.sleep(0.2)
            alive = [p for p in workers.values() if p.poll() is None]
            if stopping:
                if not alive:
                    return 0
                continue
            for index, proc in list(workers.items()):
                if proc.poll() is not None and time.monotonic() - started[index] > 1.0:
                    log.error(
                        "worker %d (pid %d) exited with %s; restarting it",
                        index,
                        proc.pid,
                        proc.returncode,
                    )
                    spawn(index)
    finally:
        holder.close()


def _without_port(argv: list[str]) -> list[str]:
    """The command-line arguments minus `--port`/`--workers` and their values."""
    out: list[str] = []
    skip = False
    for arg in argv:
        if skip:
            skip = False
            continue
        if arg in ("--port", "--workers"):
            skip = True
            continue
        if arg.startswith(("--port=", "--workers=")):
            continue
        out.append(arg)
    return out
