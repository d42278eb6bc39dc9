"""Prometheus metrics, rendered as text on a separate port (default 9601).

Names follow soketi's (`connected`, `new_connections_total`, `ws_messages_sent_total`, …)
behind a configurable prefix, so a soketi dashboard keeps working with `metrics_prefix =
"soketi_"`. Every per-app series carries an `app_id` label.

Invariants:
- Counting costs the hot path a plain integer add: counters are attributes of `AppStats`
  (one per app) and `ServerStats`, bumped once per broadcast, not once per recipient.
- Nothing is formatted until a scrape asks; a scrape reads the counters and the adapter,
  webhook and process state of that moment.
"""

from __future__ import annotations

import asyncio
import bisect
import os
import resource
from collections.abc import Callable, Mapping
from dataclasses import fields

from pyserver.apps.directory import AppDirectory
from pyserver.channels.app import App
from pyserver.cluster.adapter import Adapter
from pyserver.history.live import NodeHistory
from pyserver.stats import AppStats
from pyserver.webhooks.dispatcher import WebhookDispatcher

_COUNTER_HELP = {
    "new_connections_total": "WebSocket connections opened",
    "new_disconnections_total": "WebSocket connections closed",
    "ws_messages_received_total": "WebSocket messages received from clients",
    "ws_messages_sent_total": "WebSocket messages sent to clients",
    "socket_received_bytes": "Bytes received on WebSocket connections",
    "socket_transmitted_bytes": "Bytes sent on WebSocket connections",
    "http_calls_received_total": "HTTP API calls received",
    "http_received_bytes": "Bytes of HTTP API request bodies",
    "http_transmitted_bytes": "Bytes of HTTP API responses",
    "broadcasts_total": "Messages published to a channel (each counted once)",
    "http_rate_limited_total": "HTTP API calls refused with 429 by the app's rate limits",
}


class LatencyHistogram:
    """A fixed-bucket histogram of seconds, cheap to observe (one bisect, one add)."""

    BOUNDS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)

    __slots__ = ("counts", "sum", "total")

    def __init__(self) -> None:
        self.counts = [0] * (len(self.BOUNDS) + 1)
        self.total = 0
        self.sum = 0.0

    def observe(self, seconds: float) -> None:
        self.counts[bisect.bisect_left(self.BOUNDS, seconds)] += 1
        self.total += 1
        self.sum += seconds


class Metrics:
    """The Prometheus renderer. It is given what it reads, never the server."""

    def __init__(
        self,
        prefix: str,
        apps: Mapping[str, App],
        adapter: Adapter,
        started_at: float,
        webhooks: Callable[[], WebhookDispatcher | None],
        history: NodeHistory | None = None,
    ) -> None:
        self.prefix = prefix
        self.apps = apps
        self.adapter = adapter
        self.started_at = started_at
        self.webhooks = webhooks
        """The webhook dispatcher once started (it starts after the metrics exist)."""
        self.history = history
        self.app_store: AppDirectory | None = None
        """With a database app store, its directory (set by the server)."""
        self.broadcast_latency = LatencyHistogram()
        """Seconds from an HTTP trigger's arrival to its frames being handed to the kernel."""

    def render(self) -> bytes:
        p = self.prefix
        out: list[str] = []

        def family(name: str, kind: str, help_text: str) -> None:
            out.append(f"# HELP {p}{name} {help_text}")
            out.append(f"# TYPE {p}{name} {kind}")

        apps = self.apps
        family("connected", "gauge", "WebSocket connections open now")
        for app_id, app in apps.items():
            out.append(f'{p}connected{{app_id="{_label(app_id)}"}} {len(app.clients)}')
        for field in fields(AppStats):
            kind = "counter"
            family(field.name, kind, _COUNTER_HELP[field.name])
            for app_id, app in apps.items():
                value = getattr(app.stats, field.name)
                out.append(f'{p}{field.name}{{app_id="{_label(app_id)}"}} {value}')
        family("channels", "gauge", "Channels with a subscriber on this node")
        for app_id, app in apps.items():
            out.append(f'{p}channels{{app_id="{_label(app_id)}"}} {len(app.registry.channels)}')

        histogram = self.broadcast_latency
        family(
            "broadcast_latency_seconds",
            "histogram",
            "From an HTTP trigger's arrival to its frames being written",
        )
        cumulative = 0
        for bound, count in zip(histogram.BOUNDS, histogram.counts, strict=False):
            cumulative += count
            out.append(f'{p}broadcast_latency_seconds_bucket{{le="{bound}"}} {cumulative}')
        out.append(f'{p}broadcast_latency_seconds_bucket{{le="+Inf"}} {histogram.total}')
        out.append(f"{p}broadcast_latency_seconds_sum {histogram.sum:.6f}")
        out.append(f"{p}broadcast_latency_seconds_count {histogram.total}")

        webhooks = self.webhooks()
        family("webhook_queue_depth", "gauge", "Webhook deliveries queued, in flight or waiting")
        out.append(f"{p}webhook_queue_depth {webhooks.sender.pending if webhooks else 0}")
        stats = webhooks.sender.stats if webhooks else None
        for name, attr, help_text in (
            ("webhook_deliveries_total", "delivered", "Webhook requests answered with 2xx"),
            ("webhook_failures_total", "failed_attempts", "Webhook attempts that failed"),
            ("webhook_dropped_total", "dropped_expired", "Webhooks dropped after retrying"),
            ("webhook_overflow_total", "dropped_overflow", "Webhooks dropped: queue full"),
        ):
            family(name, "counter", help_text)
            out.append(f"{p}{name} {getattr(stats, attr) if stats else 0}")

        if self.history is not None:
            self._render_history(self.history, family, out)

        family("adapter_healthy", "gauge", "1 when the cluster adapter reaches its engine")
        out.append(f"{p}adapter_healthy {int(self.adapter.healthy)}")
        directory = self.app_store
        if directory is not None:
            family("app_store_healthy", "gauge", "1 when the app store answered its last read")
            out.append(f"{p}app_store_healthy {int(directory.healthy)}")
            family("app_store_apps", "gauge", "Apps of the app store known to this node")
            out.append(f"{p}app_store_apps {len(directory.apps)}")
            family("app_store_queries_total", "counter", "Statements sent to the app store")
            out.append(f"{p}app_store_queries_total {directory.store.queries}")
            family("app_store_lookups_total", "counter", "Lookups of unknown app keys and ids")
            out.append(f"{p}app_store_lookups_total {directory.lookups}")
        family("process_resident_memory_bytes", "gauge", "Resident memory of this process")
        out.append(f"{p}process_resident_memory_bytes {resident_bytes()}")
        usage = resource.getrusage(resource.RUSAGE_SELF)
        family("process_cpu_seconds_total", "counter", "User and system CPU time")
        out.append(f"{p}process_cpu_seconds_total {usage.ru_utime + usage.ru_stime:.3f}")
        family("process_start_time_seconds", "gauge", "Start time of the process (unix)")
        out.append(f"{p}process_start_time_seconds {self.started_at:.3f}")
        return ("\n".join(out) + "\n").encode()

    def _render_history(
        self, history: NodeHistory, family: Callable[[str, str, str], None], out: list[str]
    ) -> None:
        """This node's history counters (docs/history.md); the store's size only for the
        in-memory store (Redis keeps it for the whole cluster)."""
        p = self.prefix
        store = history.store
        rows: list[tuple[str, str, str, int]] = [
            (
                "history_events_stored_total",
                "counter",
                "Events this node stored in channel history",
                getattr(store, "events_stored_total", 0),
            ),
            (
                "history_catch_ups_total",
                "counter",
                "Returning subscriptions that got everything they missed",
                history.catch_ups_total,
            ),
            (
                "history_recovery_failed_total",
                "counter",
                "Subscriptions told pusher:recovery_failed (all of them while the store is down)",
                history.recovery_failed_total,
            ),
        ]
        memory = history.memory
        if memory is not None:
            rows += [
                ("history_events", "gauge", "Events held in this node's history", memory.events),
                ("history_channels", "gauge", "Channels with history here", memory.channels),
                ("history_bytes", "gauge", "Estimated bytes of this node's history", memory.bytes),
                (
                    "history_evicted_channels_total",
                    "counter",
                    "Channels evicted whole by history_max_memory_mb",
                    memory.evicted_channels_total,
                ),
                (
                    "history_evicted_events_total",
                    "counter",
                    "Events evicted by history_max_memory_mb",
                    memory.evicted_events_total,
                ),
                (
                    "history_expired_events_total",
                    "counter",
                    "Events purged after their ttl",
                    memory.expired_events_total,
                ),
            ]
        for name, kind, help_text, value in rows:
            family(name, kind, help_text)
            out.append(f"{p}{name} {value}")

    async def serve(self, host: str, port: int) -> asyncio.Server:
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                request = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
                path = request.split(b" ", 2)[1] if request.count(b" ") >= 2 else b""
                if path.split(b"?")[0] == b"/metrics":
                    body, status = self.render(), b"200 OK"
                else:
                    body, status = b"Not found: try /metrics\n", b"404 Not Found"
                writer.write(
                    b"HTTP/1.1 " + status + b"\r\nContent-Type: text/plain; version=0.0.4\r\n"
                    b"Content-Length: " + str(len(body)).encode() + b"\r\n"
                    b"Connection: close\r\n\r\n" + body
                )
                await writer.drain()
            except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError):
                pass
            finally:
                writer.close()

        return await asyncio.start_server(handle, host, port)


def resident_bytes() -> int:
    try:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
