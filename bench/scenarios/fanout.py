"""`fanout`: N subscribers on one channel; the parent triggers over HTTP at --rate (0 = max)
from --http-connections keep-alive connections. Every accepted trigger is expected N times.

With --server-pid, the server's CPU time over the measured phase is reported too, and per
message expected in it (`server_cpu_us_per_message`): at a fixed rate that the server keeps
up with (ratio 1.0), this is what one delivered message costs the server, independent of how
fast the load generator reads, so two server configurations compare by it even where the
generator is the bottleneck of delivered msg/s.
"""

from __future__ import annotations

from typing import Any

from bench import protocol
from bench.client import PusherClient
from bench.metrics import Merged
from bench.protocol import Frame
from bench.rss import read_cpu_s
from bench.scenarios.base import (
    Driver,
    ParentContext,
    Role,
    TriggerSender,
    count_marker,
    drive_triggers,
    ready_sum,
    trigger_status,
)
from bench.stats import rate, ratio


def channel_name(run_id: str) -> str:
    return f"bench-fanout-{run_id}"


class FanoutRole(Role):
    async def setup(self) -> dict[str, Any]:
        ctx = self.ctx
        channel = channel_name(ctx.cfg.run_id)
        recorder, run_id = ctx.recorder, ctx.cfg.run_id

        def on_frame(_client: PusherClient, frame: Frame, now: int) -> None:
            count_marker(recorder, run_id, frame, now, protocol.TRIGGER_EVENT)

        async def prepare(_i: int, client: PusherClient) -> None:
            await client.subscribe(channel, timeout=ctx.cfg.connect_timeout)

        self.clients = await ctx.open_clients(ctx.plan["count"], prepare, on_frame)
        return {"subscribed": len(self.clients)}


class FanoutDriver(Driver):
    def start_payload(self, readies: list[dict[str, Any]]) -> Any:
        self.readies = readies
        self.subscribers = ready_sum(readies, "subscribed")
        return None

    async def drive(self, pctx: ParentContext) -> None:
        cfg = self.cfg
        self.sender = TriggerSender(cfg, self.recorder, pctx.errors, cfg.http_connections)
        channels = [channel_name(cfg.run_id)]
        self.cpu_start = read_cpu_s(cfg.server_pid)
        try:
            await drive_triggers(
                pctx,
                self.sender,
                cfg.http_connections,
                cfg.rate,
                lambda _seq: channels,
                lambda _seq, _channels, now: self.recorder.count("expected", now, self.subscribers),
            )
        finally:
            self.cpu_end = read_cpu_s(cfg.server_pid)
            self.sender.close()

    def status(self, counters: dict[str, int], live: int) -> str:
        return trigger_status(counters, live)

    def summary(self, merged: Merged, measured_s: float, drain_s: float) -> dict[str, Any]:
        c = merged.counters
        cpu_start, cpu_end = getattr(self, "cpu_start", None), getattr(self, "cpu_end", None)
        cpu_s = cpu_end - cpu_start if cpu_start is not None and cpu_end is not None else None
        expected = c.get("expected", 0)
        return {
            "subscribers": getattr(self, "subscribers", 0),
            "subscribe_failed": c.get("connect_failed", 0),
            "triggers_sent": c.get("sent", 0),
            "triggers_accepted": c.get("accepted", 0),
            "trigger_rate": rate(c.get("accepted", 0), measured_s),
            "expected": c.get("expected", 0),
            "delivered": c.get("delivered", 0),
            "delivery_rate": rate(c.get("delivered", 0), measured_s + drain_s),
            "ratio": ratio(c.get("delivered", 0), c.get("expected", 0)),
            "disconnects": c.get("disconnects", 0),
            "server_cpu_s": round(cpu_s, 3) if cpu_s is not None else None,
            "server_cpu_pct": round(100 * cpu_s / measured_s, 1)
            if cpu_s is not None and measured_s > 0
            else None,
            "server_cpu_us_per_message": round(1e6 * cpu_s / expected, 3)
            if cpu_s is not None and expected > 0
            else None,
        }
