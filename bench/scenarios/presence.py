"""`presence`: --connections churners join and leave --presence-channels presence channels
(--rate joins/s in total, each staying --hold seconds) while --watchers members per channel
count `pusher_internal:member_added` / `member_removed`.

Latencies: `join` (subscribe sent to `subscription_succeeded`, in the churner's process) and
`member_added` (join sent to the watcher seeing it: the churner puts its send time in
`user_info`). Every successful join is expected once at each watcher of its channel as
member_added, and every leave once as member_removed.

Churners begin joins only during the measured phase, judged by the clock (a churner behind
its schedule joins at once, whatever the schedule says): `join_rate` is the joins of the
measured phase over its length. A join in flight at its end still completes (and counts)
in the drain: at most one per churner.
"""

from __future__ import annotations

import asyncio
from typing import Any

from bench import protocol, signing
from bench.client import PusherClient
from bench.clock import NS_PER_S, now_ns
from bench.metrics import Merged
from bench.protocol import Frame
from bench.scenarios.base import Driver, Role, split
from bench.stats import rate, ratio

MAX_MEMBERS = 100
"""Hosted Pusher's (and pyserver's default) limit of members per presence channel."""


def channel_name(run_id: str, index: int) -> str:
    return f"presence-bench-{run_id}-{index}"


def churner_user(run_id: str, churner: int) -> str:
    return f"churn-{run_id}-{churner}"


class PresenceRole(Role):
    """Watchers and churners; plan: `watchers` [(channel, k)], `churners` [global index]."""

    async def setup(self) -> dict[str, Any]:
        ctx = self.ctx
        cfg = ctx.cfg
        run_id, rec = cfg.run_id, ctx.recorder
        watcher_slots: list[tuple[int, int]] = ctx.plan["watchers"]
        churner_ids: list[int] = ctx.plan["churners"]
        prefix = f"churn-{run_id}-"

        def on_watcher_frame(_client: PusherClient, frame: Frame, now: int) -> None:
            if frame.event == "pusher_internal:member_added":
                user = protocol.presence_user_id(frame.data)
                if user is None or not user.startswith(prefix):
                    return
                rec.count("member_added", now)
                rec.count("delivered", now)
                info = protocol.presence_user_info(frame.data)
                if isinstance(info, dict) and isinstance(info.get("t"), int):
                    rec.sample("member_added", now - info["t"], now)
            elif frame.event == "pusher_internal:member_removed":
                user = protocol.presence_user_id(frame.data)
                if user is not None and user.startswith(prefix):
                    rec.count("member_removed", now)
                    rec.count("delivered", now)

        async def prepare_watcher(i: int, client: PusherClient) -> None:
            channel_index, k = watcher_slots[i]
            channel = channel_name(run_id, channel_index)
            data = protocol.dumps({"user_id": f"watch-{run_id}-{channel_index}-{k}"})
            assert client.socket_id is not None
            auth = signing.channel_auth(cfg.key, cfg.secret, client.socket_id, channel, data)
            await client.subscribe(channel, auth, data, timeout=cfg.connect_timeout)
            client.tag = channel_index

        watchers = await ctx.open_clients(len(watcher_slots), prepare_watcher, on_watcher_frame)
        per_channel: dict[int, int] = {}
        for client in watchers:
            per_channel[client.tag] = per_channel.get(client.tag, 0) + 1

        async def prepare_churner(i: int, client: PusherClient) -> None:
            client.tag = churner_ids[i]

        self.churners = await ctx.open_clients(len(churner_ids), prepare_churner)
        self.clients = watchers + self.churners
        return {"watchers": per_channel, "churners": len(self.churners)}

    async def run(self) -> None:
        ctx = self.ctx
        cfg = ctx.cfg
        watchers_on: dict[int, int] = ctx.payload or {}
        total_churners = cfg.connections
        period_ns = int(total_churners * NS_PER_S / cfg.rate)
        hold_ns = min(int(cfg.hold * NS_PER_S), period_ns // 2)
        t0 = ctx.t0_ns
        end = t0 + int(cfg.duration * NS_PER_S)

        async def churn(client: PusherClient) -> None:
            index: int = client.tag
            channel_index = index % cfg.presence_channels
            channel = channel_name(cfg.run_id, channel_index)
            user = churner_user(cfg.run_id, index)
            next_join = t0 + index * period_ns // total_churners
            while next_join + hold_ns < end and client.is_open:
                if await ctx.sleep_until(next_join):
                    return
                begin = now_ns()
                # A churner slower than its schedule joins at once (next_join stays behind
                # the clock), so the schedule alone would let it join on through the drain,
                # until the stop: the clock decides when the measured phase is over.
                if begin + hold_ns >= end:
                    return
                data = protocol.dumps({"user_id": user, "user_info": {"t": begin, "r": cfg.run_id}})
                assert client.socket_id is not None
                auth = signing.channel_auth(cfg.key, cfg.secret, client.socket_id, channel, data)
                ctx.recorder.count("joins_sent", begin)
                try:
                    await client.subscribe(channel, auth, data, timeout=cfg.connect_timeout)
                except Exception as exc:
                    ctx.recorder.count("join_failed", now_ns())
                    ctx.errors.add("join", exc)
                    next_join += period_ns
                    continue
                joined = now_ns()
                ctx.recorder.sample("join", joined - begin, joined)
                ctx.recorder.count("joins", joined)
                ctx.recorder.count("expected", joined, watchers_on.get(channel_index, 0))
                stopped = await ctx.sleep_until(begin + hold_ns)
                try:
                    await client.unsubscribe(channel)
                except Exception as exc:
                    ctx.errors.add("leave", exc)
                    return
                left = now_ns()
                ctx.recorder.count("leaves", left)
                ctx.recorder.count("expected", left, watchers_on.get(channel_index, 0))
                if stopped:
                    return
                next_join += period_ns

        await asyncio.gather(*(churn(c) for c in self.churners))
        await ctx.stop.wait()


class PresenceDriver(Driver):
    primary_latency = "member_added"

    def units(self) -> int:
        return self.cfg.connections

    def plans(self, nproc: int) -> list[dict[str, Any]]:
        cfg = self.cfg
        slots = [(ch, k) for ch in range(cfg.presence_channels) for k in range(cfg.watchers)]
        plans: list[dict[str, Any]] = [{"watchers": [], "churners": []} for _ in range(nproc)]
        for i, slot in enumerate(slots):
            plans[i % nproc]["watchers"].append(slot)
        first = 0
        for w, count in enumerate(split(cfg.connections, nproc)):
            plans[w]["churners"] = list(range(first, first + count))
            first += count
        return plans

    def start_payload(self, readies: list[dict[str, Any]]) -> Any:
        self.readies = readies
        per_channel: dict[int, int] = {}
        for ready in readies:
            for channel, n in ready.get("watchers", {}).items():
                per_channel[int(channel)] = per_channel.get(int(channel), 0) + n
        self.watchers_on = per_channel
        return per_channel

    def status(self, counters: dict[str, int], live: int) -> str:
        return (
            f"conns {live}  joins {counters.get('joins', 0)}  "
            f"events {counters.get('delivered', 0)}/{counters.get('expected', 0)}"
        )

    def summary(self, merged: Merged, measured_s: float, drain_s: float) -> dict[str, Any]:
        c = merged.counters
        return {
            "channels": self.cfg.presence_channels,
            "watchers": sum(getattr(self, "watchers_on", {}).values()),
            "churners": sum(int(r.get("churners", 0)) for r in self.readies),
            "joins": c.get("joins", 0),
            "join_failed": c.get("join_failed", 0),
            "leaves": c.get("leaves", 0),
            "join_rate": rate(c.get("joins", 0), measured_s),
            "member_added": c.get("member_added", 0),
            "member_removed": c.get("member_removed", 0),
            "expected": c.get("expected", 0),
            "delivered": c.get("delivered", 0),
            "ratio": ratio(c.get("delivered", 0), c.get("expected", 0)),
            "disconnects": c.get("disconnects", 0),
        }


def check_members(cfg_connections: int, channels: int, watchers: int) -> str | None:
    """A message when churners plus watchers would exceed a channel's member limit."""
    churners_per_channel = -(-cfg_connections // channels)
    if churners_per_channel + watchers > MAX_MEMBERS:
        return (
            f"{churners_per_channel} churners + {watchers} watchers per presence channel exceed "
            f"the usual limit of {MAX_MEMBERS} members; raise --presence-channels"
        )
    return None
