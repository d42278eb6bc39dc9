"""The parent process of a run: spawns workers, sequences the phases, collects results.

Phases: setup (workers open their connections and report ready, bounded by
--setup-timeout), measure (from a common start time t0 for --duration seconds; the driver
sends triggers, workers count), drain (up to --drain seconds until every expected delivery
arrived), stop (workers close their connections and send their results; stragglers are
terminated). A run also ends early when the server goes away, all connections are lost, or
on Ctrl-C; it is then marked aborted but its numbers are still reported.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import queue
import signal
from dataclasses import dataclass, field
from typing import Any

from bench.clock import NS_PER_S, now_ns
from bench.config import BenchConfig
from bench.metrics import Merged, Recorder, merge
from bench.progress import Progress
from bench.rss import read_cpu_s, read_rss_kb
from bench.scenarios import SCENARIOS
from bench.scenarios.base import Driver, ParentContext
from bench.worker import worker_main

START_DELAY_S = 0.3
TICK_S = 0.25
RESULT_TIMEOUT_S = 25.0
SPAWN_ALLOWANCE_S = 30.0


@dataclass
class WorkerState:
    process: Any
    ready: dict[str, Any] | None = None
    progress: dict[str, Any] = field(default_factory=dict)
    result: dict[str, Any] | None = None
    crash: str | None = None

    @property
    def finished(self) -> bool:
        return self.result is not None or self.crash is not None

    @property
    def dead(self) -> bool:
        return self.process.exitcode is not None


@dataclass
class Outcome:
    """Everything a run produced, before it is turned into a report."""

    cfg: BenchConfig
    driver: Driver
    merged: Merged
    nproc: int
    status: str
    abort_reason: str | None
    setup_s: float
    measured_s: float
    drain_s: float
    live_at_end: int
    rss_kb: dict[str, int | None]
    errors: dict[str, int]
    error_samples: list[str]
    workers: list[dict[str, Any]]
    server_cpu_s: float | None = None
    """The server's CPU seconds (user + system) from the start of the measured phase to the
    end of the drain; None without `--server-pid`."""


class Runner:
    def __init__(self, cfg: BenchConfig, progress: Progress) -> None:
        self.cfg = cfg
        self.progress = progress
        scenario = SCENARIOS[cfg.scenario]
        self.recorder = Recorder(cfg.max_samples, seed=-1)
        self.driver = scenario.driver(cfg, self.recorder)
        self.nproc = max(1, min(cfg.processes, self.driver.units()))
        self.workers: list[WorkerState] = []
        self.interrupted: str | None = None

    # --- plumbing ----------------------------------------------------------------------------

    def _pump(self, reports: Any) -> None:
        """Move every waiting worker message into `self.workers`."""
        while True:
            try:
                kind, index, payload = reports.get_nowait()
            except queue.Empty:
                break
            except (EOFError, OSError):
                break
            state = self.workers[index]
            if kind == "ready":
                state.ready = payload
            elif kind == "progress":
                state.progress = payload
            elif kind == "result":
                state.result = payload
            elif kind == "crash":
                state.crash = payload
        for state in self.workers:
            if state.dead and not state.finished:
                state.crash = f"worker exited with code {state.process.exitcode}"

    def totals(self) -> tuple[dict[str, int], int]:
        """Counters of the parent plus the latest of every worker; live connections."""
        counters = dict(self.recorder.counters)
        live = 0
        for state in self.workers:
            for k, v in state.progress.get("counters", {}).items():
                counters[k] = counters.get(k, 0) + v
            live += state.progress.get("live", 0)
        return counters, live

    async def _tick(self, reports: Any) -> None:
        await asyncio.sleep(TICK_S)
        self._pump(reports)

    # --- the run -----------------------------------------------------------------------------

    async def run(self) -> Outcome:
        cfg = self.cfg
        loop = asyncio.get_running_loop()
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(signal.SIGINT, self._interrupt)
        ctx = multiprocessing.get_context("spawn")
        reports = ctx.Queue()
        commands = [ctx.Queue() for _ in range(self.nproc)]
        plans = self.driver.plans(self.nproc)
        rss: dict[str, int | None] = {"start": read_rss_kb(cfg.server_pid)}
        for i in range(self.nproc):
            process = ctx.Process(
                target=worker_main,
                args=(cfg, i, self.nproc, plans[i], commands[i], reports),
                name=f"bench-worker-{i}",
                daemon=True,
            )
            self.workers.append(WorkerState(process))
        begin = now_ns()
        pctx: ParentContext | None = None
        setup_s = measured_s = drain_s = 0.0
        cpu_start = cpu_end = None
        live_at_end = 0
        abort_reason: str | None = None
        try:
            for state in self.workers:
                state.process.start()
            abort_reason = await self._setup(reports)
            setup_s = (now_ns() - begin) / NS_PER_S
            rss["ready"] = read_rss_kb(cfg.server_pid)
            if abort_reason is None:
                t0 = now_ns() + int(START_DELAY_S * NS_PER_S)
                end = t0 + int(cfg.duration * NS_PER_S)
                self.recorder.start(t0)
                readies = [s.ready or {} for s in self.workers]
                payload = self.driver.start_payload(readies)
                cpu_start = read_cpu_s(cfg.server_pid)
                for q in commands:
                    q.put(("start", t0, payload))
                pctx = ParentContext(cfg, self.recorder, t0, end)
                measured_end = await self._measure(pctx, reports)
                measured_s = max(0.0, (measured_end - t0) / NS_PER_S)
                abort_reason = pctx.abort_reason
                drain_begin = now_ns()
                if abort_reason is None:
                    await self._drain(reports)
                drain_s = (now_ns() - drain_begin) / NS_PER_S
                cpu_end = read_cpu_s(cfg.server_pid)
            self._pump(reports)
            live_at_end = self.totals()[1]
            rss["end"] = read_rss_kb(cfg.server_pid)
        finally:
            for q in commands:
                with contextlib.suppress(Exception):
                    q.put(("stop",))
            await self._collect(reports)
            self._reap()
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.remove_signal_handler(signal.SIGINT)
            self.progress.finish()
        if abort_reason is None and self.interrupted:
            abort_reason = self.interrupted
        outcome = self._outcome(pctx, abort_reason, setup_s, measured_s, drain_s, live_at_end, rss)
        if cpu_start is not None and cpu_end is not None:
            outcome.server_cpu_s = cpu_end - cpu_start
        return outcome

    def _interrupt(self) -> None:
        self.interrupted = "interrupted (Ctrl-C)"

    async def _setup(self, reports: Any) -> str | None:
        """Wait for every worker's ready report; a reason to abort, or None."""
        limit = self.cfg.setup_timeout + SPAWN_ALLOWANCE_S
        begin = now_ns()
        while True:
            await self._tick(reports)
            elapsed = (now_ns() - begin) / NS_PER_S
            if all(s.ready is not None or s.finished for s in self.workers):
                break
            if self.interrupted:
                return self.interrupted
            if elapsed > limit:
                return f"workers did not finish setup within {limit:g} s"
            counters, live = self.totals()
            ready = sum(1 for s in self.workers if s.ready is not None)
            failed = counters.get("connect_failed", 0)
            text = f"ready {ready}/{self.nproc}  conns {live}  failed {failed}"
            self.progress.update("setup", elapsed, limit, text)
        self._pump(reports)
        crashed = [s.crash for s in self.workers if s.crash]
        if len(crashed) == len(self.workers):
            return f"every worker failed: {crashed[0]}"
        readies = [s.ready or {} for s in self.workers]
        live = sum(int(r.get("live", 0)) for r in readies)
        problem = self.driver.setup_problem(readies, live)
        if problem is not None:
            return f"{problem} at {self.cfg.host}:{self.cfg.port}{self._first_error()}"
        return None

    def _first_error(self) -> str:
        for state in self.workers:
            samples = (state.ready or {}).get("error_samples") or state.progress.get(
                "error_samples"
            )
            if samples:
                return f" ({samples[0]})"
        return " (is the server running? see the errors in the result file)"

    async def _measure(self, pctx: ParentContext, reports: Any) -> int:
        """Run the driver until the end of the measured phase; returns when it ended."""
        drive = asyncio.create_task(self.driver.drive(pctx))
        peak_live = 0
        duration = self.cfg.duration
        while True:
            await self._tick(reports)
            now = now_ns()
            counters, live = self.totals()
            peak_live = max(peak_live, live)
            if self.interrupted:
                pctx.abort(self.interrupted)
            elif counters.get("server_gone"):
                pctx.abort("the server stopped answering (a worker gave up, see errors)")
            elif self.driver.uses_connections and peak_live > 0 and live == 0:
                if counters.get("disconnects", 0) > 0:
                    pctx.abort("every WebSocket connection was closed (is the server gone?)")
            elif all(s.finished for s in self.workers):
                pctx.abort("every worker stopped early")
            elapsed = max(0.0, (now - pctx.t0_ns) / NS_PER_S)
            self.progress.update(
                self.cfg.scenario,
                min(elapsed, duration),
                duration,
                self.driver.status(counters, live),
            )
            if pctx.aborted.is_set() or now >= pctx.end_ns:
                break
        ended = min(now_ns(), pctx.end_ns)
        try:
            await asyncio.wait_for(drive, 15.0)
        except (TimeoutError, asyncio.CancelledError):
            pass
        except Exception as exc:
            pctx.errors.add("driver", exc)
            pctx.abort(f"the driver failed: {exc}")
        return ended

    async def _drain(self, reports: Any) -> None:
        """Wait up to --drain seconds for outstanding deliveries."""
        limit = self.cfg.drain
        begin = now_ns()
        while True:
            counters, _live = self.totals()
            expected = self.driver.expected_of(counters)
            delivered = counters.get("delivered", 0)
            elapsed = (now_ns() - begin) / NS_PER_S
            if expected is None or delivered >= expected or elapsed >= limit or self.interrupted:
                return
            self.progress.update("drain", elapsed, limit, f"recv {delivered}/{expected}")
            await self._tick(reports)

    async def _collect(self, reports: Any) -> None:
        """Wait for every worker's final result, bounded in time."""
        begin = now_ns()
        while not all(s.finished for s in self.workers):
            if (now_ns() - begin) / NS_PER_S > RESULT_TIMEOUT_S:
                break
            await asyncio.sleep(0.05)
            self._pump(reports)
            done = sum(1 for s in self.workers if s.finished)
            self.progress.update(
                "stop",
                (now_ns() - begin) / NS_PER_S,
                RESULT_TIMEOUT_S,
                f"results {done}/{len(self.workers)}",
            )

    def _reap(self) -> None:
        """Join the workers; terminate, then kill, any still running."""
        for state in self.workers:
            process = state.process
            if process.pid is None:
                continue
            process.join(timeout=5.0)
            if process.is_alive():
                process.terminate()
                process.join(timeout=3.0)
            if process.is_alive():
                process.kill()
                process.join(timeout=3.0)

    def _outcome(
        self,
        pctx: ParentContext | None,
        abort_reason: str | None,
        setup_s: float,
        measured_s: float,
        drain_s: float,
        live_at_end: int,
        rss: dict[str, int | None],
    ) -> Outcome:
        exports = [self.recorder.export()]
        errors: dict[str, int] = dict(pctx.errors.counts) if pctx else {}
        samples: list[str] = list(pctx.errors.samples) if pctx else []
        workers: list[dict[str, Any]] = []
        for i, state in enumerate(self.workers):
            if state.result is not None:
                exports.append(state.result["recorder"])
                for k, v in state.result.get("errors", {}).items():
                    errors[k] = errors.get(k, 0) + v
                samples.extend(state.result.get("error_samples", [])[:5])
            elif state.progress:  # counters only: the samples were lost with the worker
                exports.append({"counters": state.progress.get("counters", {})})
            if state.crash:
                errors["worker_crash"] = errors.get("worker_crash", 0) + 1
                samples.append(f"worker {i}: {state.crash}"[-500:])
            workers.append(
                {
                    "index": i,
                    "pid": state.process.pid,
                    "ready": state.ready,
                    "exitcode": state.process.exitcode,
                    "result": state.result is not None,
                    "crash": state.crash,
                }
            )
        self.driver.extras = [(s.result or {}).get("extra", {}) for s in self.workers]
        status = "ok" if abort_reason is None else "aborted"
        return Outcome(
            cfg=self.cfg,
            driver=self.driver,
            merged=merge(exports),
            nproc=self.nproc,
            status=status,
            abort_reason=abort_reason,
            setup_s=setup_s,
            measured_s=measured_s,
            drain_s=drain_s,
            live_at_end=live_at_end,
            rss_kb=rss,
            errors=errors,
            error_samples=samples[:40],
            workers=workers,
        )
