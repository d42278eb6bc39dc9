"""Client frames parsed into typed, immutable commands.

`parse_command(payload)` turns the bytes of one WebSocket text message into one of the command
classes below, or raises `BadMessage` saying what is wrong. It accepts what real clients send
(`spec/protocol.md` §3.4, §4a): `data` as an object or as a JSON string for subscribe and
signin, `pusher:ping` with or without `data`, client-event `data` of any JSON type.

Invariants:
- Raw strings that are signed (`channel_data`, `user_data`) are kept exactly as received.
- Client-event `data` is kept as the JSON string to forward: a string stays as is, anything
  else is encoded once here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple

import orjson

from pyserver.protocol import frames
from pyserver.protocol.errors import BadMessage
from pyserver.protocol.jsontext import TooDeep, encode_text


@dataclass(frozen=True, slots=True)
class Ping:
    pass


@dataclass(frozen=True, slots=True)
class Pong:
    pass


@dataclass(frozen=True, slots=True)
class Subscribe:
    channel: str
    auth: str | None
    channel_data: str | None


@dataclass(frozen=True, slots=True)
class Unsubscribe:
    channel: str


@dataclass(frozen=True, slots=True)
class Signin:
    auth: str
    user_data: str


@dataclass(frozen=True, slots=True)
class Resume:
    """`pusher:resume` from the anonymous catch-up snippet (docs/history.md)."""

    token: str


class ClientEvent(NamedTuple):
    """A client event. A named tuple rather than a frozen dataclass: it is built once per
    relayed event, and a frozen dataclass's `__init__` (one `object.__setattr__` per field)
    cost about 1 µs against 0.2 µs (docs/performance.md)."""

    event: str
    channel: str
    data: str
    """The JSON string forwarded to other subscribers."""


Command = Ping | Pong | Subscribe | Unsubscribe | Signin | Resume | ClientEvent

_PING = Ping()
_PONG = Pong()


def parse_command(payload: bytes | str) -> Command:
    """Parse one client message.

    Raises:
        BadMessage: not JSON, not an object with a string `event`, or a known event whose
            `data` has the wrong shape, or an unknown `pusher:` event.
    """
    try:
        message = orjson.loads(payload)
    except orjson.JSONDecodeError:
        raise BadMessage("Invalid JSON: every message must be one JSON object") from None
    if not isinstance(message, dict):
        raise BadMessage("Invalid message: expected a JSON object with an 'event' field")
    event = message.get("event")
    if not isinstance(event, str):
        raise BadMessage("Invalid message: 'event' must be a string")

    if event.startswith(frames.CLIENT_EVENT_PREFIX):
        return _client_event(event, message)
    if event == frames.PING:
        return _PING
    if event == frames.PONG:
        return _PONG
    if event == frames.SUBSCRIBE:
        data = _object_data(event, message)
        return Subscribe(
            channel=_channel(event, data),
            auth=_optional_str(event, data, "auth"),
            channel_data=_raw_json_field(event, data, "channel_data"),
        )
    if event == frames.UNSUBSCRIBE:
        return Unsubscribe(channel=_channel(event, _object_data(event, message)))
    if event == frames.SIGNIN:
        data = _object_data(event, message)
        auth = _optional_str(event, data, "auth")
        user_data = _raw_json_field(event, data, "user_data")
        if not auth or user_data is None:
            raise BadMessage("Invalid pusher:signin: 'auth' and 'user_data' are required")
        return Signin(auth=auth, user_data=user_data)
    if event == frames.RESUME:
        token = _object_data(event, message).get("token")
        if not isinstance(token, str) or not 0 < len(token) <= 64:
            raise BadMessage("Invalid pusher:resume: 'data.token' must be the resume token")
        return Resume(token=token)
    raise BadMessage(f"Unsupported event '{event[:100]}'")


def _object_data(event: str, message: dict[str, Any]) -> dict[str, Any]:
    data = message.get("data")
    if isinstance(data, str):  # the 2013 protocol sent data as a JSON string
        try:
            data = orjson.loads(data)
        except orjson.JSONDecodeError:
            data = None
    if not isinstance(data, dict):
        raise BadMessage(f"Invalid {event}: 'data' must be an object")
    return data


def _channel(event: str, data: dict[str, Any]) -> str:
    channel = data.get("channel")
    if not isinstance(channel, str) or not channel:
        raise BadMessage(f"Invalid {event}: 'data.channel' must be a non-empty string")
    return channel


def _optional_str(event: str, data: dict[str, Any], key: str) -> str | None:
    value = data.get(key)
    if value is None or isinstance(value, str):
        return value
    raise BadMessage(f"Invalid {event}: 'data.{key}' must be a string")


def _raw_json_field(event: str, data: dict[str, Any], key: str) -> str | None:
    """A field that holds JSON as a string; old clients may send the object itself."""
    value = data.get(key)
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, dict):
        try:
            return encode_text(value)
        except TooDeep as exc:
            raise BadMessage(f"Invalid {event}: 'data.{key}': {exc}") from None
    raise BadMessage(f"Invalid {event}: 'data.{key}' must be a JSON string")


def _client_event(event: str, message: dict[str, Any]) -> ClientEvent:
    channel = message.get("channel")
    if not isinstance(channel, str) or not channel:
        raise BadMessage(f"Invalid client event '{event[:100]}': 'channel' is required")
    data = message.get("data")
    try:
        encoded = data if isinstance(data, str) else encode_text(data)
    except TooDeep as exc:
        raise BadMessage(f"Invalid client event '{event[:100]}': 'data': {exc}") from None
    return ClientEvent(event, channel, encoded)
