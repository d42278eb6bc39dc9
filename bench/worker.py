"""The worker process: runs one scenario `Role` and reports to the parent.

Messages to the parent (on one shared queue), all tuples `(kind, worker index, payload)`:
`ready` (the role's setup report), `progress` (counters and live connections, every 0.5 s),
`result` (final recorder export, errors, extras) and `crash`. Commands from the parent (on the
worker's own queue): `("start", t0_ns, payload)` and `("stop",)`.

A worker stops by itself when its parent disappears or after `cfg.worker_deadline_s()`.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import queue
import signal
import threading
import traceback
from typing import Any

from bench.clock import now_ns
from bench.config import BenchConfig
from bench.scenarios import SCENARIOS
from bench.scenarios.base import WorkerContext

PROGRESS_INTERVAL = 0.5


def raise_fd_limit() -> None:
    """Lift this process's open-file soft limit to its hard limit (connections are files)."""
    try:
        import resource
    except ImportError:  # pragma: no cover - not on Windows
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def install_fast_loop() -> bool:
    """Use uvloop when it is installed; True if it is."""
    try:
        import uvloop
    except ImportError:
        return False
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    return True


def worker_main(
    cfg: BenchConfig,
    index: int,
    nproc: int,
    plan: dict[str, Any],
    commands: Any,
    reports: Any,
) -> None:
    """Process entry point."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when to stop
    raise_fd_limit()
    install_fast_loop()
    try:
        asyncio.run(_run(cfg, index, nproc, plan, commands, reports))
    except BaseException as exc:
        reports.put(("crash", index, "".join(traceback.format_exception(exc))[-2000:]))


async def _run(
    cfg: BenchConfig,
    index: int,
    nproc: int,
    plan: dict[str, Any],
    commands: Any,
    reports: Any,
) -> None:
    loop = asyncio.get_running_loop()
    ctx = WorkerContext(cfg, index, nproc, plan)
    role = SCENARIOS[cfg.scenario].role(ctx)
    gone = threading.Event()

    def on_command(message: tuple[Any, ...]) -> None:
        if message[0] == "start" and not ctx.started.is_set():
            ctx.recorder.start(message[1])
            ctx.payload = message[2]
            ctx.started.set()
        elif message[0] == "stop":
            ctx.stop.set()

    def listen() -> None:
        parent = multiprocessing.parent_process()
        while not gone.is_set():
            try:
                message = commands.get(timeout=0.5)
            except queue.Empty:
                if parent is not None and not parent.is_alive():
                    message = ("stop",)
                else:
                    continue
            except (EOFError, OSError):
                message = ("stop",)
            if message[0] == "stop":
                # Right away, from this thread: a loop busy with backlog may take long to
                # get to the callback below; from now on nothing counts and data is dropped.
                ctx.recorder.freeze()
                ctx.gate.open = False
            with contextlib.suppress(RuntimeError):  # loop already closed
                loop.call_soon_threadsafe(on_command, message)
            if message[0] == "stop":
                return

    threading.Thread(target=listen, name="bench-commands", daemon=True).start()

    async def report_progress() -> None:
        while True:
            await asyncio.sleep(PROGRESS_INTERVAL)
            reports.put(
                (
                    "progress",
                    index,
                    {
                        "counters": dict(ctx.recorder.counters),
                        "live": ctx.live,
                        "error_samples": ctx.errors.samples[:3],
                    },
                )
            )

    async def give_up() -> None:
        await asyncio.sleep(cfg.worker_deadline_s())
        ctx.errors.add("worker", "stopped by its own deadline")
        ctx.stop.set()

    progress = asyncio.create_task(report_progress())
    deadline = asyncio.create_task(give_up())
    live_at_stop = 0
    try:
        ready = await _until_stopped(ctx, role.setup())
        ready = dict(ready or {})
        ready.setdefault("live", ctx.live)
        ready.setdefault("error_samples", ctx.errors.samples[:3])
        reports.put(("ready", index, ready))
        await _until_stopped(ctx, ctx.started.wait())
        running = ctx.started.is_set() and not ctx.stop.is_set()
        if running and not await ctx.sleep_until(ctx.t0_ns):
            await _until_stopped(ctx, role.run())
        live_at_stop = ctx.live
    except Exception as exc:
        ctx.errors.add("worker", "".join(traceback.format_exception(exc))[-1000:])
    finally:
        ctx.recorder.freeze()
        ctx.gate.open = False
        ctx.stop.set()
        gone.set()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(role.close(), 15.0)
        progress.cancel()
        deadline.cancel()
        reports.put(
            (
                "result",
                index,
                {
                    "recorder": ctx.recorder.export(),
                    "errors": ctx.errors.counts,
                    "error_samples": ctx.errors.samples,
                    "live_at_stop": live_at_stop,
                    "extra": role.extra(),
                    "finished_ns": now_ns(),
                },
            )
        )


async def _until_stopped(ctx: WorkerContext, work: Any) -> Any:
    """Await `work`, giving up (and returning None) as soon as the run is stopped."""
    task = asyncio.ensure_future(work)
    stopper = asyncio.ensure_future(ctx.stop.wait())
    try:
        await asyncio.wait({task, stopper}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopper.cancel()
    if task.done():
        return task.result()
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError, Exception):
        await task
    return None
