"""`fanout`: N subscribers on one channel; the parent triggers over HTTP at --rate (0 = max)
from --http-connections keep-alive connections. Every accepted trigger is expected N times.
"""

from __future__ import annotations

from typing import Any

from bench import protocol
from bench.client import PusherClient
from bench.metrics import Merged
from bench.protocol import Frame
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
            self.sender.close()

    def status(self, counters: dict[str, int], live: int) -> str:
        return trigger_status(counters, live)

    def summary(self, merged: Merged, measured_s: float, drain_s: float) -> dict[str, Any]:
        c = merged.counters
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
        }
