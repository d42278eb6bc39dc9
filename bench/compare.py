"""`python -m bench compare`: two or three servers side by side, case by case, interleaved.

Each case of a profile (a scenario of this package with fixed options) runs `--rounds` times
per server in the order A B, B A, A B, ... (with a third server `--c`: A B C, C B A, ...) so
that drift on the machine (other work, thermal, caches) hits every server alike. Every run
gets a fresh server: the command is started in its own session with `{port}` replaced by a
free loopback port, the run waits until the port accepts connections, runs
`python -m bench SCENARIO ... --server-pid PID` as a separate process, and stops the server
with SIGTERM to the process group it created (SIGKILL after `STOP_GRACE_S`), by its ID. With
`--pin` (the default when at least two CPUs are usable) the server runs on the first usable
CPU and the load generator on the others.

Every run appends one JSON line (settings, the server command, the extracted metrics and the
whole result of the run) to `<out>/<stamp>-<A>-vs-<B>[-vs-<C>].jsonl`; at the end a Markdown
table of medians per case and metric, with B/A (and C/A, C/B), is printed and written beside
it. `--table FILE` prints the table of an earlier JSONL file again.

Invariants: only loopback targets; every server and every run is bounded in time; only the
processes this module started are signalled; the servers' labels all differ (they name the
columns, the per-run directories and the records).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import re
import shlex
import signal
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.netguard import RemoteTargetRefused, check_target

START_TIMEOUT_S = 30.0
STOP_GRACE_S = 10.0
RUN_SLACK_S = 120.0
"""Seconds a bench run may take beyond its duration, drain and setup timeout."""


@dataclass(frozen=True)
class Metric:
    name: str
    path: str
    """Dotted path into the result JSON, e.g. `summary.delivery_rate`."""
    higher_is_better: bool
    scale: float = 1.0

    @property
    def label(self) -> str:
        return f"{self.name} {'↑' if self.higher_is_better else '↓'}"


@dataclass(frozen=True)
class Case:
    name: str
    scenario: str
    args: tuple[str, ...]
    metrics: tuple[Metric, ...]
    duration: float
    setup_timeout: float = 60.0
    drain: float = 5.0
    about: str = ""


DELIVERED = Metric("delivered msg/s", "summary.delivery_rate", True)
RATIO = Metric("delivery ratio", "summary.ratio", True)
P99 = Metric("p99 latency ms", "latency_ms.delivery.p99", False)
P50 = Metric("p50 latency ms", "latency_ms.delivery.p50", False)
REQUESTS = Metric("requests/s", "summary.request_rate", True)
REQUEST_P99 = Metric("request p99 ms", "latency_ms.request.p99", False)
JOINS = Metric("joins/s", "summary.join_rate", True)
MEMBER_ADDED_P99 = Metric("member_added p99 ms", "latency_ms.member_added.p99", False)
RSS_PER_CONN = Metric("RSS per connection KB", "server.rss_kb_per_connection", False)
CONNECT_RATE = Metric("connects/s", "summary.connect_rate", True)
CONNECT_P99 = Metric("connect p99 ms", "latency_ms.connect.p99", False)
FAILED = Metric("failed connections", "summary.failed", False)
IDLE_CPU = Metric("idle CPU %", "summary.idle_cpu_pct", False)
SERVER_CPU_PER_OP = Metric("server CPU µs/op", "server.cpu_us_per_op", False)
SERVER_US = Metric("server CPU µs per message", "summary.server_cpu_us_per_message", False)
SERVER_CPU = Metric("server CPU %", "summary.server_cpu_pct", False)
PEAK_RSS = Metric("server RSS at end MB", "server.rss_kb.end", False, scale=1024.0)


def _args(text: str) -> tuple[str, ...]:
    return tuple(text.split())


def _fanout(n: int, rate: float, seconds: float) -> Case:
    triggers = rate / n if rate else 0.0
    name = f"fanout-n{n}-" + (f"r{int(rate // 1000)}k" if rate else "max")
    metrics = (DELIVERED, RATIO, P99) if not rate else (P50, P99, RATIO)
    return Case(
        name,
        "fanout",
        ("--connections", str(n), "--rate", f"{triggers:g}", "--http-connections", "4"),
        metrics,
        seconds,
        about=f"{n} subscribers on one channel, "
        + (f"{rate:,.0f} offered msg/s" if rate else "4 HTTP connections triggering at max"),
    )


def _channels(per_event: int, http_connections: int, seconds: float) -> Case:
    return Case(
        f"channels-n10000-k{per_event}-max",
        "channels",
        _args(
            f"--connections 10000 --channels-per-event {per_event} --rate 0 "
            f"--http-connections {http_connections}"
        ),
        (Metric("triggers/s", "summary.trigger_rate", True), DELIVERED, RATIO, SERVER_CPU_PER_OP),
        seconds,
        about=f"10000 channels with one subscriber each, {per_event} channel(s) per trigger, "
        f"{http_connections} HTTP connections triggering at max",
    )


def _http(seconds: float) -> Case:
    return Case(
        "http-c16-max",
        "http",
        ("--connections", "16", "--rate", "0"),
        (REQUESTS, REQUEST_P99, SERVER_CPU_PER_OP),
        seconds,
        about="16 keep-alive connections triggering at max to a channel nobody listens on",
    )


def _client(seconds: float, rate: float) -> Case:
    name = f"client-p500-r{rate:g}"
    metrics = (DELIVERED, RATIO, SERVER_CPU_PER_OP) if rate > 10 else (P99, RATIO)
    return Case(
        name,
        "client-events",
        ("--connections", "1000", "--rate", f"{rate:g}", "--processes", "2"),
        metrics,
        seconds,
        about=f"500 pairs on private channels, {rate:g} client events/s per client",
    )


def _client_max(seconds: float) -> Case:
    return Case(
        "client-p500-max",
        "client-events",
        _args("--connections 1000 --rate 0 --window 4 --processes 2"),
        (DELIVERED, RATIO, SERVER_CPU_PER_OP, P99),
        seconds,
        about="500 pairs on private channels, each sender keeping 4 client events in flight "
        "(max relay rate)",
    )


def _presence(seconds: float) -> Case:
    return Case(
        "presence-k10-w20-j20-max",
        "presence",
        _args("--connections 200 --presence-channels 10 --watchers 20 --rate 20000 --hold 0.1"),
        (JOINS, MEMBER_ADDED_P99),
        seconds,
        about="10 presence channels x (20 watchers + 20 churners), each churner joining and "
        "leaving as fast as it can (offered 20,000 joins/s)",
    )


def _idle(n: int, seconds: float) -> Case:
    processes = max(2, -(-n // 9000))
    return Case(
        f"idle-n{n}",
        "idle",
        _args(
            f"--connections {n} --rate 2000 --sources 8 --processes {processes} "
            "--connect-concurrency 250"
        ),
        (RSS_PER_CONN, CONNECT_P99, CONNECT_RATE, FAILED, IDLE_CPU),
        seconds,
        setup_timeout=30.0,
        drain=0.0,
        about=f"{n} idle connections at up to 2000/s from 8 source addresses, then held",
    )


def _history_fanout(n: int, rate: float, seconds: float) -> Case:
    """A fan-out case for `--profile history`: A and B are the same server without and with
    a history rule on the fan-out channel, so the server's CPU per message is the cost."""
    case = _fanout(n, rate, seconds)
    metrics = (DELIVERED, SERVER_US, RATIO, P99) if not rate else (SERVER_US, SERVER_CPU, P99)
    return Case(case.name, case.scenario, case.args, metrics, seconds, about=case.about)


PROFILES: dict[str, tuple[Case, ...]] = {
    "smoke": (
        Case(
            "fanout-n20-r20",
            "fanout",
            ("--connections", "20", "--rate", "20"),
            (DELIVERED, RATIO, P99),
            1.0,
            drain=2.0,
            about="a check of the setup: 20 subscribers, 20 triggers/s for 1 s",
        ),
    ),
    "quick": (
        _fanout(1000, 0, 5),
        _fanout(1000, 50_000, 5),
        _fanout(5000, 0, 5),
        _http(5),
        _client(5, 10),
        _client(5, 50),
        _client_max(5),
        _presence(5),
        _idle(10_000, 12),
    ),
    "full": (
        _fanout(1000, 0, 10),
        _fanout(1000, 20_000, 10),
        _fanout(1000, 50_000, 10),
        _fanout(5000, 0, 10),
        _fanout(5000, 20_000, 10),
        _fanout(5000, 50_000, 10),
        _fanout(10_000, 0, 10),
        _fanout(10_000, 20_000, 10),
        _fanout(10_000, 50_000, 10),
        _channels(1, 16, 10),
        _channels(100, 4, 10),
        _http(10),
        _client(10, 10),
        _client(10, 50),
        _client_max(10),
        _presence(10),
        _idle(10_000, 15),
        _idle(19_500, 20),
    ),
    # The same server without (A) and with (B) history on the fan-out channel:
    # --b "... --config bench/servers/pyserver-history.toml" (docs/performance.md, History).
    "history": (
        _history_fanout(1000, 0, 10),
        _history_fanout(1000, 50_000, 10),
    ),
}

SCENARIO_GROUPS = {
    "fanout": "fanout",
    "channels": "channels",
    "manych": "channels",
    "http": "http",
    "client": "client-events",
    "client-events": "client-events",
    "presence": "presence",
    "idle": "idle",
    "conns": "idle",
}


# --- the plan --------------------------------------------------------------------------------


def select_cases(profile: str, scenarios: str, pattern: str) -> list[Case]:
    """The cases of `profile`, narrowed to `scenarios` (comma-separated names of
    SCENARIO_GROUPS) and to names matching the regular expression `pattern`."""
    cases = list(PROFILES[profile])
    if scenarios:
        wanted = set()
        for name in scenarios.split(","):
            name = name.strip()
            if name not in SCENARIO_GROUPS:
                raise ValueError(
                    f"unknown scenario {name!r}; one of: " + ", ".join(sorted(SCENARIO_GROUPS))
                )
            wanted.add(SCENARIO_GROUPS[name])
        cases = [c for c in cases if c.scenario in wanted]
    if pattern:
        regex = re.compile(pattern)
        cases = [c for c in cases if regex.search(c.name)]
    return cases


def run_order(rounds: int, sides: Sequence[str] = ("A", "B")) -> list[tuple[int, str]]:
    """(round, side) pairs of one case: the sides in order, then reversed, and so on
    (A B, B A, ... or A B C, C B A, ...), so that no server always runs first or last."""
    order: list[tuple[int, str]] = []
    for r in range(rounds):
        order.extend((r, side) for side in (sides if r % 2 == 0 else tuple(reversed(sides))))
    return order


# --- one run ---------------------------------------------------------------------------------


@dataclass
class Server:
    label: str
    command: str


@dataclass
class Settings:
    a: Server
    b: Server
    host: str
    connect_host: str
    port: int
    app_id: str
    key: str
    secret: str
    out: Path
    pin: bool
    start_timeout: float
    rounds: int
    cases: list[Case]
    extra_args: list[str] = field(default_factory=list)
    c: Server | None = None

    @property
    def servers(self) -> dict[str, Server]:
        """The servers by side, A, B and (when given) C, in run order."""
        return {"A": self.a, "B": self.b} | ({"C": self.c} if self.c else {})


def usable_cpus() -> list[int]:
    try:
        return sorted(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return []


def pin_plan(wanted: str) -> tuple[list[int], list[int]] | None:
    """(server CPUs, load CPUs), or None when not pinning. `wanted`: auto, on or off."""
    if wanted == "off" or not hasattr(os, "sched_setaffinity"):
        if wanted == "on":
            raise ValueError("--pin on: this system cannot pin processes to CPUs")
        return None
    cpus = usable_cpus()
    if len(cpus) < 2:
        if wanted == "on":
            raise ValueError(f"--pin on needs at least 2 usable CPUs, found {len(cpus)}")
        return None
    return cpus[:1], cpus[1:]


def _pinned(cpus: list[int] | None) -> Callable[[], None] | None:
    if not cpus:
        return None
    chosen = set(cpus)

    def pin() -> None:
        os.sched_setaffinity(0, chosen)

    return pin


def free_port(host: str) -> int:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def port_open(host: str, port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


_WAIT_PEEK = os.WEXITED | os.WNOHANG | os.WNOWAIT

SHELL_SYNTAX = re.compile(r"[;&|<>()$`#*?\[\]{}~\n]|^\s*\w+=")


def argv_of(command: str) -> list[str]:
    """How to start `command`: its own words when it is one simple command (so the PID is
    the server's and its exit status is reported), else `/bin/sh -c command`."""
    if not SHELL_SYNTAX.search(command):
        with contextlib.suppress(ValueError):
            words = shlex.split(command)
            if words:
                return words
    return ["/bin/sh", "-c", command]


class ServerProcess:
    """One server started for one run, in its own session (process group)."""

    def __init__(
        self, command: str, port: int, log_path: Path, cpus: list[int] | None = None
    ) -> None:
        self.command = command.replace("{port}", str(port))
        self.port = port
        self.log_path = log_path
        log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = log_path.open("ab")
        env = dict(os.environ, PORT=str(port))
        self.proc = subprocess.Popen(
            argv_of(self.command),
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
            preexec_fn=_pinned(cpus),
        )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def wait_ready(self, host: str, timeout: float) -> str | None:
        """None once the port accepts connections; otherwise why not (within `timeout`)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.exited():
                return f"the server exited ({self.log_tail()})"
            if port_open(host, self.port, timeout=0.3):
                return None
            time.sleep(0.05)
        return f"the server did not listen on {host}:{self.port} within {timeout:g} s"

    def exited(self) -> bool:
        """True once the server's first process has exited. It is left unreaped until
        `stop`, so its ID, which is also the process group's, cannot be reused meanwhile."""
        if self.proc.returncode is not None:
            return True
        try:
            return os.waitid(os.P_PID, self.proc.pid, _WAIT_PEEK) is not None
        except ChildProcessError:
            return True

    def _await_exit(self, seconds: float) -> bool:
        deadline = time.monotonic() + seconds
        while not self.exited():
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.05)
        return True

    def _signal_group(self, sig: int) -> None:
        if self.proc.returncode is None:  # not reaped: the group ID is still ours
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.proc.pid, sig)

    def stop(self) -> int | None:
        """SIGTERM to the process group, SIGKILL after STOP_GRACE_S, then SIGKILL to anything
        left in the group (a child that ignored SIGTERM); the first process's exit status."""
        if not self.exited():
            self._signal_group(signal.SIGTERM)
            if not self._await_exit(STOP_GRACE_S):
                self._signal_group(signal.SIGKILL)
                self._await_exit(5.0)
        self._signal_group(signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=5)
        self._log.close()
        return self.proc.returncode

    def log_tail(self, lines: int = 5) -> str:
        try:
            text = self.log_path.read_text(errors="replace").strip().splitlines()
        except OSError:
            return ""
        return " | ".join(text[-lines:])


def bench_command(case: Case, settings: Settings, port: int, pid: int, out: Path) -> list[str]:
    return [
        sys.executable, "-m", "bench", case.scenario, *case.args,
        "--host", settings.connect_host, "--port", str(port),
        "--app-id", settings.app_id, "--key", settings.key, "--secret", settings.secret,
        "--duration", f"{case.duration:g}", "--drain", f"{case.drain:g}",
        "--setup-timeout", f"{case.setup_timeout:g}",
        "--server-pid", str(pid), "--out", str(out), "--no-chart", "--no-progress",
        *settings.extra_args,
    ]  # fmt: skip


def get_path(data: Any, path: str) -> Any:
    for part in path.split("."):
        if not isinstance(data, dict) or part not in data:
            return None
        data = data[part]
    return data


def extract(case: Case, result: dict[str, Any]) -> dict[str, float | None]:
    metrics: dict[str, float | None] = {}
    for metric in case.metrics:
        value = get_path(result, metric.path)
        metrics[metric.name] = (
            float(value) / metric.scale if isinstance(value, int | float) else None
        )
    return metrics


def run_case(
    case: Case, side: str, rnd: int, settings: Settings, pins: tuple[list[int], list[int]] | None
) -> dict[str, Any]:
    """One run of `case` against server `side` (A, B or C): the JSON line for it."""
    server = settings.servers[side]
    port = settings.port or free_port(settings.connect_host)
    tag = f"{case.name}-{server.label}-r{rnd}"
    runs_dir = settings.out / "runs" / tag
    record: dict[str, Any] = {
        "ts": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "case": case.name,
        "scenario": case.scenario,
        "round": rnd,
        "side": side,
        "label": server.label,
        "port": port,
        "pinning": {"server": pins[0], "load": pins[1]} if pins else None,
        "load_average": _loadavg(),
    }
    if port_open(settings.connect_host, port, timeout=0.3):
        record.update(status="error", error=f"port {port} is already in use", metrics={})
        return record
    log = settings.out / "logs" / f"{tag}.log"
    proc = ServerProcess(server.command, port, log, pins[0] if pins else None)
    record.update(server_command=proc.command, server_pid=proc.pid, server_log=str(log))
    try:
        problem = proc.wait_ready(settings.connect_host, settings.start_timeout)
        if problem is not None:
            record.update(status="error", error=problem, metrics={})
            return record
        command = bench_command(case, settings, port, proc.pid, runs_dir)
        record["bench_command"] = shlex.join(command[1:])
        limit = case.duration + case.drain + case.setup_timeout + RUN_SLACK_S
        try:
            done = subprocess.run(
                command,
                capture_output=True,
                text=True,
                timeout=limit,
                preexec_fn=_pinned(pins[1] if pins else None),
            )
        except subprocess.TimeoutExpired:
            record.update(status="error", error=f"the bench run exceeded {limit:g} s", metrics={})
            return record
        files = sorted(runs_dir.glob("*.json"))
        if not files:
            error = (done.stderr or done.stdout).strip()[-500:]
            record.update(status="error", error=f"no result (exit {done.returncode}): {error}")
            record["metrics"] = {}
            return record
        result = json.loads(files[-1].read_text())
        record.update(
            status=result.get("status", "error"),
            error=result.get("abort_reason"),
            metrics=extract(case, result),
            latency_clock=result.get("latency_clock", "read"),
            result=result,
        )
        if proc.exited():
            record["status"] = "error"
            record["error"] = f"the server exited during the run ({proc.log_tail()})"
        return record
    finally:
        record["server_exit"] = proc.stop()


def _loadavg() -> float | None:
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:
        return None


# --- the table -------------------------------------------------------------------------------


def _fmt(value: float | None) -> str:
    if value is None:
        return "-"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    if abs(value) >= 100:
        return f"{value:.1f}"
    return f"{value:.2f}"


RATIO_PAIRS = (("B", "A"), ("C", "A"), ("C", "B"))
"""The ratio columns, numerator over denominator, of those whose sides ran."""


@dataclass
class Summary:
    """Medians per case and metric for each side that ran, and the ratios between sides."""

    labels: dict[str, str]
    """Label by side, for the sides that ran (A and B always), in side order."""
    ratios: list[tuple[str, str]]
    rows: list[tuple[str, str, list[float | None], list[float | None]]]
    """(case, metric label with arrow, medians in side order, ratios in `ratios` order)."""


def summarize(records: Sequence[dict[str, Any]]) -> Summary:
    """The medians of `records`, in the order the cases and metrics first appear. Runs that
    did not finish with status ok are left out of the medians."""
    labels = {"A": "A", "B": "B"}
    values: dict[tuple[str, str], dict[str, list[float]]] = {}
    order: list[tuple[str, str]] = []
    directions: dict[str, bool] = {}
    for rec in records:
        labels[rec["side"]] = rec["label"]
        for name, value in rec.get("metrics", {}).items():
            key = (rec["case"], name)
            if key not in values:
                values[key] = {}
                order.append(key)
            if rec.get("status") == "ok" and value is not None:
                values[key].setdefault(rec["side"], []).append(float(value))
        for name, up in rec.get("directions", {}).items():
            directions[name] = up
    sides = sorted(labels)
    ratios = [(num, den) for num, den in RATIO_PAIRS if num in labels and den in labels]
    rows = []
    for case, name in order:
        found = values[(case, name)]
        medians = {
            side: statistics.median(found[side]) if found.get(side) else None for side in sides
        }
        quotients = [_ratio(medians[num], medians[den]) for num, den in ratios]
        arrow = {True: " ↑", False: " ↓"}.get(directions.get(name, True), "")
        rows.append((case, name + arrow, [medians[side] for side in sides], quotients))
    return Summary({side: labels[side] for side in sides}, ratios, rows)


def _ratio(num: float | None, den: float | None) -> float | None:
    return num / den if den not in (None, 0) and num is not None else None


def summarize_records(
    records: Sequence[dict[str, Any]],
) -> tuple[str, str, list[tuple[str, str, float | None, float | None, float | None]]]:
    """(label A, label B, rows of case, metric label, median A, median B, B/A): `summarize`
    for two servers."""
    summary = summarize(records)
    rows = [(case, name, med[0], med[1], quo[0]) for case, name, med, quo in summary.rows]
    return summary.labels["A"], summary.labels["B"], rows


def markdown_table(records: Sequence[dict[str, Any]]) -> str:
    summary = summarize(records)
    labels = summary.labels
    heads = [*labels.values(), *(f"{labels[num]}/{labels[den]}" for num, den in summary.ratios)]
    lines = [
        "| case | metric | " + " | ".join(heads) + " |",
        "|---|---|" + "---|" * len(heads),
    ]
    for case, metric, medians, quotients in summary.rows:
        cells = [_fmt(v) for v in (*medians, *quotients)]
        lines.append(f"| {case} | {metric} | " + " | ".join(cells) + " |")
    runs = len(records)
    bad = [r for r in records if r.get("status") != "ok"]
    rounds = 1 + max((int(r.get("round", 0)) for r in records), default=0)
    lines.append("")
    lines.append(
        f"Medians of {rounds} round(s), {runs} runs; ↑ higher is better, ↓ lower is better."
    )
    clocks = sorted({str(r["latency_clock"]) for r in records if r.get("latency_clock")})
    if clocks:
        lines.append(f"Latency clock: {', '.join(clocks)}.")
    for rec in bad:
        lines.append(
            f"- not counted: {rec['case']} {rec['label']} round {rec['round']}: "
            f"{rec.get('status')} ({rec.get('error')})"
        )
    return "\n".join(lines)


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


# --- command line ----------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m bench compare",
        description="Run two or three Pusher-compatible servers side by side, case by case, "
        "interleaved (A B, B A, ... or with --c: A B C, C B A, ...), with a fresh server per "
        "run; print a Markdown table of medians and write every run as a JSON line.",
        epilog="example:\n"
        '  python -m bench compare --a "bench/servers/soketi/start.sh {port}" --a-label soketi \\\n'
        '    --b "pyserver --host 127.0.0.1 --port {port} --log-level warning '
        '--config bench/servers/pyserver-parity.toml" --b-label pyserver \\\n'
        "    --profile quick --scenarios fanout,http --rounds 3\n\n"
        "profiles: "
        + "; ".join(f"{k}: " + ", ".join(c.name for c in v) for k, v in PROFILES.items()),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--a", help="command starting server A in the foreground; {port} is replaced")
    p.add_argument("--b", help="command starting server B in the foreground; {port} is replaced")
    p.add_argument(
        "--c", help="optional third server C, started like A and B; adds C/A and C/B columns"
    )
    p.add_argument("--a-label", default="A")
    p.add_argument("--b-label", default="B")
    p.add_argument("--c-label", help="label of server C (default C; needs --c)")
    p.add_argument("--profile", choices=sorted(PROFILES), default="quick")
    p.add_argument(
        "--scenarios",
        default="",
        help="comma-separated: fanout, channels, http, client, presence, idle (default: all)",
    )
    p.add_argument("--cases", default="", help="only cases whose name matches this regex")
    p.add_argument("--rounds", type=int, default=3, help="runs per case and server (default 3)")
    p.add_argument("--host", default="127.0.0.1", help="where the servers listen (loopback)")
    p.add_argument("--port", type=int, default=0, help="fixed port (default: a free one per run)")
    p.add_argument("--app-id", default="app-id")
    p.add_argument("--key", default="app-key")
    p.add_argument("--secret", default="app-secret")
    p.add_argument(
        "--pin",
        choices=("auto", "on", "off"),
        default="auto",
        help="server on the first usable CPU, load generator on the others (auto: when 2+)",
    )
    p.add_argument("--start-timeout", type=float, default=START_TIMEOUT_S)
    p.add_argument(
        "--read-timestamps",
        action="store_true",
        help="every run times messages when the generator reads them (passed to each run "
        "alike; default: when the kernel queued them, where the platform has it)",
    )
    p.add_argument("--out", default="bench/results", help="directory for JSONL, table, logs")
    p.add_argument("--list", action="store_true", help="print the cases and exit")
    p.add_argument("--table", metavar="JSONL", help="print the table of an earlier run and exit")
    return p


def main(argv: Sequence[str]) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.table:
        print(markdown_table(read_jsonl(Path(args.table))))
        return 0
    try:
        cases = select_cases(args.profile, args.scenarios, args.cases)
    except (ValueError, re.error) as exc:
        parser.error(str(exc))
    if args.list:
        for case in cases:
            print(f"{case.name:<24} {case.about}")
            print(f"{'':<24} python -m bench {case.scenario} {shlex.join(case.args)}")
        return 0
    if not args.a or not args.b:
        parser.error("--a and --b are required")
    problem = label_problem(args.a_label, args.b_label, args.c, args.c_label)
    if problem:
        print(f"{parser.prog}: error: {problem}", file=sys.stderr)
        return 2
    if not cases:
        parser.error("no case selected")
    if not 1 <= args.rounds <= 20:
        parser.error("--rounds must be in [1, 20]")
    if not 0 <= args.port <= 65535:
        parser.error("--port must be in [0, 65535] (0: a free port per run)")
    if not 1 <= args.start_timeout <= 120:
        parser.error("--start-timeout must be in [1, 120] seconds")
    commands = [("--a", args.a), ("--b", args.b)]
    if args.c is not None:
        commands.append(("--c", args.c))
    for side, command in commands:
        if "{port}" not in command and args.port == 0:
            parser.error(f"{side} needs a {{port}} placeholder (or give a fixed --port)")
    try:
        connect_host = check_target(args.host, args.port or 1, allow_remote=False)
        pins = pin_plan(args.pin)
    except (RemoteTargetRefused, ValueError) as exc:
        parser.error(str(exc))
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S")
    c = Server(args.c_label or "C", args.c) if args.c is not None else None
    labels = [args.a_label, args.b_label] + ([c.label] if c else [])
    out = Path(args.out) / (stamp + "-" + "-vs-".join(_safe(label) for label in labels))
    settings = Settings(
        a=Server(args.a_label, args.a),
        b=Server(args.b_label, args.b),
        host=args.host,
        connect_host=connect_host,
        port=args.port,
        app_id=args.app_id,
        key=args.key,
        secret=args.secret,
        out=out,
        pin=pins is not None,
        start_timeout=args.start_timeout,
        rounds=args.rounds,
        cases=cases,
        extra_args=["--read-timestamps"] if args.read_timestamps else [],
        c=c,
    )
    out.mkdir(parents=True, exist_ok=True)
    jsonl = out.with_suffix(".jsonl")
    sides = tuple(settings.servers)
    total = len(cases) * args.rounds * len(sides)
    pinning = f"server CPU {pins[0]}, load CPU {pins[1]}" if pins else "off"
    print(
        f"compare: {len(cases)} case(s) x {args.rounds} round(s) x {len(sides)} servers = "
        f"{total} runs; pinning {pinning}",
        file=sys.stderr,
    )
    records: list[dict[str, Any]] = []
    done = 0
    with jsonl.open("a") as sink:
        for case in cases:
            for rnd, side in run_order(args.rounds, sides):
                done += 1
                record = run_case(case, side, rnd, settings, pins)
                record["directions"] = {m.name: m.higher_is_better for m in case.metrics}
                records.append(record)
                sink.write(json.dumps(record, default=str) + "\n")
                sink.flush()
                shown = ", ".join(f"{k} {_fmt(v)}" for k, v in record.get("metrics", {}).items())
                print(
                    f"[{done}/{total}] {case.name} {record['label']} r{rnd}: "
                    f"{record.get('status')}"
                    + (f" ({record['error']})" if record.get("error") else "")
                    + (f"  {shown}" if shown else ""),
                    file=sys.stderr,
                )
    table = markdown_table(records)
    table_path = out.with_suffix(".md")
    table_path.write_text(table + "\n")
    print(table)
    print(f"\n  runs:  {jsonl}\n  table: {table_path}")
    return 0 if all(r.get("status") == "ok" for r in records) else 1


def label_problem(a: str, b: str, c_command: str | None, c_label: str | None) -> str | None:
    """Why these labels cannot be used (they name the columns, run directories and records),
    or None."""
    if c_label is not None and c_command is None:
        return "--c-label needs --c (a third server)"
    labels = [("--a-label", a), ("--b-label", b)]
    if c_command is not None:
        labels.append(("--c-label", c_label or "C"))
    for i, (option, label) in enumerate(labels):
        for other, earlier in labels[:i]:
            if label == earlier:
                return f"{other} and {option} are both {label!r}; the labels must differ"
    return None


def _safe(label: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", label)[:40] or "x"
