"""`http`: the HTTP API's trigger rate. --connections keep-alive connections, split across
worker processes, each sending one signed trigger at a time to a channel nobody listens on,
at --rate requests/s in total (0 = as fast as the server answers).
"""

from __future__ import annotations

from typing import Any

from bench.clock import NS_PER_S
from bench.metrics import Merged
from bench.scenarios.base import Driver, Role, TriggerSender, paced
from bench.stats import rate


def channel_name(run_id: str) -> str:
    return f"bench-http-{run_id}"


class HTTPRole(Role):
    async def setup(self) -> dict[str, Any]:
        ctx = self.ctx
        lanes = ctx.plan["count"]
        self.sender = TriggerSender(ctx.cfg, ctx.recorder, ctx.errors, lanes, "request")
        opened = 0
        for trigger in self.sender.triggers:
            try:
                await trigger.conn.open()
                opened += 1
            except (OSError, TimeoutError) as exc:
                ctx.errors.add("connect", exc)
                ctx.recorder.count("connect_failed")
        return {"connections": opened}

    async def run(self) -> None:
        ctx = self.ctx
        cfg = ctx.cfg
        channels = [channel_name(cfg.run_id)]
        t0 = ctx.t0_ns
        end = t0 + int(cfg.duration * NS_PER_S)

        async def step(lane: int, seq: int) -> None:
            await self.sender.send(lane, seq, channels)
            problem = self.sender.problem()
            if problem is not None and not ctx.stop.is_set():
                ctx.errors.add("server_gone", problem)
                ctx.recorder.count("server_gone")
                ctx.stop.set()

        await paced(ctx.plan["count"], cfg.rate / ctx.nproc, t0, end, ctx.stop, step)
        await ctx.stop.wait()

    async def close(self) -> None:
        self.sender.close()


class HTTPDriver(Driver):
    primary_latency = "request"
    uses_connections = False

    def setup_problem(self, readies: list[dict[str, Any]], live: int) -> str | None:
        if sum(int(r.get("connections", 0)) for r in readies) == 0:
            return "no HTTP connection could be opened"
        return None

    def status(self, counters: dict[str, int], live: int) -> str:
        return (
            f"sent {counters.get('sent', 0)}  ok {counters.get('accepted', 0)}  "
            f"errors {counters.get('http_errors', 0) + counters.get('rejected', 0)}"
        )

    def summary(self, merged: Merged, measured_s: float, drain_s: float) -> dict[str, Any]:
        c = merged.counters
        status_counts = {
            k[5:]: v for k, v in c.items() if k.startswith("http_") and k[5:].isdigit()
        }
        return {
            "connections": self.cfg.connections,
            "requests_sent": c.get("sent", 0),
            "requests_ok": c.get("accepted", 0),
            "requests_rejected": c.get("rejected", 0),
            "transport_errors": c.get("http_errors", 0),
            "request_rate": rate(c.get("accepted", 0), measured_s),
            "error_statuses": status_counts,
        }
