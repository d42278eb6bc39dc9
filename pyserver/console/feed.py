"""What the debug console shows: a bounded, numbered record of each app's recent events.

`EventFeed` is an `AppObserver`: it records HTTP API triggers, client events, occupancy,
presence, cache misses, subscription counts, user sign-in presence and webhook attempts,
and serves them as JSON-ready dicts to the console's state endpoint.

Invariants:
- Recording is one flat tuple of the arguments as given appended to a
  `deque(maxlen=per_app)`: cheap enough for the hot path of client events. Nothing is
  formatted, decoded or copied until a page asks (`since`).
- Sequence numbers grow across all apps and never repeat within a process, so a page asks
  for "everything after N"; `last_seq` lets it notice a restarted server (a smaller number).
- Event data is kept as given and cut to `PREVIEW` characters when served.
- Each app's records also have a position in the app (1, 2, 3 ... never reused within a
  process): `added[app]` counts what was ever recorded, so the ring holds positions
  `added - len(ring) + 1` to `added`, and `after(app, position)` tells how many were dropped
  from the ring in between. The console's event stream (`stream.py`) uses them as ids.
- What is recorded is this node's view: on a cluster, an API trigger or a client event is
  seen by the node that received it (the stream gathers every node's, `cluster_feed.py`).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping
from itertools import islice
from time import time as _now
from typing import TYPE_CHECKING, Any, Protocol

import orjson

from pyserver.channels.observer import AppObserver

if TYPE_CHECKING:
    from pyserver.channels.app import App

PREVIEW = 500
"""Characters of event data (or webhook body) sent to the page per event."""

Record = tuple[int, float, str, str, str, str | bytes, str | None, str | None]
"""(sequence, unix time, kind, channel, event name, data, origin, user id).

`origin` is the sending socket id for client events and the target URL for webhooks."""


class ConsoleFeed(Protocol):
    """What the console's streams read of the console (`Console` is one): its apps and its
    feed. A protocol, so that `live.py` and `cluster_feed.py` need not import `console.py`,
    which imports them."""

    @property
    def apps(self) -> Mapping[str, App]: ...

    @property
    def added(self) -> dict[str, int]: ...

    def after(
        self, app_id: str, position: int, upto: int | None = None
    ) -> tuple[int, list[Any]]: ...


class EventFeed(AppObserver):
    def __init__(self, per_app: int = 1000) -> None:
        self.per_app = per_app
        self._records: dict[str, deque[Record]] = {}
        self.last_seq = 0
        self.added: dict[str, int] = {}
        """App id -> how many records it ever had (the position of its newest)."""

    def _add(
        self,
        app_id: str,
        kind: str,
        channel: str,
        event: str,
        data: str | bytes = "",
        origin: str | None = None,
        user_id: str | None = None,
    ) -> None:
        records = self._records.get(app_id) or self._ring(app_id)
        self.last_seq = seq = self.last_seq + 1
        records.append((seq, _now(), kind, channel, event, data, origin, user_id))
        self.added[app_id] += 1

    def _ring(self, app_id: str) -> deque[Record]:
        records = self._records.get(app_id)
        if records is None:
            records = self._records[app_id] = deque(maxlen=self.per_app)
            self.added[app_id] = 0
        return records

    def after(self, app_id: str, position: int, upto: int | None = None) -> tuple[int, list[Any]]:
        """(dropped, entries): the app's entries at positions above `position` up to `upto`
        (default: the newest), served, oldest first, each with its `position`; `dropped`
        says how many of those positions the ring no longer holds."""
        records = self._records.get(app_id)
        added = self.added.get(app_id, 0)
        last = added if upto is None else min(upto, added)
        if records is None or last <= position:
            return 0, []
        first_held = added - len(records) + 1
        start = max(position + 1, first_held)
        dropped = start - (position + 1)
        entries = []
        held = islice(records, start - first_held, last - first_held + 1)
        for position, record in enumerate(held, start):
            served = _served(record)
            served["position"] = position
            entries.append(served)
        return dropped, entries

    def since(self, app_id: str, after: int) -> list[dict[str, Any]]:
        """The app's recorded events with a sequence number above `after`, oldest first."""
        records = self._records.get(app_id)
        if not records:
            return []
        newer: list[Record] = []
        for record in reversed(records):  # newest first: stop at the first one already seen
            if record[0] <= after:
                break
            newer.append(record)
        newer.reverse()
        return [_served(record) for record in newer]

    # --- AppObserver -------------------------------------------------------------------

    def api_event(self, app_id: str, channel: str, event: str, data: str) -> None:
        # `_add`, inlined: one call less on every channel of every trigger.
        records = self._records.get(app_id) or self._ring(app_id)
        self.last_seq = seq = self.last_seq + 1
        records.append((seq, _now(), "api", channel, event, data, None, None))
        self.added[app_id] += 1

    def client_event(
        self,
        app_id: str,
        channel: str,
        event: str,
        data: str,
        socket_id: str,
        user_id: str | None,
    ) -> None:
        # `_add`, inlined: this runs once per relayed client event
        records = self._records.get(app_id) or self._ring(app_id)
        self.last_seq = seq = self.last_seq + 1
        records.append((seq, _now(), "client", channel, event, data, socket_id, user_id))
        self.added[app_id] += 1

    def channel_occupied(self, app_id: str, channel: str) -> None:
        self._add(app_id, "channel", channel, "occupied")

    def channel_vacated(self, app_id: str, channel: str) -> None:
        self._add(app_id, "channel", channel, "vacated")

    def member_added(self, app_id: str, channel: str, user_id: str) -> None:
        self._add(app_id, "presence", channel, "member_added", "", None, user_id)

    def member_removed(self, app_id: str, channel: str, user_id: str) -> None:
        self._add(app_id, "presence", channel, "member_removed", "", None, user_id)

    def cache_miss(self, app_id: str, channel: str) -> None:
        self._add(app_id, "channel", channel, "cache_miss")

    def subscription_count(self, app_id: str, channel: str, count: int) -> None:
        self._add(app_id, "channel", channel, "subscription_count", str(count))

    def subscriptions_changed(self, app_id: str, channel: str, count: int) -> None:
        self._add(app_id, "subscribe", channel, "subscriptions", str(count))

    def user_online(self, app_id: str, user_id: str) -> None:
        self._add(app_id, "user", "", "online", "", None, user_id)

    def user_offline(self, app_id: str, user_id: str) -> None:
        self._add(app_id, "user", "", "offline", "", None, user_id)

    # --- webhook deliveries (told by the sender, off the hot path) ------------------------

    def webhook_attempt(self, app_id: str, url: str, body: bytes, outcome: str) -> None:
        """One delivery attempt of a webhook body to `url`: "delivered" or what failed.

        Served with the body's channels as `channel`, its event names as `event`, and
        `outcome`, `url` and the body (`data`)."""
        self._add(app_id, "webhook", "", outcome, body, url)


def _served(record: Record) -> dict[str, Any]:
    seq, at, kind, channel, event, data, origin, user_id = record
    served: dict[str, Any] = {"seq": seq, "time": at, "kind": kind, "channel": channel}
    if isinstance(data, bytes):  # a webhook attempt: name what the body is about
        channels, names = _webhook_summary(data)
        served["channel"] = ", ".join(channels)
        served["event"] = ", ".join(names) or "webhook"
        served["outcome"] = event
        served["url"] = origin
        served["data"] = data[: PREVIEW * 2].decode(errors="replace")[:PREVIEW]
        return served
    served["event"] = event
    served["data"] = data[:PREVIEW]
    if origin is not None:
        served["socket_id"] = origin
    if user_id is not None:
        served["user_id"] = user_id
    return served


def _webhook_summary(body: bytes) -> tuple[list[str], list[str]]:
    """The distinct channels and event names in a webhook body, in order."""
    try:
        events = orjson.loads(body).get("events", [])
    except (orjson.JSONDecodeError, AttributeError):
        return [], []
    channels: dict[str, None] = {}
    names: dict[str, None] = {}
    for event in events if isinstance(events, list) else ():
        if not isinstance(event, dict):
            continue
        if isinstance(event.get("channel"), str):
            channels[event["channel"]] = None
        if isinstance(event.get("name"), str):
            names[event["name"]] = None
    return list(channels), list(names)
