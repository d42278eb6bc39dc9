"""`catchup`: --connections subscribers leave a history channel, --catchup-events events are
published while they are away, and they all come back at once and catch up; meanwhile
--watchers other clients measure how long the server takes to answer them.

This needs a server that keeps history on `bench-catchup-*` and implements the resume token
of docs/history.md (pyserver with bench/servers/pyserver-history.toml): each subscriber reads
`pusher_internal:resume_token` after connecting, and after reconnecting sends it back with
`pusher:resume` before it subscribes again, as the documented snippet does in a browser.

Timeline (seconds after the common start t0):
- setup: watchers connect; subscribers connect, subscribe, keep their token, then close
  (a clean WebSocket close: the connection ended, not `pusher:unsubscribe`);
- [0, quiet): nothing but the watchers' probes (`probe_quiet`);
- [quiet, quiet + away): the parent publishes the events as fast as the server takes them
  (`probe_publish`);
- from quiet + away: every subscriber reconnects (at --rate per second, 0 = as fast as
  --connect-concurrency allows), resumes and re-subscribes; the server replays what each
  missed (`probe_catchup` until the end of the run).

A watcher's probe is a `pusher:ping` answered by `pusher:pong`, one in flight at a time,
every --probe-interval ms: its round trip is the time the server's loop takes to get to a
client that is not catching up. With --processes >= 2 the watchers run in their own process,
so the load generator's work reading the replay does not delay them; with one process the
result says `probe_shares_process`.

The parent publishes the events one after the other on one keep-alive connection (each
answered before the next is sent), so their numbers are their publish order. Per subscriber
they must arrive once each and in that order: counters `duplicates`, `out_of_order` (an
event arrived after one published later), `missing` (never arrived), `recovery_failed`
(`pusher:recovery_failed` frames) and `caught_up` (subscribers that got all of them), and
the `catchup` latency: from the common return time to the subscriber's last event. With
--server-pid, the server's CPU time from the return to the end of the measured phase
(reconnects, resumes and replays), also per replayed event.
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
from bench.rss import read_cpu_s
from bench.scenarios.base import (
    Driver,
    ParentContext,
    Role,
    TriggerSender,
    ready_sum,
    split,
)
from bench.stats import rate, ratio

QUIET_S = 1.0
"""Seconds of probes before anything is published: the baseline."""
TOKEN_WAIT_S = 5.0
"""How long setup waits for the resume tokens after the subscriptions succeeded."""
RESUME_EVENT = "pusher:resume"
TOKEN_EVENT = "pusher_internal:resume_token"
RECOVERY_FAILED = "pusher:recovery_failed"


def channel_name(run_id: str) -> str:
    return f"bench-catchup-{run_id}"


def resume_frame(token: str) -> str:
    """What the documented snippet sends: `pusher.send_event('pusher:resume', {token})`."""
    return protocol.dumps({"event": RESUME_EVENT, "data": {"token": token}})


def resume_token(frame: Frame) -> str | None:
    """The token of a `pusher_internal:resume_token` frame (None for any other frame)."""
    if frame.event != TOKEN_EVENT:
        return None
    data = protocol.decode_data(frame.data)
    token = data.get("token") if isinstance(data, dict) else None
    return token if isinstance(token, str) and token else None


class Tracker:
    """What one returning subscriber has received: events are numbered 0..expected-1 in
    publish order (the parent publishes them one after the other on one connection)."""

    __slots__ = ("done", "expected", "last_seq", "received", "seen")

    def __init__(self, expected: int) -> None:
        self.expected = expected
        self.seen = bytearray(expected)
        self.last_seq = -1
        self.received = 0
        self.done = False

    def receive(self, seq: int) -> str:
        """Account for event `seq`: "ok", "duplicate" (received before), "out_of_order"
        (new, but published before one received earlier) or "unknown" (not one of ours)."""
        if not 0 <= seq < self.expected:
            return "unknown"
        if self.seen[seq]:
            return "duplicate"
        self.seen[seq] = 1
        self.received += 1
        if seq < self.last_seq:
            return "out_of_order"
        self.last_seq = seq
        return "ok"

    @property
    def missing(self) -> int:
        return self.expected - self.received


def probe_phase(offset_ns: int, quiet_s: float, return_s: float) -> str:
    """The latency stream of a probe answered `offset_ns` after t0."""
    if offset_ns < quiet_s * NS_PER_S:
        return "probe_quiet"
    if offset_ns < return_s * NS_PER_S:
        return "probe_publish"
    return "probe_catchup"


class CatchupRole(Role):
    """Plan: `watchers` (probe clients) and `count` (returning subscribers)."""

    async def setup(self) -> dict[str, Any]:
        ctx = self.ctx
        cfg = ctx.cfg
        channel = channel_name(cfg.run_id)
        self.watchers: list[PusherClient] = []
        self.tokens: list[str] = []
        self.trackers: dict[int, Tracker] = {}
        self.pings: dict[int, int] = {}

        async def nothing(_i: int, _client: PusherClient) -> None:
            return None

        self.watchers = await ctx.open_clients(
            int(ctx.plan.get("watchers", 0)), nothing, self._on_watcher_frame
        )
        self.clients = list(self.watchers)

        tokens: dict[int, str] = {}

        def on_first_frame(client: PusherClient, frame: Frame, _now: int) -> None:
            token = resume_token(frame)
            if token is not None:
                tokens[id(client)] = token

        async def subscribe(_i: int, client: PusherClient) -> None:
            await client.subscribe(channel, timeout=cfg.connect_timeout)

        leaving = await ctx.open_clients(int(ctx.plan["count"]), subscribe, on_first_frame)
        deadline = now_ns() + int(TOKEN_WAIT_S * NS_PER_S)
        while now_ns() < deadline and any(id(c) not in tokens for c in leaving):
            await asyncio.sleep(0.02)
        self.tokens = [tokens[id(c)] for c in leaving if id(c) in tokens]
        # Leave: a clean close of every connection, which is no longer counted as live (a
        # dropped subscriber is the point here, not a failure).
        for client in leaving:
            client.counted = False
            ctx.live -= 1
        await asyncio.gather(*(c.close(timeout=5.0) for c in leaving))
        return {
            "subscribed": len(leaving),
            "tokens": len(self.tokens),
            "watchers": len(self.watchers),
        }

    def _on_watcher_frame(self, client: PusherClient, frame: Frame, now: int) -> None:
        if frame.event != "pusher:pong":
            return
        sent = self.pings.pop(id(client), None)
        if sent is None or self.ctx.recorder.t0_ns is None:
            return
        payload = self.ctx.payload or {}
        phase = probe_phase(
            now - self.ctx.recorder.t0_ns, payload.get("quiet_s", 0), payload.get("return_s", 0)
        )
        self.ctx.recorder.sample(phase, now - sent, now)
        self.ctx.recorder.count("probes", now)

    def _on_returning_frame(self, client: PusherClient, frame: Frame, now: int) -> None:
        tracker = self.trackers.get(id(client))
        if tracker is None:
            return
        rec = self.ctx.recorder
        if frame.event == RECOVERY_FAILED:
            rec.count("recovery_failed", now)
            return
        if frame.event != protocol.TRIGGER_EVENT:
            return
        marker = protocol.parse_marker(frame.data)
        if marker is None or marker.run != self.ctx.cfg.run_id:
            return
        verdict = tracker.receive(marker.seq)
        if verdict == "duplicate":
            rec.count("duplicates", now)
            return
        if verdict == "unknown":
            return
        if verdict == "out_of_order":
            rec.count("out_of_order", now)
        rec.count("delivered", now)
        if not tracker.done and tracker.received >= tracker.expected:
            tracker.done = True
            rec.count("caught_up", now)
            rec.sample("catchup", now - self.return_ns, now)

    async def run(self) -> None:
        ctx = self.ctx
        cfg = ctx.cfg
        payload = ctx.payload or {}
        self.return_ns = ctx.t0_ns + int(payload.get("return_s", 0) * NS_PER_S)
        probes = asyncio.create_task(self._probe(payload.get("probe_interval_s", 0.01)))
        try:
            if self.tokens and not await ctx.sleep_until(self.return_ns):
                await self._come_back(channel_name(cfg.run_id), int(payload.get("events", 0)))
            await ctx.stop.wait()
        finally:
            probes.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await probes

    async def _come_back(self, channel: str, events: int) -> None:
        ctx = self.ctx
        cfg = ctx.cfg
        tokens = self.tokens

        async def resume(i: int, client: PusherClient) -> None:
            self.trackers[id(client)] = Tracker(events)
            await client.send(resume_frame(tokens[i]))
            await client.subscribe(channel, timeout=cfg.connect_timeout)

        returned = await ctx.open_clients(
            len(tokens), resume, self._on_returning_frame, rate=cfg.rate, latency_name="reconnect"
        )
        self.clients.extend(returned)

    async def _probe(self, interval_s: float) -> None:
        """One ping in flight per watcher, a new one every `interval_s` once answered."""
        ping = protocol.ping()
        while not self.ctx.stop.is_set():
            now = now_ns()
            for client in self.watchers:
                key = id(client)
                if key in self.pings or not client.is_open:
                    continue
                self.pings[key] = now
                with contextlib.suppress(ConnectionError, OSError):
                    await client.send(ping)
            await asyncio.sleep(interval_s)

    def extra(self) -> dict[str, Any]:
        trackers = list(self.trackers.values())
        return {
            "returned": len(trackers),
            "incomplete": sum(1 for t in trackers if not t.done),
            "missing": sum(t.missing for t in trackers),
        }


class CatchupDriver(Driver):
    primary_latency = "probe_catchup"

    def units(self) -> int:
        return self.cfg.connections + 1

    def plans(self, nproc: int) -> list[dict[str, Any]]:
        """The watchers get a process of their own when there are two or more."""
        watchers = self.cfg.watchers
        if nproc == 1:
            return [{"watchers": watchers, "count": self.cfg.connections}]
        counts = split(self.cfg.connections, nproc - 1)
        return [{"watchers": watchers, "count": 0}] + [{"count": n} for n in counts]

    def start_payload(self, readies: list[dict[str, Any]]) -> Any:
        self.readies = readies
        self.subscribed = ready_sum(readies, "subscribed")
        self.tokens = ready_sum(readies, "tokens")
        self.watchers = ready_sum(readies, "watchers")
        self.return_s = QUIET_S + self.cfg.away
        return {
            "quiet_s": QUIET_S,
            "return_s": self.return_s,
            "events": self.cfg.catchup_events,
            "probe_interval_s": self.cfg.probe_interval / 1000.0,
        }

    def setup_problem(self, readies: list[dict[str, Any]], live: int) -> str | None:
        if ready_sum(readies, "subscribed") == 0:
            return "no subscriber could subscribe"
        if ready_sum(readies, "tokens") == 0:
            return (
                "no resume token came (pusher_internal:resume_token): does the server keep "
                "history on bench-catchup-* (bench/servers/pyserver-history.toml)?"
            )
        if ready_sum(readies, "watchers") == 0:
            return "no watcher could connect"
        return None

    async def drive(self, pctx: ParentContext) -> None:
        cfg = self.cfg
        # One connection, one request at a time: publish order is the events' numbering.
        self.sender = TriggerSender(cfg, self.recorder, pctx.errors, 1)
        channels = [channel_name(cfg.run_id)]
        return_ns = pctx.t0_ns + int(self.return_s * NS_PER_S)
        self.published_before_return = 0

        async def lane(index: int) -> None:
            for seq in range(cfg.catchup_events):
                if pctx.aborted.is_set():
                    return
                if await self.sender.send(index, seq, channels):
                    now = now_ns()
                    self.recorder.count("expected", now, self.tokens)
                    if now < return_ns:
                        self.published_before_return += 1
                elif self.sender.problem() is not None:
                    pctx.abort(str(self.sender.problem()))

        try:
            await self.sender.open_all()
            delay = (pctx.t0_ns + int(QUIET_S * NS_PER_S) - now_ns()) / NS_PER_S
            if delay > 0:
                await asyncio.sleep(delay)
            begin = now_ns()
            await lane(0)
            self.publish_s = (now_ns() - begin) / NS_PER_S
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(pctx.aborted.wait(), max(0, return_ns - now_ns()) / NS_PER_S)
            self.cpu_at_return = read_cpu_s(cfg.server_pid)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(
                    pctx.aborted.wait(), max(0, pctx.end_ns - now_ns()) / NS_PER_S
                )
            self.cpu_at_end = read_cpu_s(cfg.server_pid)
        finally:
            self.sender.close()

    def status(self, counters: dict[str, int], live: int) -> str:
        return (
            f"conns {live}  published {counters.get('accepted', 0)}  "
            f"caught up {counters.get('caught_up', 0)}  "
            f"recv {counters.get('delivered', 0)}/{counters.get('expected', 0)}"
        )

    def summary(self, merged: Merged, measured_s: float, drain_s: float) -> dict[str, Any]:
        c = merged.counters
        catchup = merged.values_us.get("catchup", [])
        slowest_s = max(catchup) / 1e6 if catchup else None
        delivered = c.get("delivered", 0)
        returned = sum(int(e.get("returned", 0)) for e in self.extras)
        start, end = getattr(self, "cpu_at_return", None), getattr(self, "cpu_at_end", None)
        cpu_s = end - start if start is not None and end is not None else None
        return {
            "subscribers": getattr(self, "subscribed", 0),
            "tokens": getattr(self, "tokens", 0),
            "watchers": getattr(self, "watchers", 0),
            "probe_shares_process": self.cfg.processes < 2,
            "events": self.cfg.catchup_events,
            "published": c.get("accepted", 0),
            "published_before_return": getattr(self, "published_before_return", 0),
            "publish_s": round(getattr(self, "publish_s", 0.0), 3),
            "returned": returned,
            "reconnect_failed": c.get("connect_failed", 0),
            "expected": c.get("expected", 0),
            "delivered": delivered,
            "ratio": ratio(delivered, c.get("expected", 0)),
            "caught_up": c.get("caught_up", 0),
            "incomplete": sum(int(e.get("incomplete", 0)) for e in self.extras),
            "duplicates": c.get("duplicates", 0),
            "out_of_order": c.get("out_of_order", 0),
            "missing": sum(int(e.get("missing", 0)) for e in self.extras),
            "recovery_failed": c.get("recovery_failed", 0),
            "all_caught_up_s": round(slowest_s, 3) if slowest_s is not None else None,
            "replayed_per_s": rate(delivered, slowest_s) if slowest_s else None,
            "probes": c.get("probes", 0),
            "disconnects": c.get("disconnects", 0),
            "server_cpu_after_return_s": round(cpu_s, 3) if cpu_s is not None else None,
            "server_cpu_us_per_replayed": round(1e6 * cpu_s / delivered, 3)
            if cpu_s is not None and delivered
            else None,
        }
