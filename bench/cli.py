"""Command line: `python -m bench SCENARIO [options]` (or `--scenario SCENARIO`).

Parses and checks options, refuses non-loopback targets without --allow-remote, runs the
scenario, writes `<out>/<time>-<scenario>-<run>.json` and `.png`, and prints a summary.
Exit status: 0 when the run completed, 1 when it was aborted, 2 for bad options or a refused
target.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import secrets
import sys
from collections.abc import Sequence

from bench import report, rxclock
from bench.config import (
    DEFAULT_CONNECTIONS,
    DEFAULT_RATE,
    MAX_DURATION,
    SCENARIO_NAMES,
    BenchConfig,
    parse_sources,
    validate,
)
from bench.netguard import RemoteTargetRefused, check_target
from bench.progress import Progress
from bench.runner import Runner
from bench.scenarios.client_events import DEFAULT_SERVER_LIMIT
from bench.scenarios.presence import check_members
from bench.worker import install_fast_loop, raise_fd_limit

EPILOG = """\
scenarios:
  fanout         --connections subscribers on one channel; HTTP triggers at --rate (0 = max)
  channels       --connections channels, one subscriber each; triggers spread across them
  http           --connections keep-alive HTTP connections triggering at --rate (0 = max)
  idle           open --connections idle connections (at --rate/s, 0 = max), from
                 --sources addresses across --processes; with --server-pid report the
                 server's RSS per connection and its CPU use while idle; with
                 --broadcast each subscribes to one channel and one trigger to all of
                 them is timed until the last client has read it
  client-events  --connections clients in pairs on private channels, --rate events/s each
                 (0 = max: --window events in flight per sender, a closed loop)
  presence       --connections churners join/leave presence channels at --rate joins/s in
                 total while --watchers per channel count member_added/removed
  catchup        --connections subscribers leave a history channel, --catchup-events are
                 published during --away s, they come back at --rate/s (0 = max) with
                 their resume tokens and catch up while --watchers ping the server

Only loopback targets (127.0.0.0/8, ::1) are accepted unless --allow-remote is given.

Two or three servers side by side, interleaved, a fresh server per run:
  python -m bench compare --a "CMD {port}" --b "CMD {port}" [--c "CMD {port}"]
  (see python -m bench compare -h)
"""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m bench",
        description="Load generator for Pusher Channels protocol v7 servers.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "scenario_pos",
        nargs="?",
        choices=SCENARIO_NAMES,
        metavar="SCENARIO",
        help="one of: " + ", ".join(SCENARIO_NAMES),
    )
    p.add_argument("--scenario", choices=SCENARIO_NAMES, help="same as the positional SCENARIO")
    target = p.add_argument_group("target")
    target.add_argument("--host", default="127.0.0.1", help="server host (default 127.0.0.1)")
    target.add_argument("--port", type=int, default=6001, help="server port (default 6001)")
    target.add_argument(
        "--api-port",
        type=int,
        help="send HTTP triggers to this port on the same host instead (another node of a "
        "cluster, so that every delivery crosses nodes)",
    )
    target.add_argument("--app-id", default="app-id")
    target.add_argument("--key", default="app-key")
    target.add_argument("--secret", default="app-secret")
    target.add_argument(
        "--allow-remote",
        action="store_true",
        help="allow a host that is not loopback (only servers you may load!)",
    )
    target.add_argument(
        "--server-pid", type=int, help="PID of a local server: report its VmRSS before/after"
    )
    load = p.add_argument_group("load")
    load.add_argument(
        "--duration",
        type=float,
        default=10.0,
        help=f"seconds of measured load (default 10, at most {MAX_DURATION:g})",
    )
    load.add_argument(
        "--connections",
        type=int,
        help="WebSocket (or, for http, HTTP) connections; default per scenario: "
        + ", ".join(f"{k} {v}" for k, v in DEFAULT_CONNECTIONS.items()),
    )
    load.add_argument(
        "--rate",
        type=float,
        help="per second, 0 = max; default per scenario: "
        + ", ".join(f"{k} {v:g}" for k, v in DEFAULT_RATE.items()),
    )
    load.add_argument(
        "--processes",
        type=int,
        default=1,
        help="worker processes sharing the connections (default 1)",
    )
    load.add_argument(
        "--sources",
        default="",
        metavar="N|IP,IP,...",
        help="WebSocket connections leave from these loopback addresses in turn: a count N "
        "(127.0.0.2 ... 127.0.0.N+1) or a list; lifts the ephemeral-port limit of one "
        "address (default: the kernel's choice, 127.0.0.1)",
    )
    load.add_argument(
        "--broadcast",
        action="store_true",
        help="idle: every connection subscribes to one public channel; after the idle phase "
        "one signed HTTP trigger to it is timed until every client has read it",
    )
    load.add_argument(
        "--http-connections",
        type=int,
        default=4,
        help="keep-alive connections for triggers in fanout/channels (default 4)",
    )
    load.add_argument(
        "--window",
        type=int,
        default=4,
        help="client-events at --rate 0 (max): events each sender keeps in flight, sending "
        "the next as soon as its peer reads one (default 4)",
    )
    load.add_argument(
        "--cork",
        action="store_true",
        help="client-events at --rate 0: send each sender's events of one loop turn in one "
        "write (cheaper for the generator, but the server then reads several events per "
        "segment, which changes its work; default: one write per event)",
    )
    load.add_argument(
        "--channels-per-event",
        type=int,
        default=1,
        help="channels per trigger in the channels scenario (default 1, max 100)",
    )
    load.add_argument(
        "--watchers",
        type=int,
        default=2,
        help="presence: watchers per channel; catchup: clients probing the server (default 2)",
    )
    load.add_argument(
        "--presence-channels", type=int, default=1, help="presence: number of channels (default 1)"
    )
    load.add_argument(
        "--hold",
        type=float,
        default=0.2,
        help="presence: seconds a churner stays joined (default 0.2)",
    )
    load.add_argument(
        "--catchup-events",
        type=int,
        default=1_000,
        help="catchup: events published while the subscribers are away (default 1000)",
    )
    load.add_argument(
        "--away",
        type=float,
        default=2.0,
        help="catchup: seconds the subscribers stay away (default 2)",
    )
    load.add_argument(
        "--probe-interval",
        type=float,
        default=10.0,
        help="catchup: ms between a watcher's pong and its next ping (default 10)",
    )
    latency = p.add_argument_group("latency")
    latency.add_argument(
        "--read-timestamps",
        action="store_true",
        help="time each received message when the generator reads it (default on Linux: when "
        "the kernel queued it on the subscriber's socket, SO_TIMESTAMPNS, so the generator's "
        "own reading backlog is not counted as latency)",
    )
    limits = p.add_argument_group("limits")
    limits.add_argument(
        "--drain",
        type=float,
        default=5.0,
        help="seconds to wait for late deliveries after the load (default 5)",
    )
    limits.add_argument(
        "--setup-timeout",
        type=float,
        default=60.0,
        help="seconds allowed for opening connections (default 60)",
    )
    limits.add_argument(
        "--connect-timeout",
        type=float,
        default=10.0,
        help="seconds per connect/subscribe (default 10)",
    )
    limits.add_argument(
        "--connect-concurrency",
        type=int,
        default=200,
        help="connection attempts in flight per process (default 200)",
    )
    limits.add_argument(
        "--max-samples",
        type=int,
        default=1_000_000,
        help="latency samples kept per stream (reservoir; default 1000000)",
    )
    output = p.add_argument_group("output")
    output.add_argument(
        "--out",
        default="bench/results",
        help="directory for the JSON and PNG (default bench/results)",
    )
    output.add_argument("--label", default="", help="free text stored in the result")
    output.add_argument("--no-chart", action="store_true", help="skip the PNG")
    output.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def config_from_args(args: argparse.Namespace, connect_host: str) -> BenchConfig:
    scenario = args.scenario or args.scenario_pos
    return BenchConfig(
        scenario=scenario,
        host=args.host,
        connect_host=connect_host,
        port=args.port,
        app_id=args.app_id,
        key=args.key,
        secret=args.secret,
        duration=args.duration,
        connections=(
            args.connections if args.connections is not None else DEFAULT_CONNECTIONS[scenario]
        ),
        rate=args.rate if args.rate is not None else DEFAULT_RATE[scenario],
        processes=args.processes,
        run_id=secrets.token_hex(4),
        http_connections=args.http_connections,
        window=args.window,
        cork=args.cork,
        channels_per_event=args.channels_per_event,
        watchers=args.watchers,
        presence_channels=args.presence_channels,
        hold=args.hold,
        catchup_events=args.catchup_events,
        away=args.away,
        probe_interval=args.probe_interval,
        drain=args.drain,
        setup_timeout=args.setup_timeout,
        connect_timeout=args.connect_timeout,
        connect_concurrency=args.connect_concurrency,
        max_samples=args.max_samples,
        server_pid=args.server_pid,
        out=args.out,
        chart=not args.no_chart,
        progress=not args.no_progress,
        label=args.label,
        allow_remote=args.allow_remote,
        sources=args.sources,
        api_port=args.api_port,
        broadcast=args.broadcast,
        latency_clock=latency_clock_of(args.read_timestamps),
    )


def latency_clock_of(read_timestamps: bool) -> str:
    """Kernel receive time where the platform has it, unless read time is asked for."""
    if read_timestamps or not rxclock.supported():
        return rxclock.READ
    return rxclock.KERNEL


def prepare(argv: Sequence[str] | None) -> BenchConfig:
    """Parse and check; exits with status 2 (argparse style) on any problem."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.scenario and args.scenario_pos and args.scenario != args.scenario_pos:
        parser.error("give the scenario once (positional or --scenario)")
    if not (args.scenario or args.scenario_pos):
        parser.error("a scenario is required: " + ", ".join(SCENARIO_NAMES))
    try:
        connect_host = check_target(args.host, args.port, args.allow_remote)
    except RemoteTargetRefused as exc:
        print(f"bench: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    try:
        args.sources = parse_sources(args.sources)
    except ValueError as exc:
        parser.error(f"--sources: {exc}")
    cfg = config_from_args(args, connect_host)
    problems = validate(cfg)
    if problems:
        parser.error("; ".join(problems))
    return cfg


def warnings_for(cfg: BenchConfig) -> list[str]:
    notes: list[str] = []
    if cfg.scenario == "client-events" and (cfg.rate > DEFAULT_SERVER_LIMIT or not cfg.rate):
        offered = f"--rate {cfg.rate:g} is" if cfg.rate else "--rate 0 (max) goes"
        notes.append(
            f"{offered} above the default server limit of {DEFAULT_SERVER_LIMIT:g} client "
            "events/s per connection: expect 4301 errors"
            + (" (each one ends one of its sender's --window slots)" if not cfg.rate else "")
        )
    if cfg.scenario == "presence":
        note = check_members(cfg.connections, cfg.presence_channels, cfg.watchers)
        if note:
            notes.append(note)
    share = -(-cfg.connections // cfg.processes)
    fd_hard = fd_limit()
    if cfg.scenario != "http" and fd_hard is not None and share + FD_SPARE > fd_hard:
        notes.append(
            f"each worker process would hold about {share} connections but may open only "
            f"{fd_hard} descriptors: raise --processes to at least "
            f"{-(-cfg.connections // (fd_hard - FD_SPARE))}"
        )
    ports = ephemeral_ports()
    addresses = max(1, len(cfg.sources))
    if cfg.scenario != "http" and ports is not None and cfg.connections > ports * addresses:
        notes.append(
            f"{cfg.connections} connections from {addresses} source address(es) exceed the "
            f"{ports} ephemeral ports per address and server port: give --sources "
            f"{-(-cfg.connections // ports)} or more"
        )
    if cfg.latency_clock == rxclock.READ and not rxclock.supported():
        notes.append(
            "no kernel receive timestamps here (SO_TIMESTAMPNS is Linux's): latency is "
            "measured when the generator reads each message, so it includes its own backlog"
        )
    if cfg.allow_remote:
        notes.append(f"--allow-remote: loading {cfg.host}:{cfg.port}")
    return notes


FD_SPARE = 64
"""Descriptors a worker needs besides its connections (pipes, the event loop, libraries)."""


def fd_limit() -> int | None:
    """This process's hard descriptor limit (workers raise their soft limit to it)."""
    try:
        import resource

        hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    except (ImportError, OSError, ValueError):
        return None
    return None if hard == resource.RLIM_INFINITY else int(hard)


def ephemeral_ports() -> int | None:
    """How many local ports the kernel hands out per source address and destination."""
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            low, high = (int(x) for x in f.read().split()[:2])
    except (OSError, ValueError):
        return None
    return high - low + 1


def main(argv: Sequence[str] | None = None) -> int:
    if argv is None:
        argv = sys.argv[1:]
    if list(argv[:1]) == ["compare"]:
        from bench.compare import main as compare_main

        return compare_main(list(argv[1:]))
    cfg = prepare(argv)
    for note in warnings_for(cfg):
        print(f"bench: note: {note}", file=sys.stderr)
    raise_fd_limit()
    install_fast_loop()
    started_at = dt.datetime.now(dt.UTC)
    progress = Progress(enabled=cfg.progress)
    outcome = asyncio.run(Runner(cfg, progress).run())
    result = report.build_result(outcome, started_at)
    json_path, png_path = report.output_paths(cfg.out, result)
    report.write_json(result, json_path)
    chart = report.write_chart(result, png_path) if cfg.chart else None
    print(report.format_summary(result))
    print(f"  result: {json_path}" + (f"\n  chart:  {chart}" if chart else ""))
    return 0 if outcome.status == "ok" else 1
