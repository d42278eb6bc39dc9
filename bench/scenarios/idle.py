"""`idle`: open --connections connections (at --rate connects/s in total, 0 = as fast as
--connect-concurrency allows) once the measured phase starts, then hold them open, silent,
until it ends. Reports the connect phase's length and rate, connect latency, failures, the
connections per source address (--sources), and with --server-pid the server's resident
memory per open connection (in the report's `server` section) and its CPU use while idle.

Idle CPU is the server's user + system time (summed over its process tree) between one
second after the last worker finished connecting and the end of the measured phase, as a
percentage of one core; it is None when that window is shorter than one second.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from bench.client import PusherClient
from bench.clock import NS_PER_S, now_ns
from bench.metrics import Merged
from bench.rss import read_cpu_s
from bench.scenarios.base import Driver, ParentContext, Role
from bench.stats import rate

CPU_SAMPLE_S = 0.25
SETTLE_S = 1.0
MIN_IDLE_WINDOW_S = 1.0


class IdleRole(Role):
    connect_phase_s = 0.0

    async def run(self) -> None:
        ctx = self.ctx
        t0 = ctx.t0_ns
        end = t0 + int(ctx.cfg.duration * NS_PER_S)

        async def prepare(_i: int, _client: PusherClient) -> None:
            return None

        self.clients = await ctx.open_clients(
            ctx.plan["count"],
            prepare,
            deadline_ns=end,
            rate=ctx.cfg.rate / ctx.nproc,
            latency_name="connect",
        )
        self.connect_phase_s = (now_ns() - t0) / NS_PER_S
        await ctx.stop.wait()

    def extra(self) -> dict[str, Any]:
        return {"connect_phase_s": self.connect_phase_s, "per_source": self.ctx.per_source}


class IdleDriver(Driver):
    primary_latency = "connect"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.cpu_samples: list[tuple[int, float]] = []
        """(time in ns since t0, server CPU seconds) every CPU_SAMPLE_S while measuring."""

    def setup_problem(self, readies: list[dict[str, Any]], live: int) -> str | None:
        return None  # connections are opened during the measured phase

    async def drive(self, pctx: ParentContext) -> None:
        pid = self.cfg.server_pid
        while pid is not None and not pctx.aborted.is_set():
            now = now_ns()
            if now >= pctx.end_ns:
                break
            cpu = read_cpu_s(pid)
            if cpu is not None:
                self.cpu_samples.append((now - pctx.t0_ns, cpu))
            with contextlib.suppress(TimeoutError):
                wait = min(CPU_SAMPLE_S, max(0.0, (pctx.end_ns - now) / NS_PER_S))
                await asyncio.wait_for(pctx.aborted.wait(), wait)
        cpu = read_cpu_s(pid)
        if cpu is not None:
            self.cpu_samples.append((min(now_ns(), pctx.end_ns) - pctx.t0_ns, cpu))

    def status(self, counters: dict[str, int], live: int) -> str:
        return (
            f"open {live}/{self.cfg.connections}  failed {counters.get('connect_failed', 0)}  "
            f"dropped {counters.get('disconnects', 0)}"
        )

    def summary(self, merged: Merged, measured_s: float, drain_s: float) -> dict[str, Any]:
        c = merged.counters
        phase = max((e.get("connect_phase_s", 0.0) for e in self.extras), default=0.0)
        per_source: dict[str, int] = {}
        for extra in self.extras:
            for source, count in extra.get("per_source", {}).items():
                per_source[source] = per_source.get(source, 0) + count
        return {
            "attempted": self.cfg.connections,
            "connected": c.get("connected", 0),
            "failed": c.get("connect_failed", 0),
            "dropped_while_idle": c.get("disconnects", 0),
            "connect_phase_s": phase,
            "connect_rate": rate(c.get("connected", 0), phase),
            "processes": len(self.extras),
            "per_source": dict(sorted(per_source.items())),
            "idle_cpu_pct": idle_cpu_pct(self.cpu_samples, phase + SETTLE_S),
        }


def idle_cpu_pct(samples: list[tuple[int, float]], from_s: float) -> float | None:
    """CPU use in % of one core between `from_s` seconds after t0 and the last sample."""
    window = [(t, cpu) for t, cpu in samples if t >= from_s * NS_PER_S]
    if len(window) < 2:
        return None
    span_s = (window[-1][0] - window[0][0]) / NS_PER_S
    if span_s < MIN_IDLE_WINDOW_S:
        return None
    return round(100.0 * (window[-1][1] - window[0][1]) / span_s, 2)
