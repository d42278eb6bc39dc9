"""Turning a run's `Outcome` into a JSON result, a PNG chart and a short text summary.

The chart has three panels: throughput per second over time, the primary latency's
p50/p90/p99 per second over time, and its overall percentile curve. matplotlib (Agg backend)
is imported only when a chart is drawn; without it the JSON is still written.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import sys
from pathlib import Path
from typing import Any

from bench.metrics import Merged
from bench.rss import kb_per_connection
from bench.runner import Outcome
from bench.stats import percentiles_by_bucket, summarize

SERIES_SHOWN = (
    "sent",
    "accepted",
    "delivered",
    "connected",
    "joins",
    "member_added",
    "member_removed",
    "rate_limited",
    "http_errors",
    "rejected",
    "connect_failed",
    "disconnects",
)


def latency_summaries(merged: Merged) -> dict[str, dict[str, Any]]:
    """Per latency stream: count/mean/min/p50/p90/p99/p999/max in ms, and sampling info."""
    out: dict[str, dict[str, Any]] = {}
    for name, values in merged.values_us.items():
        summary: dict[str, Any] = dict(summarize(values, scale=1000.0))
        summary["seen"] = merged.seen.get(name, len(values))
        summary["sampled"] = merged.sampled(name)
        out[name] = summary
    return out


def build_result(outcome: Outcome, started_at: dt.datetime) -> dict[str, Any]:
    """The JSON-able result of a run."""
    cfg, merged, driver = outcome.cfg, outcome.merged, outcome.driver
    primary = driver.primary_latency
    series = {k: v for k, v in merged.series.items() if k in SERIES_SHOWN or k.startswith("http_")}
    length = max((len(v) for v in series.values()), default=0)
    # Bucket i covers [i, i+1) seconds after the start; t is its middle, for plotting.
    timeseries: dict[str, Any] = {"bucket_s": 1.0, "t": [i + 0.5 for i in range(length)]}
    timeseries["counts"] = {k: v + [0] * (length - len(v)) for k, v in sorted(series.items())}
    timeseries["latency_ms"] = {
        name: percentiles_by_bucket(
            merged.offsets_ms.get(name, []), merged.values_us.get(name, []), scale=1000.0
        )
        for name in merged.values_us
    }
    rss = outcome.rss_kb
    per_conn = kb_per_connection(rss.get("start"), rss.get("end"), outcome.live_at_end)
    return {
        "tool": "bench",
        "format": 1,
        "scenario": cfg.scenario,
        "label": cfg.label,
        "run_id": cfg.run_id,
        "started_at": started_at.isoformat(timespec="seconds"),
        "status": outcome.status,
        "abort_reason": outcome.abort_reason,
        "config": cfg.public(),
        "environment": {
            "python": sys.version.split()[0],
            "platform": platform.platform(),
            "cpu_count": os.cpu_count(),
            "processes": outcome.nproc,
            "uvloop": _has("uvloop"),
            "orjson": _has("orjson"),
        },
        "timing_s": {
            "setup": round(outcome.setup_s, 3),
            "measured": round(outcome.measured_s, 3),
            "drain": round(outcome.drain_s, 3),
        },
        "summary": driver.summary(merged, outcome.measured_s, outcome.drain_s),
        "primary_latency": primary,
        "latency_clock": cfg.latency_clock,
        "latency_ms": latency_summaries(merged),
        "counters": dict(sorted(merged.counters.items())),
        "timeseries": timeseries,
        "server": {
            "pid": cfg.server_pid,
            "rss_kb": rss,
            "connections_at_end": outcome.live_at_end,
            "rss_kb_per_connection": per_conn,
            "cpu_s": outcome.server_cpu_s,
            "cpu_us_per_op": _cpu_per_op(outcome.server_cpu_s, merged.counters),
        },
        "errors": outcome.errors,
        "error_samples": outcome.error_samples,
        "workers": outcome.workers,
    }


def output_paths(out_dir: str | os.PathLike[str], result: dict[str, Any]) -> tuple[Path, Path]:
    """`<out>/<UTC time>-<scenario>-<run id>.json` and the matching `.png`."""
    stamp = result["started_at"].replace(":", "").replace("-", "")[:15]
    base = Path(out_dir) / f"{stamp}-{result['scenario']}-{result['run_id']}"
    return base.with_suffix(".json"), base.with_suffix(".png")


def write_json(result: dict[str, Any], path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2, default=str) + "\n")
    return path


def write_chart(result: dict[str, Any], path: Path) -> Path | None:
    """Draw the PNG; None (with a note on stderr) when matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print(
            "bench: matplotlib is not installed; no chart (pip install -e '.[bench]')",
            file=sys.stderr,
        )
        return None
    ts = result["timeseries"]
    primary = result["primary_latency"]
    fig, axes = plt.subplots(3, 1, figsize=(10, 11))
    title = "  ".join(x for x in (result["scenario"], result["label"], result["started_at"]) if x)
    fig.suptitle(f"{title}\n{_headline(result)}", fontsize=10)

    ax = axes[0]
    shown = {name: counts for name, counts in ts["counts"].items() if any(counts)}
    top = max((max(c) for c in shown.values()), default=0)
    small = {n: c for n, c in shown.items() if max(c) * 10 < top}  # e.g. triggers vs deliveries
    for name, counts in shown.items():
        if name not in small:
            ax.plot(ts["t"], counts, label=name, marker=".", linewidth=1)
    ax.set_title("throughput (per second)")
    ax.set_xlabel("seconds since start")
    ax.set_ylabel("count / s")
    ax.grid(alpha=0.3)
    handles, labels = ax.get_legend_handles_labels()
    if small:
        right = ax.twinx()
        for i, (name, counts) in enumerate(small.items()):
            right.plot(
                ts["t"],
                counts,
                label=f"{name} (right axis)",
                marker="x",
                linestyle="--",
                linewidth=1,
                color=f"C{len(shown) - len(small) + i}",
            )
        right.set_ylabel("count / s (right)")
        more_handles, more_labels = right.get_legend_handles_labels()
        handles, labels = handles + more_handles, labels + more_labels
    if handles:
        ax.legend(handles, labels, fontsize=8, loc="best")

    ax = axes[1]
    rows = ts["latency_ms"].get(primary, [])
    if rows:
        t = [r["t"] for r in rows]
        for q in ("p50", "p90", "p99"):
            ax.plot(t, [r[q] for r in rows], label=q, marker=".", linewidth=1)
        ax.legend(fontsize=8, loc="best")
    ax.set_title(f"{primary} latency per second (ms)")
    ax.set_xlabel("seconds since start")
    ax.set_ylabel("ms")
    ax.grid(alpha=0.3)

    ax = axes[2]
    summary = result["latency_ms"].get(primary, {})
    if summary.get("count"):
        labels = ["p50", "p90", "p99", "p999", "max"]
        values = [summary[k] for k in labels]
        bars = ax.bar(labels, values, color="#4c72b0")
        for bar, value in zip(bars, values, strict=True):
            ax.annotate(
                f"{value:.2f}",
                (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                ha="center",
                va="bottom",
                fontsize=8,
            )
        ax.set_yscale("log" if values[-1] > 20 * max(values[0], 1e-3) else "linear")
    ax.set_title(f"{primary} latency percentiles, whole run (ms)")
    ax.set_ylabel("ms")
    ax.grid(alpha=0.3, axis="y")

    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def format_summary(result: dict[str, Any]) -> str:
    """A few lines for the terminal."""
    lines = [f"scenario {result['scenario']}: {result['status']}"]
    if result["abort_reason"]:
        lines[0] += f" ({result['abort_reason']})"
    timing = result["timing_s"]
    lines.append(
        f"  processes {result['environment']['processes']}  setup {timing['setup']:.1f}s  "
        f"measured {timing['measured']:.1f}s  drain {timing['drain']:.1f}s"
    )
    for key, value in result["summary"].items():
        lines.append(f"  {key:<20} {_fmt(value)}")
    if any(s.get("count") for s in result["latency_ms"].values()):
        lines.append(f"  latency clock        {result.get('latency_clock', 'read')}")
    for name, s in result["latency_ms"].items():
        if s.get("count"):
            lines.append(
                f"  latency {name:<12} p50 {s['p50']:.2f}  p90 {s['p90']:.2f}  "
                f"p99 {s['p99']:.2f}  p999 {s['p999']:.2f}  max {s['max']:.2f} ms"
                f"  (n={s['seen']}{', sampled' if s['sampled'] else ''})"
            )
    server = result["server"]
    if server["pid"] is not None:
        lines.append(
            f"  server rss kB        start {server['rss_kb'].get('start')}  "
            f"ready {server['rss_kb'].get('ready')}  end {server['rss_kb'].get('end')}  "
            f"per connection {_fmt(server['rss_kb_per_connection'])}"
        )
    if result["errors"]:
        lines.append(f"  errors               {result['errors']}")
        for sample in result["error_samples"][:3]:
            lines.append(f"    {sample}")
    return "\n".join(lines)


HEADLINE_KEYS = (
    "ratio",
    "subscribers",
    "channels",
    "pairs",
    "connections",
    "connected",
    "failed",
    "trigger_rate",
    "delivery_rate",
    "request_rate",
    "connect_rate",
    "join_rate",
)


def _headline(result: dict[str, Any]) -> str:
    s = result["summary"]
    parts = [f"{k}={_fmt(s[k])}" for k in HEADLINE_KEYS if k in s]
    parts.append(f"processes={result['environment']['processes']}")
    return "  ".join(parts)


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4f}" if value < 10 else f"{value:,.1f}"
    return str(value)


def _has(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


def _cpu_per_op(cpu_s: float | None, counters: dict[str, int]) -> float | None:
    """The server's CPU microseconds per operation of the measured phase and drain: per
    accepted trigger (trigger-based scenarios) or per delivered client event. Unlike the
    rates, it leaves out the time the server waited for a core it shares."""
    ops = counters.get("accepted") or counters.get("delivered")
    if cpu_s is None or not ops:
        return None
    return round(cpu_s * 1e6 / ops, 2)
