"""What every scenario is made of, and the pieces they share.

A scenario has two halves:
- a `Role`, instantiated in each worker process: `setup()` opens its share of connections
  and returns a small "ready" report, `run()` does the measured work until `ctx.stop` is set,
  `close()` releases everything;
- a `Driver` in the parent process: `plans()` splits the work across workers,
  `start_payload()` turns the ready reports into what workers need to know at start,
  `drive()` does the parent's measured work (e.g. HTTP triggers) and `summary()` computes
  the headline numbers.

Counters named `expected` and `delivered` (summed over all processes) drive the drain phase
and the delivered/expected ratio.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from bench import protocol
from bench.client import FrameHandler, PusherClient, run_bounded
from bench.clock import NS_PER_S, now_ns
from bench.config import BenchConfig
from bench.httpclient import HTTPError, Trigger
from bench.metrics import Merged, Recorder
from bench.protocol import Frame
from bench.wsclient import Gate

MAX_ERROR_SAMPLES = 20


class ErrorLog:
    """Error counts by kind plus the first few messages."""

    def __init__(self) -> None:
        self.counts: dict[str, int] = {}
        self.samples: list[str] = []

    def add(self, kind: str, detail: object = "") -> None:
        self.counts[kind] = self.counts.get(kind, 0) + 1
        if len(self.samples) < MAX_ERROR_SAMPLES:
            text = detail if isinstance(detail, str) else f"{type(detail).__name__}: {detail}"
            self.samples.append(f"{kind}: {text}"[:300])


class WorkerContext:
    """State shared by a worker's role and the worker loop."""

    def __init__(self, cfg: BenchConfig, index: int, nproc: int, plan: dict[str, Any]) -> None:
        self.cfg = cfg
        self.index = index
        self.nproc = nproc
        self.plan = plan
        self.recorder = Recorder(max(1, cfg.max_samples // nproc), seed=index)
        self.errors = ErrorLog()
        self.stop = asyncio.Event()
        self.started = asyncio.Event()
        self.payload: Any = None
        self.live = 0
        self.url = protocol.ws_url(cfg.connect_host, cfg.port, cfg.key)
        self.gate = Gate()
        """Closed (from the command thread) when the run stops: incoming data is dropped."""
        self._next_source = index
        self.per_source: dict[str, int] = {}
        """Connections established from each source address (--sources)."""

    @property
    def t0_ns(self) -> int:
        return self.recorder.t0_ns if self.recorder.t0_ns is not None else now_ns()

    async def sleep_until(self, t_ns: int) -> bool:
        """Sleep until `t_ns`; True when the run was stopped first."""
        delay = (t_ns - now_ns()) / NS_PER_S
        if delay <= 0:
            return self.stop.is_set()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.stop.wait(), delay)
        return self.stop.is_set()

    def new_client(self, on_frame: FrameHandler | None = None) -> PusherClient:
        """A client whose closing is counted (as `disconnects` when not stopping). With
        --sources, clients take the source addresses in turn, interleaved across workers."""
        source = None
        sources = self.cfg.sources
        if sources:
            source = sources[self._next_source % len(sources)]
            self._next_source += self.nproc
        return PusherClient(
            self.url,
            on_frame=on_frame,
            on_close=self._closed,
            gate=self.gate,
            source=source,
            latency_clock=self.cfg.latency_clock,
        )

    def _closed(self, client: PusherClient) -> None:
        if not client.counted:
            return
        self.live -= 1
        if not self.stop.is_set():
            self.recorder.count("disconnects", now_ns())
            self.errors.add("disconnect", f"closed by the server, code {client.close_code}")

    async def open_clients(
        self,
        count: int,
        prepare: Callable[[int, PusherClient], Awaitable[None]],
        on_frame: FrameHandler | None = None,
        deadline_ns: int | None = None,
        rate: float = 0.0,
        latency_name: str | None = None,
    ) -> list[PusherClient]:
        """Open `count` clients, each connected then passed to `prepare(i, client)` (e.g. to
        subscribe), bounded by --connect-concurrency and the deadline (default: setup timeout).
        Failures are counted in `connect_failed` and the error log; returns the clients that
        made it. With `latency_name`, each connect time is sampled under that name.
        """
        cfg = self.cfg
        if deadline_ns is None:
            deadline_ns = now_ns() + int(cfg.setup_timeout * NS_PER_S)
        clients: list[PusherClient] = []

        def job(i: int) -> Callable[[], Awaitable[None]]:
            async def run() -> None:
                client = self.new_client(on_frame)
                begin = now_ns()
                try:
                    await client.connect(cfg.connect_timeout)
                    if latency_name is not None:
                        done = now_ns()
                        self.recorder.sample(latency_name, done - begin, done)
                        self.recorder.count("connected", done)
                    await prepare(i, client)
                except BaseException:
                    client.abort()
                    raise
                client.counted = True
                self.live += 1
                if client.source is not None:
                    self.per_source[client.source] = self.per_source.get(client.source, 0) + 1
                if client.closed.is_set():  # closed between prepare and now
                    self._closed(client)
                clients.append(client)

            return run

        def failed(exc: BaseException) -> None:
            self.recorder.count("connect_failed", now_ns())
            self.errors.add("connect", exc)

        await run_bounded(
            (job(i) for i in range(count)),
            cfg.connect_concurrency,
            deadline_ns,
            failed,
            rate=rate,
        )
        return clients

    async def close_clients(self, clients: Sequence[PusherClient], grace: float = 2.0) -> None:
        """Close all clients: stop reading their messages, send every close frame, give the
        server `grace` seconds to answer, then drop whatever is still open. Bounded however
        many clients there are and however much data is still in flight."""
        for client in clients:
            client.mute()
            client.start_close()
        deadline = now_ns() + int(grace * NS_PER_S)
        while now_ns() < deadline and not all(c.closed.is_set() for c in clients):
            await asyncio.sleep(0.05)
        for client in clients:
            client.abort()


class Role:
    """The part of a scenario that runs in each worker process."""

    def __init__(self, ctx: WorkerContext) -> None:
        self.ctx = ctx
        self.clients: list[PusherClient] = []

    async def setup(self) -> dict[str, Any]:
        return {}

    async def run(self) -> None:
        await self.ctx.stop.wait()

    async def close(self) -> None:
        await self.ctx.close_clients(self.clients)

    def extra(self) -> dict[str, Any]:
        """Scenario-specific numbers for the worker's final report."""
        return {}


class ParentContext:
    """The parent's view of the measured phase."""

    def __init__(self, cfg: BenchConfig, recorder: Recorder, t0_ns: int, end_ns: int) -> None:
        self.cfg = cfg
        self.recorder = recorder
        self.t0_ns = t0_ns
        self.end_ns = end_ns
        self.abort_reason: str | None = None
        self.aborted = asyncio.Event()
        self.errors = ErrorLog()

    def abort(self, reason: str) -> None:
        if self.abort_reason is None:
            self.abort_reason = reason
        self.aborted.set()


class Driver:
    """The part of a scenario that runs in the parent process."""

    primary_latency = "delivery"
    """The latency stream charted and printed first."""
    uses_connections = True
    """False when no worker holds WebSocket connections (then losing them all is normal)."""

    def __init__(self, cfg: BenchConfig, recorder: Recorder) -> None:
        self.cfg = cfg
        self.recorder = recorder
        self.readies: list[dict[str, Any]] = []
        self.extras: list[dict[str, Any]] = []
        """Each worker's `Role.extra()`, filled in before `summary()`."""

    def units(self) -> int:
        """How many indivisible pieces of work there are (caps the worker count)."""
        return self.cfg.connections

    def plans(self, nproc: int) -> list[dict[str, Any]]:
        """One plan per worker; by default an even split of --connections."""
        return [{"count": n} for n in split(self.cfg.connections, nproc)]

    def start_payload(self, readies: list[dict[str, Any]]) -> Any:
        self.readies = readies
        return None

    async def drive(self, pctx: ParentContext) -> None:
        """The parent's share of the measured phase; returns at `pctx.end_ns` at the latest."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(pctx.aborted.wait(), max(0, pctx.end_ns - now_ns()) / 1e9)

    def setup_problem(self, readies: list[dict[str, Any]], live: int) -> str | None:
        """Why the run cannot start after setup (None when it can)."""
        if live == 0:
            return "no WebSocket connection could be set up"
        return None

    def expected_of(self, counters: dict[str, int]) -> int | None:
        """How many deliveries are due so far (None when the scenario expects none)."""
        return counters.get("expected")

    def status(self, counters: dict[str, int], live: int) -> str:
        """One short line for the progress bar."""
        parts = [f"conns {live}"]
        if "expected" in counters:
            parts.append(f"recv {counters.get('delivered', 0)}/{counters['expected']}")
        return "  ".join(parts)

    def summary(self, merged: Merged, measured_s: float, drain_s: float) -> dict[str, Any]:
        """Headline numbers of the scenario. Rates of what was sent use `measured_s`; rates of
        what was delivered use `measured_s + drain_s`, the window in which deliveries count."""
        return {}


def split(total: int, parts: int) -> list[int]:
    """`total` split into `parts` near-equal non-negative integers, larger ones first."""
    parts = max(1, parts)
    base, extra = divmod(total, parts)
    return [base + (1 if i < extra else 0) for i in range(parts)]


def ready_sum(readies: list[dict[str, Any]], key: str) -> int:
    return sum(int(r.get(key, 0)) for r in readies)


async def paced(
    lanes: int,
    rate: float,
    t0_ns: int,
    end_ns: int,
    stop: asyncio.Event,
    step: Callable[[int, int], Awaitable[None]],
) -> None:
    """Call `step(lane, seq)` for seq = 0, 1, 2, ... from `lanes` concurrent lanes, each step
    due at `t0 + seq / rate` (as fast as the lanes go when `rate` is 0), until `end_ns` or
    `stop`. A late lane catches up without sleeping, so the achieved rate is the requested
    one unless the server (or the generator) cannot keep up.
    """
    counter = 0

    async def lane(index: int) -> None:
        nonlocal counter
        while not stop.is_set():
            seq = counter
            counter += 1
            if rate > 0:
                due = t0_ns + int(seq * NS_PER_S / rate)
                if due >= end_ns:
                    return
                delay = (due - now_ns()) / NS_PER_S
                if delay > 0:
                    await asyncio.sleep(delay)
            if now_ns() >= end_ns or stop.is_set():
                return
            await step(index, seq)

    tasks = [asyncio.create_task(lane(i)) for i in range(max(1, lanes))]
    try:
        await asyncio.gather(*tasks)
    finally:
        for task in tasks:
            task.cancel()


class TriggerSender:
    """HTTP triggers carrying timing markers, over several keep-alive connections, with the
    bookkeeping every trigger-based scenario needs: `sent`, `accepted`, `rejected`,
    `http_errors` counters, the `trigger` latency stream (request round trip), and detection
    of a server that went away or refuses every request.
    """

    def __init__(
        self,
        cfg: BenchConfig,
        recorder: Recorder,
        errors: ErrorLog,
        lanes: int,
        latency_name: str = "trigger",
    ) -> None:
        self.cfg = cfg
        self.recorder = recorder
        self.errors = errors
        self.latency_name = latency_name
        self.triggers = [
            Trigger(cfg.connect_host, cfg.trigger_port, cfg.app_id, cfg.key, cfg.secret)
            for _ in range(max(1, lanes))
        ]
        self.last_ok_ns = now_ns()
        self.failures_in_row = 0
        self.rejected_in_row = 0
        self.any_accepted = False
        self.last_rejection = ""

    async def send(self, lane: int, seq: int, channels: list[str]) -> bool:
        """One trigger of a marked `bench` event to `channels`; True when accepted (2xx)."""
        rec = self.recorder
        begin = now_ns()
        data = protocol.marker_text(self.cfg.run_id, seq, begin)
        rec.count("sent", begin)
        try:
            status, body = await self.triggers[lane].send(channels, protocol.TRIGGER_EVENT, data)
        except (OSError, HTTPError, TimeoutError, ValueError) as exc:
            rec.count("http_errors", now_ns())
            self.errors.add("http", exc)
            self.failures_in_row += 1
            await asyncio.sleep(0.05)  # do not spin against a server that is gone
            return False
        done = now_ns()
        rec.sample(self.latency_name, done - begin, done)
        self.failures_in_row = 0
        self.last_ok_ns = done
        if 200 <= status < 300:
            rec.count("accepted", done)
            self.any_accepted = True
            self.rejected_in_row = 0
            return True
        rec.count("rejected", done)
        rec.count(f"http_{status}")
        self.rejected_in_row += 1
        self.last_rejection = f"HTTP {status}: {body[:200].decode(errors='replace')}"
        self.errors.add(f"http_{status}", self.last_rejection)
        return False

    async def open_all(self) -> None:
        """Open every keep-alive connection now, so the first triggers do not pay for it
        (failures are left for `send` to report)."""
        for trigger in self.triggers:
            with contextlib.suppress(OSError, TimeoutError):
                await trigger.conn.open()

    def problem(self) -> str | None:
        """Why the run should stop early, if it should."""
        if self.failures_in_row >= 5 and now_ns() - self.last_ok_ns > 3 * NS_PER_S:
            return "the server stopped answering HTTP requests (connection errors for 3 s)"
        if not self.any_accepted and self.rejected_in_row >= 20:
            return f"the server rejects every trigger ({self.last_rejection})"
        return None

    def close(self) -> None:
        for trigger in self.triggers:
            trigger.close()


async def drive_triggers(
    pctx: ParentContext,
    sender: TriggerSender,
    lanes: int,
    rate: float,
    channels_for: Callable[[int], list[str]],
    on_accepted: Callable[[int, list[str], int], None],
) -> None:
    """Trigger at `rate` (0 = max) from `lanes` lanes until the end of the measured phase,
    aborting the run when the server goes away; `on_accepted(seq, channels, now)` is called
    for every accepted trigger (to count what is now expected)."""

    async def step(lane: int, seq: int) -> None:
        channels = channels_for(seq)
        if await sender.send(lane, seq, channels):
            on_accepted(seq, channels, now_ns())
        problem = sender.problem()
        if problem is not None:
            pctx.abort(problem)

    await sender.open_all()
    await paced(lanes, rate, pctx.t0_ns, pctx.end_ns, pctx.aborted, step)


def count_marker(recorder: Recorder, run_id: str, frame: Frame, now: int, event: str) -> bool:
    """Record a received marked event: `delivered` and the `delivery` latency. True if it
    was one of this run's."""
    if frame.event != event:
        return False
    marker = protocol.parse_marker(frame.data)
    if marker is None or marker.run != run_id:
        return False
    recorder.count("delivered", now)
    recorder.sample("delivery", now - marker.t_ns, now)
    return True


def trigger_status(counters: dict[str, int], live: int) -> str:
    """The progress line of the scenarios that trigger over HTTP and count deliveries."""
    return (
        f"subs {live}  sent {counters.get('sent', 0)}  "
        f"recv {counters.get('delivered', 0)}/{counters.get('expected', 0)}"
    )
