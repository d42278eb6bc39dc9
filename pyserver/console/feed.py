"""What the debug console shows: a bounded, numbered record of each app's recent events.

Invariants:
- Recording is one tuple appended to a `deque(maxlen=...)`: cheap enough for the hot path of
  client events; nothing is formatted until a page asks.
- Sequence numbers grow across all apps, so a page asks for "everything after N".
- Event data is kept as given and cut to `PREVIEW` characters when served.
"""

from __future__ import annotations

import itertools
import time
from collections import deque
from typing import Any

from pyserver.channels.observer import AppObserver

PREVIEW = 500
Record = tuple[int, float, str, str, str, str]
"""(sequence, unix time, kind, channel, event name, detail)."""


class EventFeed(AppObserver):
    def __init__(self, per_app: int = 1000) -> None:
        self.per_app = per_app
        self._records: dict[str, deque[Record]] = {}
        self._seq = itertools.count(1)

    def _add(self, app_id: str, kind: str, channel: str, event: str, detail: str) -> None:
        records = self._records.get(app_id)
        if records is None:
            records = self._records[app_id] = deque(maxlen=self.per_app)
        records.append((next(self._seq), time.time(), kind, channel, event, detail))

    def since(self, app_id: str, after: int) -> list[dict[str, Any]]:
        return [
            {
                "seq": seq,
                "time": at,
                "kind": kind,
                "channel": channel,
                "event": event,
                "detail": detail[:PREVIEW],
            }
            for seq, at, kind, channel, event, detail in self._records.get(app_id, ())
            if seq > after
        ]

    # --- AppObserver -------------------------------------------------------------------

    def api_event(self, app_id: str, channel: str, event: str, data: str) -> None:
        self._add(app_id, "api", channel, event, data)

    def client_event(
        self,
        app_id: str,
        channel: str,
        event: str,
        data: str,
        socket_id: str,
        user_id: str | None,
    ) -> None:
        who = f"socket {socket_id}" + (f", user {user_id}" if user_id else "")
        self._add(app_id, "client", channel, event, f"{who}: {data}")

    def channel_occupied(self, app_id: str, channel: str) -> None:
        self._add(app_id, "channel", channel, "occupied", "")

    def channel_vacated(self, app_id: str, channel: str) -> None:
        self._add(app_id, "channel", channel, "vacated", "")

    def member_added(self, app_id: str, channel: str, user_id: str) -> None:
        self._add(app_id, "presence", channel, "member_added", user_id)

    def member_removed(self, app_id: str, channel: str, user_id: str) -> None:
        self._add(app_id, "presence", channel, "member_removed", user_id)

    def cache_miss(self, app_id: str, channel: str) -> None:
        self._add(app_id, "channel", channel, "cache_miss", "")

    def subscription_count(self, app_id: str, channel: str, count: int) -> None:
        self._add(app_id, "channel", channel, "subscription_count", str(count))

    def subscriptions_changed(self, app_id: str, channel: str, count: int) -> None:
        self._add(app_id, "subscribe", channel, "subscriptions", str(count))

    def webhook_attempt(self, app_id: str, url: str, body: bytes, outcome: str) -> None:
        self._add(app_id, "webhook", "", outcome, f"{url} {body.decode(errors='replace')}")

    def user_online(self, app_id: str, user_id: str) -> None:
        self._add(app_id, "user", "", "online", user_id)

    def user_offline(self, app_id: str, user_id: str) -> None:
        self._add(app_id, "user", "", "offline", user_id)
