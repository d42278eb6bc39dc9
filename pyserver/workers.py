"""`pyserver --workers N`: N server processes sharing one port, supervised by this one.

Each worker is an ordinary `pyserver` process started with `PYSERVER_WORKERS=1` that
inherits the supervisor's listening socket (`PYSERVER_LISTEN_FD`, the pre-fork model) and a
shared capacity board (`PYSERVER_CAPACITY_BOARD`, see `server.capacity`): every worker
accepts from the same queue, and one that is full stops accepting while the others have
room. They share state through the configured adapter (Redis), as nodes of a cluster do.

Invariants:
- The supervisor binds and listens first, so `--port 0` gives every worker the same port,
  start-up errors show before any worker, and connections wait in the queue (rather than
  being refused) while a worker restarts.
- A worker that dies is restarted (at most once per second); SIGTERM/SIGINT are passed to
  every worker and the supervisor exits when they have; a second signal kills them.
- The supervisor sleeps until a signal comes (a worker's SIGCHLD included, through the
  wakeup pipe) or a second passes: it reacts at once and costs nothing while all is well.
"""

from __future__ import annotations

import contextlib
import logging
import os
import resource
import select
import signal
import subprocess
import sys
import time

from pyserver.cluster.redis_connect import POOL_SIZE
from pyserver.config import Settings
from pyserver.server.capacity import Board, Budget, open_descriptors
from pyserver.server.listener import BOARD_FD_ENV, LISTEN_FD_ENV, shared_socket

log = logging.getLogger("pyserver.workers")


def supervise(settings: Settings, argv: list[str]) -> int:
    try:
        holder = shared_socket(settings.host, settings.port)
    except OSError as exc:
        log.error("cannot listen on %s:%s: %s", settings.host, settings.port, exc)
        return 1
    board = Board.create(settings.workers)
    port = holder.getsockname()[1]
    command = [sys.executable, "-m", "pyserver", *_without_port(argv), "--port", str(port)]
    env = {
        **os.environ,
        "PYSERVER_WORKERS": "1",
        LISTEN_FD_ENV: str(holder.fileno()),
        BOARD_FD_ENV: str(board.fd),
    }
    env.pop("PYSERVER_REUSE_PORT", None)
    limit = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    # Each worker reserves its own link's connections once it has reached Redis (a cluster:
    # per shard, its own log line says); this first guess counts one pool.
    redis = POOL_SIZE if settings.adapter == "redis" else 0
    estimate = Budget.compute(limit, open_descriptors() + 8, redis_connections=redis)
    log.info("supervisor: about %s", estimate.describe(settings.workers).split(": ", 1)[1])
    workers: dict[int, subprocess.Popen[bytes]] = {}
    started: dict[int, float] = {}

    def spawn(index: int) -> None:
        board.clear(index)
        workers[index] = subprocess.Popen(
            command,
            env={**env, "PYSERVER_WORKER_INDEX": str(index)},
            pass_fds=(holder.fileno(), board.fd),
        )
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
    wake, woken = os.pipe()
    os.set_blocking(wake, False)
    os.set_blocking(woken, False)
    signal.set_wakeup_fd(woken)
    signal.signal(signal.SIGCHLD, lambda signum, frame: None)  # only to be woken
    try:
        while True:
            select.select([wake], [], [], 1.0)
            with contextlib.suppress(BlockingIOError):
                os.read(wake, 512)  # a signal number per byte: it only says "look again"
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
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        os.close(wake)
        os.close(woken)
        holder.close()
        board.close()
        os.close(board.fd)


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
