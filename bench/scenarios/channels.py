"""`channels`: --connections channels with one subscriber each; the parent triggers at --rate
(0 = max), each trigger going to --channels-per-event consecutive channels, round robin.
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


def channel_name(run_id: str, index: int) -> str:
    return f"bench-ch-{run_id}-{index}"


class ChannelsRole(Role):
    async def setup(self) -> dict[str, Any]:
        ctx = self.ctx
        first, step = ctx.plan["first"], ctx.plan["step"]
        mine = list(range(first, ctx.cfg.connections, step))
        recorder, run_id = ctx.recorder, ctx.cfg.run_id
        subscribed: set[int] = set()

        def on_frame(_client: PusherClient, frame: Frame, now: int) -> None:
            count_marker(recorder, run_id, frame, now, protocol.TRIGGER_EVENT)

        async def prepare(i: int, client: PusherClient) -> None:
            index = mine[i]
            await client.subscribe(channel_name(run_id, index), timeout=ctx.cfg.connect_timeout)
            subscribed.add(index)

        self.clients = await ctx.open_clients(len(mine), prepare, on_frame)
        missing = sorted(set(mine) - subscribed)
        return {"subscribed": len(subscribed), "missing": missing}


class ChannelsDriver(Driver):
    def plans(self, nproc: int) -> list[dict[str, Any]]:
        return [{"first": i, "step": nproc} for i in range(nproc)]

    def start_payload(self, readies: list[dict[str, Any]]) -> Any:
        self.readies = readies
        self.subscribers = ready_sum(readies, "subscribed")
        self.missing: set[int] = set()
        for worker, ready in enumerate(readies):
            if "missing" in ready:
                self.missing.update(ready["missing"])
            else:  # that worker never reported: none of its channels has a subscriber
                self.missing.update(range(worker, self.cfg.connections, len(readies)))
        return None

    def channels_for(self, seq: int) -> list[int]:
        n, k = self.cfg.connections, min(self.cfg.channels_per_event, self.cfg.connections)
        first = (seq * k) % n
        return [(first + j) % n for j in range(k)]

    async def drive(self, pctx: ParentContext) -> None:
        cfg = self.cfg
        self.sender = TriggerSender(cfg, self.recorder, pctx.errors, cfg.http_connections)
        names = [channel_name(cfg.run_id, i) for i in range(cfg.connections)]
        index_of = {name: i for i, name in enumerate(names)}

        def on_accepted(_seq: int, channels: list[str], now: int) -> None:
            live = sum(1 for c in channels if index_of[c] not in self.missing)
            self.recorder.count("expected", now, live)

        try:
            await drive_triggers(
                pctx,
                self.sender,
                cfg.http_connections,
                cfg.rate,
                lambda seq: [names[i] for i in self.channels_for(seq)],
                on_accepted,
            )
        finally:
            self.sender.close()

    def status(self, counters: dict[str, int], live: int) -> str:
        return trigger_status(counters, live)

    def summary(self, merged: Merged, measured_s: float, drain_s: float) -> dict[str, Any]:
        c = merged.counters
        return {
            "channels": self.cfg.connections,
            "subscribed": getattr(self, "subscribers", 0),
            "channels_per_event": self.cfg.channels_per_event,
            "triggers_sent": c.get("sent", 0),
            "triggers_accepted": c.get("accepted", 0),
            "trigger_rate": rate(c.get("accepted", 0), measured_s),
            "expected": c.get("expected", 0),
            "delivered": c.get("delivered", 0),
            "delivery_rate": rate(c.get("delivered", 0), measured_s + drain_s),
            "ratio": ratio(c.get("delivered", 0), c.get("expected", 0)),
            "disconnects": c.get("disconnects", 0),
        }
