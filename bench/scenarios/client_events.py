"""`client-events`: --connections clients in pairs, each pair on its own private channel;
every client sends `client-bench` events at --rate per second (the server's default limit is
10/s per connection; above it events are refused with error 4301 and counted as
`rate_limited`). Each accepted event is expected once, at the other member of the pair.
Both members of a pair live in the same worker.

At --rate 0 (max) it is a closed loop, as the neutral load generators do it: each sender
keeps --window events in flight and sends the next one as soon as its peer reads one, so the
offered rate follows what the server relays and the generator's buffers stay bounded. The
events are built by string formatting and written without awaiting: the window is the flow
control. Each event is its own write, as browsers and the neutral generators send them;
with --cork a sender's events of one loop turn share one write (its peer's read usually
brings several events, each refilling one), which costs the generator much less but lets
the server read several events per segment: a different load (docs/performance.md).
"""

from __future__ import annotations

import asyncio
from typing import Any

from bench import protocol, signing
from bench.client import PusherClient
from bench.clock import NS_PER_S, now_ns
from bench.metrics import Merged
from bench.protocol import Frame
from bench.scenarios.base import Driver, Role, count_marker, paced, split
from bench.stats import rate, ratio

RATE_LIMIT_CODE = 4301
DEFAULT_SERVER_LIMIT = 10.0


def channel_name(run_id: str, pair: int) -> str:
    return f"private-bench-{run_id}-{pair}"


def event_prefix(channel: str, run_id: str) -> str:
    """What every marked event of a sender starts with (see `marked_event`)."""
    return (
        f'{{"event":"{protocol.CLIENT_EVENT}","channel":{protocol.dumps(channel)},'
        f'"data":{{"r":{protocol.dumps(run_id)},"s":'
    )


PADDING = "x" * 64
"""Makes a max-rate event's `data` about 100 bytes, as the neutral generators pad theirs:
the size of what a server parses and re-encodes per event changes its cost."""


def marked_event(prefix: str, seq: int, t_ns: int) -> str:
    """`protocol.client_event(CLIENT_EVENT, channel, make_marker(run_id, seq, t_ns))` with
    `"p": PADDING` added to the marker, by string formatting: the max-rate loop sends one per
    relayed event."""
    return f'{prefix}{seq},"t":{t_ns},"p":"{PADDING}"}}}}'


class ClientEventsRole(Role):
    async def setup(self) -> dict[str, Any]:
        ctx = self.ctx
        cfg = ctx.cfg
        first_pair, pairs = ctx.plan["first_pair"], ctx.plan["pairs"]
        recorder, run_id = ctx.recorder, cfg.run_id

        def on_frame(client: PusherClient, frame: Frame, now: int) -> None:
            if count_marker(recorder, run_id, frame, now, protocol.CLIENT_EVENT):
                if self.refill is not None:
                    self.refill(client, now)
                return
            if frame.event == "pusher:error":
                code = protocol.error_code(frame)
                if code == RATE_LIMIT_CODE:
                    recorder.count("rate_limited", now)
                else:
                    recorder.count("pusher_errors", now)
                    ctx.errors.add(f"pusher_error_{code}", protocol.error_message(frame))

        async def prepare(i: int, client: PusherClient) -> None:
            channel = channel_name(run_id, first_pair + i // 2)
            assert client.socket_id is not None
            auth = signing.channel_auth(cfg.key, cfg.secret, client.socket_id, channel)
            await client.subscribe(channel, auth=auth, timeout=cfg.connect_timeout)
            client.tag = channel

        self.refill: Any = None
        """At max rate: called with the client that read a relayed event, and the time."""
        clients = await ctx.open_clients(2 * pairs, prepare, on_frame)
        by_channel: dict[str, list[PusherClient]] = {}
        for client in clients:
            by_channel.setdefault(client.tag, []).append(client)
        # Only complete pairs send: a lone client's events would reach nobody.
        self.senders = [c for group in by_channel.values() if len(group) == 2 for c in group]
        self.clients = clients
        return {"pairs": len(self.senders) // 2, "clients": len(clients)}

    async def run(self) -> None:
        ctx = self.ctx
        cfg = ctx.cfg
        senders = self.senders
        if not senders:
            await ctx.stop.wait()
            return
        t0 = ctx.t0_ns
        end = t0 + int(cfg.duration * NS_PER_S)
        if cfg.rate <= 0:
            self._closed_loop(end)
            await ctx.stop.wait()
            return
        total_rate = cfg.rate * len(senders)
        rec = ctx.recorder

        async def step(_lane: int, seq: int) -> None:
            client = senders[seq % len(senders)]
            if not client.is_open:
                return
            now = now_ns()
            data = protocol.make_marker(cfg.run_id, seq, now)
            try:
                await client.send(protocol.client_event(protocol.CLIENT_EVENT, client.tag, data))
            except Exception as exc:
                ctx.errors.add("send", exc)
                return
            rec.count("sent", now)

        # One lane per sender keeps each client's events in order; the schedule interleaves
        # clients so every one of them sends at --rate.
        lanes = min(len(senders), 64)
        await paced(lanes, total_rate, t0, end, ctx.stop, step)
        await ctx.stop.wait()

    def _closed_loop(self, end: int) -> None:
        """Max rate: --window events in flight per sender (see the module docstring)."""
        ctx = self.ctx
        run_id, rec, stop = ctx.cfg.run_id, ctx.recorder, ctx.stop
        senders = self.senders
        partner: dict[PusherClient, PusherClient] = {}
        prefix: dict[PusherClient, str] = {}
        for i in range(0, len(senders), 2):
            a, b = senders[i], senders[i + 1]
            partner[a], partner[b] = b, a
        for client in senders:
            prefix[client] = event_prefix(client.tag, run_id)
        seq = 0
        cork = ctx.cfg.cork
        corked: dict[PusherClient, list[str]] = {}
        loop = asyncio.get_running_loop()

        def fire(client: PusherClient, now: int) -> None:
            nonlocal seq
            if now >= end or stop.is_set() or not client.is_open:
                return
            seq += 1
            if not cork:
                ws = client.ws
                try:
                    if ws is None:
                        raise ConnectionError("not connected")
                    ws.send_nowait(marked_event(prefix[client], seq, now))
                except Exception as exc:
                    ctx.errors.add("send", exc)
                    return
                rec.count("sent", now)
                return
            queued = corked.get(client)
            if queued is None:
                if not corked:
                    loop.call_soon(flush)
                corked[client] = [marked_event(prefix[client], seq, now)]
            else:
                queued.append(marked_event(prefix[client], seq, now))
            rec.count("sent", now)

        def flush() -> None:
            """One write per sender per loop turn for what its peer's reads refilled."""
            for client, texts in corked.items():
                ws = client.ws
                try:
                    if ws is None:
                        raise ConnectionError("not connected")
                    ws.send_nowait_many(texts)
                except Exception as exc:
                    ctx.errors.add("send", exc)
            corked.clear()

        def refill(receiver: PusherClient, now: int) -> None:
            sender = partner.get(receiver)
            if sender is not None:
                fire(sender, now_ns())

        self.refill = refill
        for _ in range(ctx.cfg.window):
            for client in senders:
                fire(client, now_ns())


class ClientEventsDriver(Driver):
    def units(self) -> int:
        return self.cfg.connections // 2

    def plans(self, nproc: int) -> list[dict[str, Any]]:
        plans, first = [], 0
        for pairs in split(self.cfg.connections // 2, nproc):
            plans.append({"first_pair": first, "pairs": pairs})
            first += pairs
        return plans

    def status(self, counters: dict[str, int], live: int) -> str:
        return (
            f"clients {live}  sent {counters.get('sent', 0)}  "
            f"recv {counters.get('delivered', 0)}  limited {counters.get('rate_limited', 0)}"
        )

    def expected_of(self, counters: dict[str, int]) -> int:
        return max(0, counters.get("sent", 0) - counters.get("rate_limited", 0))

    def summary(self, merged: Merged, measured_s: float, drain_s: float) -> dict[str, Any]:
        c = merged.counters
        expected = self.expected_of(c)
        return {
            "pairs": sum(int(r.get("pairs", 0)) for r in self.readies),
            "rate_per_client": self.cfg.rate,
            "sent": c.get("sent", 0),
            "rate_limited": c.get("rate_limited", 0),
            "expected": expected,
            "delivered": c.get("delivered", 0),
            "send_rate": rate(c.get("sent", 0), measured_s),
            "delivery_rate": rate(c.get("delivered", 0), measured_s + drain_s),
            "ratio": ratio(c.get("delivered", 0), expected),
            "disconnects": c.get("disconnects", 0),
        }
