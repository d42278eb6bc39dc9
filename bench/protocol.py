"""Pusher protocol v7 messages and the bench's timing markers: pure parsing and building.

Every message is a JSON object `{"event": .., "channel": .., "data": ..}`. Servers send
`data` as a JSON-encoded string (pyserver always, for client events too); some relay client
events' `data` as an object, so readers accept both.

A marker is the payload of every event the bench sends: `{"r": run id, "s": sequence,
"t": send time in ns on the shared clock}`.
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Callable
from typing import Any, NamedTuple
from urllib.parse import quote

try:  # orjson is a pyserver dependency and several times faster; plain json works too.
    import orjson

    loads: Callable[[str | bytes], Any] = orjson.loads

    def dumps(value: Any) -> str:
        """Compact JSON text."""
        return orjson.dumps(value).decode()

except ImportError:  # pragma: no cover - depends on the environment
    loads = json.loads

    def dumps(value: Any) -> str:
        """Compact JSON text."""
        return json.dumps(value, separators=(",", ":"))


PROTOCOL_VERSION = 7
TRIGGER_EVENT = "bench"
CLIENT_EVENT = "client-bench"


class Frame(NamedTuple):
    """One message from the server. Named tuples, not frozen dataclasses, for the two types
    built per message received: a frozen dataclass's `__init__` costs about 1 µs (one
    `object.__setattr__` per field) against 0.2 µs."""

    event: str
    channel: str | None
    data: Any
    user_id: str | None = None


class Marker(NamedTuple):
    """What the bench puts in each event it sends."""

    run: str
    seq: int
    t_ns: int


class ProtocolError(ValueError):
    """A message that is not a Pusher frame."""


def parse_frame(text: str | bytes) -> Frame:
    """Decode one WebSocket message; raises `ProtocolError` when it is not a Pusher frame."""
    try:
        obj = loads(text)
        event = obj["event"]
    except (ValueError, TypeError, KeyError) as exc:
        raise ProtocolError(f"not a Pusher frame: {str(text)[:80]!r}") from exc
    if type(event) is not str or type(obj) is not dict:
        raise ProtocolError(f"not a Pusher frame: {str(text)[:80]!r}")
    channel = obj.get("channel")
    user_id = obj.get("user_id")
    return Frame(
        event,
        channel if type(channel) is str else None,
        obj.get("data"),
        user_id if type(user_id) is str else None,
    )


def decode_data(data: Any) -> Any:
    """`data` as an object: JSON strings are decoded, anything else is returned as is."""
    if isinstance(data, (str, bytes)):
        try:
            return loads(data)
        except ValueError:
            return data
    return data


def connection_established(frame: Frame) -> tuple[str, int | None]:
    """(socket_id, activity_timeout) of a `pusher:connection_established` frame."""
    if frame.event != "pusher:connection_established":
        raise ProtocolError(f"expected pusher:connection_established, got {frame.event}")
    data = decode_data(frame.data)
    if not isinstance(data, dict) or not isinstance(data.get("socket_id"), str):
        raise ProtocolError("connection_established without a socket_id")
    timeout = data.get("activity_timeout")
    return data["socket_id"], timeout if isinstance(timeout, int) else None


def error_code(frame: Frame) -> int | None:
    """The code of a `pusher:error` frame (None when absent)."""
    data = decode_data(frame.data)
    if isinstance(data, dict):
        code = data.get("code")
        if isinstance(code, int):
            return code
    return None


def error_message(frame: Frame) -> str:
    """Human text of a `pusher:error` or `pusher:subscription_error` frame."""
    data = decode_data(frame.data)
    if isinstance(data, dict):
        return str(data.get("message") or data.get("error") or data)
    return str(data)


def make_marker(run: str, seq: int, t_ns: int) -> dict[str, Any]:
    """The marker object; use `marker_text` for HTTP triggers (data must be a string)."""
    return {"r": run, "s": seq, "t": t_ns}


def marker_text(run: str, seq: int, t_ns: int) -> str:
    """The marker as a JSON string."""
    return f'{{"r":{dumps(run)},"s":{seq},"t":{t_ns}}}'


def parse_marker(data: Any) -> Marker | None:
    """The marker in an event's `data` (a JSON string or an object), or None."""
    try:
        obj = loads(data) if type(data) is str else data
        run, seq, t_ns = obj["r"], obj["s"], obj["t"]
    except (ValueError, TypeError, KeyError, IndexError):
        return None
    if type(run) is not str or type(seq) is not int or type(t_ns) is not int:
        return None
    return Marker(run, seq, t_ns)


def presence_user_id(data: Any) -> str | None:
    """`user_id` of a member_added / member_removed frame's data."""
    obj = decode_data(data)
    if isinstance(obj, dict):
        user_id = obj.get("user_id")
        if isinstance(user_id, (str, int)):
            return str(user_id)
    return None


def presence_user_info(data: Any) -> Any:
    """`user_info` of a member_added frame's data (None when absent)."""
    obj = decode_data(data)
    return obj.get("user_info") if isinstance(obj, dict) else None


def subscription_count(data: Any) -> int | None:
    """Member count of a presence `subscription_succeeded` frame's data, when given."""
    obj = decode_data(data)
    if isinstance(obj, dict):
        presence = obj.get("presence")
        if isinstance(presence, dict) and isinstance(presence.get("count"), int):
            return int(presence["count"])
    return None


# --- messages the client sends -------------------------------------------------------------


def subscribe(channel: str, auth: str | None = None, channel_data: str | None = None) -> str:
    data: dict[str, str] = {"channel": channel}
    if auth is not None:
        data["auth"] = auth
    if channel_data is not None:
        data["channel_data"] = channel_data
    return dumps({"event": "pusher:subscribe", "data": data})


def unsubscribe(channel: str) -> str:
    return dumps({"event": "pusher:unsubscribe", "data": {"channel": channel}})


def ping() -> str:
    return '{"event":"pusher:ping","data":{}}'


def pong() -> str:
    return '{"event":"pusher:pong","data":{}}'


def client_event(event: str, channel: str, data: Any) -> str:
    return dumps({"event": event, "channel": channel, "data": data})


def trigger_body(name: str, channels: list[str], data: str) -> str:
    """JSON body of `POST /apps/{id}/events`."""
    return dumps({"name": name, "channels": channels, "data": data})


def ws_url(host: str, port: int, key: str, tls: bool = False) -> str:
    """`ws://host:port/app/key?protocol=7&client=js&version=8.4.0&flash=false`."""
    scheme = "wss" if tls else "ws"
    return (
        f"{scheme}://{host_for_url(host)}:{port}/app/{quote(key, safe='')}"
        f"?protocol={PROTOCOL_VERSION}&client=js&version=8.4.0&flash=false"
    )


def host_for_url(host: str) -> str:
    """IPv6 literals in brackets, everything else unchanged."""
    try:
        if ipaddress.ip_address(host).version == 6:
            return f"[{host}]"
    except ValueError:
        pass
    return host
