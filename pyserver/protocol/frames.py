"""Every server-to-client Pusher message, built in one place (design rule 2).

Each builder returns the UTF-8 JSON payload as `bytes`, ready to be wrapped in one WebSocket
frame and written to any number of connections. The docstrings show the exact JSON.

Invariants (`spec/protocol.md` §3-§4):
- `data` is a JSON-encoded *string* for `pusher:connection_established`, every
  `pusher_internal:*` event and every channel event.
- `data` is an *object* for `pusher:error`, `pusher:signin_success` and `pusher:pong`.
- Keys appear in the order `event`, `channel`, `data`, `user_id`.
- Nothing outside this module writes a `pusher:` or `pusher_internal:` string to the wire.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import orjson

from pyserver.protocol.errors import PusherError, SubscriptionError

# Event names the server receives. They are parsed in `commands.py`.
PING = "pusher:ping"
PONG = "pusher:pong"
SUBSCRIBE = "pusher:subscribe"
UNSUBSCRIBE = "pusher:unsubscribe"
SIGNIN = "pusher:signin"
RESUME = "pusher:resume"
CLIENT_EVENT_PREFIX = "client-"

_dumps = orjson.dumps


def _json_str(value: Any) -> str:
    return _dumps(value).decode()


def connection_established(socket_id: str, activity_timeout: int) -> bytes:
    """`{"event":"pusher:connection_established","data":"{\\"socket_id\\":\\"123.456\\",\\"activity_timeout\\":30}"}`"""
    data = _json_str({"socket_id": socket_id, "activity_timeout": activity_timeout})
    return _dumps({"event": "pusher:connection_established", "data": data})


def error(message: str, code: int | None) -> bytes:
    """`{"event":"pusher:error","data":{"message":"...","code":4301}}` (`code` may be null)."""
    return _dumps({"event": "pusher:error", "data": {"message": message, "code": code}})


PONG_FRAME = b'{"event":"pusher:pong","data":{}}'
"""`{"event":"pusher:pong","data":{}}`, the answer to `pusher:ping`."""

PING_FRAME = b'{"event":"pusher:ping","data":{}}'
"""`{"event":"pusher:ping","data":{}}`, a server-initiated ping."""


def subscription_succeeded(channel: str) -> bytes:
    """`{"event":"pusher_internal:subscription_succeeded","channel":"x","data":"{}"}`"""
    return _dumps(
        {"event": "pusher_internal:subscription_succeeded", "channel": channel, "data": "{}"}
    )


def presence_subscription_succeeded(channel: str, members: Mapping[str, Any]) -> bytes:
    """`{"event":"pusher_internal:subscription_succeeded","channel":"presence-x",
    "data":"{\\"presence\\":{\\"ids\\":[\\"1\\"],\\"hash\\":{\\"1\\":{...}},\\"count\\":1}}"}`

    `members` maps each distinct user id to its `user_info` (already parsed JSON or None).
    """
    presence = {"ids": list(members), "hash": dict(members), "count": len(members)}
    return _dumps(
        {
            "event": "pusher_internal:subscription_succeeded",
            "channel": channel,
            "data": _json_str({"presence": presence}),
        }
    )


def member_added(channel: str, user_id: str, user_info: Any) -> bytes:
    """`{"event":"pusher_internal:member_added","channel":"presence-x","data":"{\\"user_id\\":\\"1\\",\\"user_info\\":{...}}"}`"""
    data = _json_str({"user_id": user_id, "user_info": user_info})
    return _dumps({"event": "pusher_internal:member_added", "channel": channel, "data": data})


def member_removed(channel: str, user_id: str) -> bytes:
    """`{"event":"pusher_internal:member_removed","channel":"presence-x","data":"{\\"user_id\\":\\"1\\"}"}`"""
    data = _json_str({"user_id": user_id})
    return _dumps({"event": "pusher_internal:member_removed", "channel": channel, "data": data})


def subscription_count(channel: str, count: int) -> bytes:
    """`{"event":"pusher_internal:subscription_count","channel":"x","data":"{\\"subscription_count\\":3}"}`"""
    data = _json_str({"subscription_count": count})
    return _dumps({"event": "pusher_internal:subscription_count", "channel": channel, "data": data})


def cache_miss(channel: str) -> bytes:
    """`{"event":"pusher:cache_miss","channel":"cache-x"}`"""
    return _dumps({"event": "pusher:cache_miss", "channel": channel})


def signin_success(user_data: str) -> bytes:
    """`{"event":"pusher:signin_success","data":{"user_data":"{\\"id\\":\\"42\\"}"}}`"""
    return _dumps({"event": "pusher:signin_success", "data": {"user_data": user_data}})


def watchlist_events(events: Iterable[tuple[str, list[str]]]) -> bytes:
    """`{"event":"pusher_internal:watchlist_events","data":"{\\"events\\":[{\\"name\\":\\"online\\",\\"user_ids\\":[\\"2\\"]}]}"}`

    The shape pusher-js `watchlist.ts` reads; `events` are (`online`|`offline`, user ids).
    """
    data = _json_str({"events": [{"name": n, "user_ids": ids} for n, ids in events]})
    return _dumps({"event": "pusher_internal:watchlist_events", "data": data})


def subscription_error(channel: str, error_type: str, message: str, status: int) -> bytes:
    """`{"event":"pusher:subscription_error","channel":"private-x",
    "data":{"type":"AuthError","error":"...","status":401}}`

    Not sent by hosted Pusher; pusher-js dispatches it to the channel's listeners and Laravel
    Echo's `.error()` binds to it, so a refused subscribe is visible where the app listens.
    """
    return _dumps(
        {
            "event": "pusher:subscription_error",
            "channel": channel,
            "data": {"type": error_type, "error": message, "status": status},
        }
    )


def channel_event(event: str, channel: str, data: str, user_id: str | None = None) -> bytes:
    """`{"event":"my-event","channel":"x","data":"<string>"}`, plus `"user_id":"1"` for client
    events on presence channels. `data` is sent verbatim as a JSON string.
    """
    if user_id is None:
        return _dumps({"event": event, "channel": channel, "data": data})
    return _dumps({"event": event, "channel": channel, "data": data, "user_id": user_id})


def recovery_failed(channel: str, reason: str) -> bytes:
    """`{"event":"pusher:recovery_failed","channel":"chat-1","data":"{\\"reason\\":\\"limit\\"}"}`

    History catch-up (docs/history.md): part of what a returning subscription missed is no
    longer stored (`reason`: limit, ttl, epoch, evicted or window), so none of it is sent; the
    rewind follows. pusher-js hands `pusher:` events to the channel's listeners.
    """
    data = _json_str({"reason": reason})
    return _dumps({"event": "pusher:recovery_failed", "channel": channel, "data": data})


def resume_token(token: str) -> bytes:
    """`{"event":"pusher_internal:resume_token","data":"{\\"token\\":\\"...\\"}"}`

    Sent after `connection_established` on apps with history: the anonymous resume snippet
    reads it with `pusher.connection.bind('message')` and sends it back in `pusher:resume`.
    """
    return _dumps({"event": "pusher_internal:resume_token", "data": _json_str({"token": token})})


def kicked(channel: str, reason: str) -> bytes:
    """`{"event":"pusher:subscription_error","channel":"x","data":{"type":"Kicked",
    "error":"<reason>","status":410}}`: the server removed this connection from the channel
    (the kick extension). pusher-js emits it to the channel's listeners.
    """
    return subscription_error(channel, "Kicked", reason, 410)


def for_error(fault: PusherError) -> list[bytes]:
    """The messages that tell a client about `fault` (the transport closes the connection
    afterwards when `fault.closes`): always `pusher:error`, and for a refused subscribe also
    `pusher:subscription_error` on that channel.
    """
    messages = [error(fault.message, fault.code)]
    if isinstance(fault, SubscriptionError):
        messages.append(
            subscription_error(fault.channel, fault.error_type, fault.message, fault.status)
        )
    return messages
