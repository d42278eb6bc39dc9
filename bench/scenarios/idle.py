"""`idle`: open --connections connections (at --rate connects/s in total, 0 = as fast as
--connect-concurrency allows) once the measured phase starts, then hold them open, silent,
until it ends. Reports the connect phase's length and rate, connect latency, failures, the
connections per source address (--sources), and with --server-pid the server's resident
memory per open connection (in the report's `server` section) and its CPU use while idle.

Idle CPU is the server's user + system time (summed over its process tree) between one
second after the last worker finished connecting and the end of the measured phase, as a
percentage of one core; it is None when that window is shorter than one second.

With --broadcast every connection also subscribes to one public channel
(`bench-idle-<run id>`) before it counts as open, and once the measured phase is over the
parent sends one signed HTTP trigger to that channel. Each worker notes when its last client
read it (on the system-wide monotonic clock, `bench.clock`), so the broadcast
time is the latest of those minus the moment the trigger was sent, whatever the number of
processes; `broadcast_received` counts the clients that read it. The server's RSS is read
once more just before the trigger (`rss_bytes_per_connection`), so the broadcast's own
buffers do not count as memory per idle connection.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from bench import protocol
from bench.client import PusherClient
from bench.clock import NS_PER_S, now_ns
from bench.metrics import Merged
from bench.protocol import Frame
from bench.rss import kb_per_connection, read_cpu_s, read_rss_kb
from bench.scenarios.base import Driver, ParentContext, Role, TriggerSender, count_marker
from bench.stats import rate

CPU_SAMPLE_S = 0.25
SETTLE_S = 1.0
MIN_IDLE_WINDOW_S = 1.0


def channel_name(run_id: str) -> str:
    return f"bench-idle-{run_id}"


class IdleRole(Role):
    connect_phase_s = 0.0
    last_ns: int | None = None

    async def run(self) -> None:
        ctx = self.ctx
        t0 = ctx.t0_ns
        end = t0 + int(ctx.cfg.duration * NS_PER_S)
        broadcast = ctx.cfg.broadcast
        channel = channel_name(ctx.cfg.run_id)
        recorder, run_id = ctx.recorder, ctx.cfg.run_id

        def on_frame(_client: PusherClient, frame: Frame, now: int) -> None:
            if count_marker(recorder, run_id, frame, now, protocol.TRIGGER_EVENT):
                self.last_ns = now

        async def prepare(_i: int, client: PusherClient) -> None:
            if broadcast:
                await client.subscribe(channel, timeout=ctx.cfg.connect_timeout)
                recorder.count("subscribed", now_ns())

        self.clients = await ctx.open_clients(
            ctx.plan["count"],
            prepare,
            on_frame if broadcast else None,
            deadline_ns=end,
            rate=ctx.cfg.rate / ctx.nproc,
            latency_name="connect",
        )
        self.connect_phase_s = (now_ns() - t0) / NS_PER_S
        await ctx.stop.wait()

    def extra(self) -> dict[str, Any]:
        return {
            "connect_phase_s": self.connect_phase_s,
            "per_source": self.ctx.per_source,
            "broadcast_last_ns": self.last_ns,
        }


class IdleDriver(Driver):
    primary_latency = "connect"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.cpu_samples: list[tuple[int, float]] = []
        """(time in ns since t0, server CPU seconds) every CPU_SAMPLE_S while measuring."""
        self.rss_before_kb: int | None = None
        """The server's RSS as the measured phase starts (before any connection)."""
        self.rss_idle_kb: int | None = None
        """Its RSS at the end of the idle window, before the broadcast."""
        self.broadcast_ns: int | None = None
        """When the broadcast trigger was sent; None until it was accepted."""

    def setup_problem(self, readies: list[dict[str, Any]], live: int) -> str | None:
        return None  # connections are opened during the measured phase

    async def drive(self, pctx: ParentContext) -> None:
        pid = self.cfg.server_pid
        self.rss_before_kb = read_rss_kb(pid)
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
        if pid is None:  # the measured phase still lasts --duration
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(pctx.aborted.wait(), max(0, pctx.end_ns - now_ns()) / 1e9)
        self.rss_idle_kb = read_rss_kb(pid)
        if self.cfg.broadcast and not pctx.aborted.is_set():
            await self._broadcast(pctx)

    async def _broadcast(self, pctx: ParentContext) -> None:
        """One trigger to every idle client's channel; drain then waits for all of them."""
        sender = TriggerSender(self.cfg, self.recorder, pctx.errors, 1, latency_name="broadcast")
        try:
            await sender.open_all()
            sent = now_ns()
            if await sender.send(0, 0, [channel_name(self.cfg.run_id)]):
                self.broadcast_ns = sent
        finally:
            sender.close()

    def expected_of(self, counters: dict[str, int]) -> int | None:
        if self.broadcast_ns is None:
            return None
        return counters.get("subscribed", 0) - counters.get("disconnects", 0)

    def status(self, counters: dict[str, int], live: int) -> str:
        text = (
            f"open {live}/{self.cfg.connections}  failed {counters.get('connect_failed', 0)}  "
            f"dropped {counters.get('disconnects', 0)}"
        )
        if self.broadcast_ns is not None:
            text += f"  broadcast recv {counters.get('delivered', 0)}"
        return text

    def summary(self, merged: Merged, measured_s: float, drain_s: float) -> dict[str, Any]:
        c = merged.counters
        phase = max((e.get("connect_phase_s", 0.0) for e in self.extras), default=0.0)
        per_source: dict[str, int] = {}
        for extra in self.extras:
            for source, count in extra.get("per_source", {}).items():
                per_source[source] = per_source.get(source, 0) + count
        open_at_idle = c.get("subscribed" if self.cfg.broadcast else "connected", 0) - c.get(
            "disconnects", 0
        )
        out: dict[str, Any] = {
            "attempted": self.cfg.connections,
            "connected": c.get("connected", 0),
            "failed": c.get("connect_failed", 0),
            "dropped_while_idle": c.get("disconnects", 0),
            "connect_phase_s": phase,
            "connect_rate": rate(c.get("connected", 0), phase),
            "processes": len(self.extras),
            "per_source": dict(sorted(per_source.items())),
            "idle_cpu_pct": idle_cpu_pct(self.cpu_samples, phase + SETTLE_S),
            "rss_bytes_per_connection": rss_per_connection(
                self.rss_before_kb, self.rss_idle_kb, open_at_idle
            ),
        }
        if self.cfg.broadcast:
            out.update(
                subscribed=c.get("subscribed", 0),
                broadcast_received=c.get("delivered", 0),
                broadcast_s=broadcast_s(self.broadcast_ns, self.extras),
            )
        return out


def rss_per_connection(before_kb: int | None, after_kb: int | None, open_: int) -> int | None:
    """Bytes of server RSS per open connection, or None without both readings."""
    kb = kb_per_connection(before_kb, after_kb, open_)
    return None if kb is None else round(kb * 1024)


def broadcast_s(sent_ns: int | None, extras: list[dict[str, Any]]) -> float | None:
    """Seconds from sending the trigger to the last client (over all workers) reading it."""
    lasts: list[int] = [
        e["broadcast_last_ns"] for e in extras if e.get("broadcast_last_ns") is not None
    ]
    if sent_ns is None or not lasts:
        return None
    return round((max(lasts) - sent_ns) / NS_PER_S, 4)


def idle_cpu_pct(samples: list[tuple[int, float]], from_s: float) -> float | None:
    """CPU use in % of one core between `from_s` seconds after t0 and the last sample."""
    window = [(t, cpu) for t, cpu in samples if t >= from_s * NS_PER_S]
    if len(window) < 2:
        return None
    span_s = (window[-1][0] - window[0][0]) / NS_PER_S
    if span_s < MIN_IDLE_WINDOW_S:
        return None
    return round(100.0 * (window[-1][1] - window[0][1]) / span_s, 2)
