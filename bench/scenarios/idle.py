"""`idle`: open --connections connections (at --rate connects/s in total, 0 = as fast as
--connect-concurrency allows) once the measured phase starts, then hold them open, silent,
until it ends. Reports the connect rate, connect latency, failures, and with --server-pid the
server's resident memory per open connection.
"""

from __future__ import annotations

from typing import Any

from bench.client import PusherClient
from bench.clock import NS_PER_S, now_ns
from bench.metrics import Merged
from bench.scenarios.base import Driver, Role
from bench.stats import rate


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
        return {"connect_phase_s": self.connect_phase_s}


class IdleDriver(Driver):
    primary_latency = "connect"

    def setup_problem(self, readies: list[dict[str, Any]], live: int) -> str | None:
        return None  # connections are opened during the measured phase

    def status(self, counters: dict[str, int], live: int) -> str:
        return (
            f"open {live}/{self.cfg.connections}  failed {counters.get('connect_failed', 0)}  "
            f"dropped {counters.get('disconnects', 0)}"
        )

    def summary(self, merged: Merged, measured_s: float, drain_s: float) -> dict[str, Any]:
        c = merged.counters
        phase = max((e.get("connect_phase_s", 0.0) for e in self.extras), default=0.0)
        return {
            "attempted": self.cfg.connections,
            "connected": c.get("connected", 0),
            "failed": c.get("connect_failed", 0),
            "dropped_while_idle": c.get("disconnects", 0),
            "connect_phase_s": phase,
            "connect_rate": rate(c.get("connected", 0), phase),
        }
