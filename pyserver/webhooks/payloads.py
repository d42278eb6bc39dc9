"""The exact webhook JSON and headers (`spec/protocol.md` §12), sans-I/O.

Invariants:
- Body: `{"time_ms": <creation time in unix ms>, "events": [...]}`; `time_ms` is fixed when
  the delivery is created and never changes on retries.
- Headers: `X-Pusher-Key` (the app key), `X-Pusher-Signature` (hex HMAC-SHA256 of the exact
  body bytes with the app secret), `Content-Type: application/json`, then the target's own.
- Event shapes are hosted Pusher's, field for field.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import orjson

from pyserver.auth.signatures import webhook_signature

WebhookEvent = dict[str, Any]


def channel_event(name: str, channel: str) -> WebhookEvent:
    """`{"name":"channel_occupied","channel":c}`, likewise `channel_vacated`, `cache_miss`."""
    return {"name": name, "channel": channel}


def member_event(name: str, channel: str, user_id: str) -> WebhookEvent:
    """`{"name":"member_added","channel":c,"user_id":u}`, likewise `member_removed`."""
    return {"name": name, "channel": channel, "user_id": user_id}


def client_event(
    channel: str, event: str, data: str, socket_id: str, user_id: str | None
) -> WebhookEvent:
    """`{"name":"client_event","channel":c,"event":e,"data":d,"socket_id":s[,"user_id":u]}`."""
    body: WebhookEvent = {
        "name": "client_event",
        "channel": channel,
        "event": event,
        "data": data,
        "socket_id": socket_id,
    }
    if user_id is not None:
        body["user_id"] = user_id
    return body


def subscription_count(channel: str, count: int) -> WebhookEvent:
    """`{"name":"subscription_count","channel":c,"subscription_count":n}`."""
    return {"name": "subscription_count", "channel": channel, "subscription_count": count}


def user_event(name: str, user_id: str) -> WebhookEvent:
    """Extension: `{"name":"user_online","user_id":u}`, likewise `user_offline`."""
    return {"name": name, "user_id": user_id}


def body(time_ms: int, events: Sequence[WebhookEvent]) -> bytes:
    return orjson.dumps({"time_ms": time_ms, "events": list(events)})


def headers(app_key: str, secret: str, raw_body: bytes, extra: Mapping[str, str]) -> dict[str, str]:
    return {
        "Content-Type": "application/json",
        "X-Pusher-Key": app_key,
        "X-Pusher-Signature": webhook_signature(secret, raw_body),
        **extra,
    }
