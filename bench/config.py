"""The settings of one run, their per-scenario defaults and their hard limits."""

from __future__ import annotations

import ipaddress
import os
from dataclasses import asdict, dataclass
from typing import Any

from bench import rxclock
from bench.netguard import is_loopback

SCENARIO_NAMES = ("fanout", "channels", "http", "idle", "client-events", "presence", "catchup")

MAX_DURATION = 600.0
MAX_CONNECTIONS = 100_000
MAX_PROCESSES = 64
MAX_RATE = 1_000_000.0
MAX_HTTP_CONNECTIONS = 1_000
MAX_SAMPLES = 5_000_000
MAX_SOURCES = 250

DEFAULT_CONNECTIONS = {
    "fanout": 100,
    "channels": 100,
    "http": 8,
    "idle": 1000,
    "client-events": 100,
    "presence": 20,
    "catchup": 100,
}
"""--connections: subscribers, channels (one subscriber each), HTTP keep-alive connections,
idle connections, clients (two per pair), presence churners, returning subscribers."""

DEFAULT_RATE = {
    "fanout": 10.0,
    "channels": 100.0,
    "http": 0.0,
    "idle": 0.0,
    "client-events": 5.0,
    "presence": 10.0,
    "catchup": 0.0,
}
"""--rate (0 = as fast as possible): triggers/s, triggers/s, requests/s, connects/s,
client events/s per client, joins/s across all churners, reconnects/s."""


@dataclass(frozen=True)
class BenchConfig:
    """Everything a run needs; picklable so worker processes get a copy."""

    scenario: str
    host: str
    connect_host: str
    """Where connections go: the loopback address `host` resolved to, or `host` itself when
    --allow-remote is given."""
    port: int
    app_id: str
    key: str
    secret: str
    duration: float
    connections: int
    rate: float
    processes: int
    run_id: str
    http_connections: int = 4
    window: int = 4
    """client-events at --rate 0: events each sender keeps in flight (sent, not yet read by
    its peer); a closed loop, so the offered rate is whatever the server relays."""
    cork: bool = False
    """client-events at --rate 0: a sender's events of one loop turn share one write (else one
    write each, as browsers and the neutral generators send them)."""
    channels_per_event: int = 1
    watchers: int = 2
    presence_channels: int = 1
    hold: float = 0.2
    catchup_events: int = 1_000
    """catchup: events published while the subscribers are away."""
    away: float = 2.0
    """catchup: seconds the subscribers stay away (the events are published meanwhile)."""
    probe_interval: float = 10.0
    """catchup: milliseconds between a watcher's pong and its next ping."""
    drain: float = 5.0
    setup_timeout: float = 60.0
    connect_timeout: float = 10.0
    connect_concurrency: int = 200
    max_samples: int = 1_000_000
    server_pid: int | None = None
    out: str = os.path.join("bench", "results")
    chart: bool = True
    progress: bool = True
    label: str = ""
    allow_remote: bool = False
    sources: tuple[str, ...] = ()
    """Local IPv4 addresses the WebSocket connections leave from, round robin (empty: the
    kernel's choice). Spreads connections over several 4-tuples' worth of ephemeral ports."""
    broadcast: bool = False
    """idle: every connection subscribes to one channel, and after the idle phase one trigger
    to it is timed until every client has read it."""
    api_port: int | None = None
    """Where HTTP triggers go when not to `port`: another node of a cluster, so that every
    delivery crosses nodes (the WebSocket clients stay on `port`)."""
    latency_clock: str = rxclock.READ
    """When a message counts as received: `rxclock.KERNEL` ("kernel-receive", the time the
    kernel queued its bytes on the subscriber's socket; the command line's default where
    `rxclock.supported()`) or `rxclock.READ` ("read", when the generator read it)."""

    @property
    def trigger_port(self) -> int:
        return self.api_port or self.port

    def public(self) -> dict[str, Any]:
        """The settings for the result file, secret left out."""
        data = asdict(self)
        data.pop("secret")
        return data

    def worker_deadline_s(self) -> float:
        """Seconds after which a worker gives up by itself, whatever the parent does."""
        return self.setup_timeout + self.duration + self.drain + 60.0


def validate(cfg: BenchConfig) -> list[str]:
    """Problems with `cfg`, as messages for the user (empty when it is fine)."""
    problems: list[str] = []
    if not 0 < cfg.duration <= MAX_DURATION:
        problems.append(f"--duration must be in (0, {MAX_DURATION:g}] seconds")
    if not 1 <= cfg.connections <= MAX_CONNECTIONS:
        problems.append(f"--connections must be in [1, {MAX_CONNECTIONS}]")
    if not 0 <= cfg.rate <= MAX_RATE:
        problems.append(f"--rate must be in [0, {MAX_RATE:g}] (0 = as fast as possible)")
    if not 1 <= cfg.processes <= MAX_PROCESSES:
        problems.append(f"--processes must be in [1, {MAX_PROCESSES}]")
    if not 1 <= cfg.http_connections <= MAX_HTTP_CONNECTIONS:
        problems.append(f"--http-connections must be in [1, {MAX_HTTP_CONNECTIONS}]")
    if not 1 <= cfg.channels_per_event <= 100:
        problems.append("--channels-per-event must be in [1, 100]")
    if not 0 <= cfg.drain <= 60:
        problems.append("--drain must be in [0, 60] seconds")
    if not 1 <= cfg.setup_timeout <= 600:
        problems.append("--setup-timeout must be in [1, 600] seconds")
    if not 1 <= cfg.connect_concurrency <= 10_000:
        problems.append("--connect-concurrency must be in [1, 10000]")
    if not 1_000 <= cfg.max_samples <= MAX_SAMPLES:
        problems.append(f"--max-samples must be in [1000, {MAX_SAMPLES}]")
    if not 1 <= cfg.port <= 65535:
        problems.append("--port must be in [1, 65535]")
    if cfg.api_port is not None and not 1 <= cfg.api_port <= 65535:
        problems.append("--api-port must be in [1, 65535]")
    if cfg.latency_clock not in rxclock.LATENCY_CLOCKS:
        problems.append(f"unknown latency clock {cfg.latency_clock!r}")
    elif cfg.latency_clock == rxclock.KERNEL and not rxclock.supported():
        problems.append("kernel receive timestamps (SO_TIMESTAMPNS) are not available here")
    if len(cfg.sources) > MAX_SOURCES:
        problems.append(f"--sources: at most {MAX_SOURCES} addresses")
    if cfg.sources and ":" in cfg.connect_host:
        problems.append("--sources are IPv4 addresses: use an IPv4 --host (127.0.0.1)")
    for source in cfg.sources:
        if not cfg.allow_remote and not is_loopback(source):
            problems.append(f"--sources: {source} is not a loopback address (127.0.0.0/8)")
    if cfg.broadcast and cfg.scenario != "idle":
        problems.append("--broadcast belongs to the idle scenario")
    if cfg.scenario == "client-events" and cfg.connections < 2:
        problems.append("client-events needs --connections >= 2 (one pair)")
    if cfg.scenario == "client-events" and not 1 <= cfg.window <= 1_000:
        problems.append("--window must be in [1, 1000] (events in flight per sender)")
    if cfg.scenario == "presence":
        if not 1 <= cfg.presence_channels <= 1_000:
            problems.append("--presence-channels must be in [1, 1000]")
        if not 1 <= cfg.watchers <= 100:
            problems.append("--watchers must be in [1, 100] per channel")
        if not 0 < cfg.hold <= 60:
            problems.append("--hold must be in (0, 60] seconds")
        if cfg.rate <= 0:
            problems.append("presence needs a --rate > 0 (joins per second)")
    if cfg.scenario == "catchup":
        if not 1 <= cfg.catchup_events <= 100_000:
            problems.append("--catchup-events must be in [1, 100000]")
        if not 0 < cfg.away <= 60:
            problems.append("--away must be in (0, 60] seconds")
        if not 1 <= cfg.probe_interval <= 1_000:
            problems.append("--probe-interval must be in [1, 1000] ms")
        if not 1 <= cfg.watchers <= 100:
            problems.append("--watchers must be in [1, 100]")
        if cfg.duration <= 1.0 + cfg.away:
            problems.append("catchup: --duration must be longer than 1 s + --away")
    return problems


def parse_sources(spec: str) -> tuple[str, ...]:
    """`--sources`: a count N (127.0.0.2 ... 127.0.0.N+1), or a comma-separated list of IPv4
    addresses; "" or "0" for none. Raises ValueError with a message for the user."""
    spec = spec.strip()
    if not spec or spec == "0":
        return ()
    if spec.isdigit():
        count = int(spec)
        if not 1 <= count <= MAX_SOURCES:
            raise ValueError(f"a count of source addresses must be in [1, {MAX_SOURCES}]")
        return tuple(f"127.0.0.{2 + i}" for i in range(count))
    addresses: list[str] = []
    for part in spec.split(","):
        part = part.strip()
        try:
            ip = ipaddress.ip_address(part)
        except ValueError:
            raise ValueError(f"not an IPv4 address: {part!r}") from None
        if not isinstance(ip, ipaddress.IPv4Address):
            raise ValueError(f"source addresses are IPv4: {part!r}")
        if part not in addresses:
            addresses.append(part)
    return tuple(addresses)
