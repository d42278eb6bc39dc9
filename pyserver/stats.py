"""The counters the data plane bumps: one `AppStats` per app.

Bottom floor: the registry, the app, the HTTP plumbing and the transport bump these, and the
metrics renderer and the console read them, so they live below all of those.

Invariants:
- Counting costs a plain integer add on a slotted object: no lock, no formatting.
- Counters only grow (they are Prometheus counters); gauges are computed at scrape time.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(slots=True)
class AppStats:
    """Counters of one app, bumped by the transport and the registry."""

    new_connections_total: int = 0
    new_disconnections_total: int = 0
    ws_messages_received_total: int = 0
    ws_messages_sent_total: int = 0
    socket_received_bytes: int = 0
    socket_transmitted_bytes: int = 0
    http_calls_received_total: int = 0
    http_received_bytes: int = 0
    http_transmitted_bytes: int = 0
    broadcasts_total: int = 0
    http_rate_limited_total: int = 0
