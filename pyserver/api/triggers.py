"""Reading and validating a published event (`spec/protocol.md` §11.2), for the HTTP API and
the console's trigger form alike.

Invariants:
- A trigger is validated whole before anything is published; every fault is a `BadRequest`
  saying which field is wrong and why.
- Names, channel lists, data size and socket ids follow the app's limits (`AppConfig`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import orjson

from pyserver.config import AppConfig
from pyserver.protocol.errors import BadRequest
from pyserver.protocol.jsontext import event_data
from pyserver.protocol.names import (
    MAX_CHANNEL_NAME,
    MAX_EVENT_NAME,
    RESERVED_EVENT_PREFIXES,
    RESERVED_MARK,
    channel_name_problem,
    event_name_problem,
)

SOCKET_ID = re.compile(r"\d+\.\d+")
_PLAIN_CHANNEL = re.compile(rf"[A-Za-z0-9_\-=@,.;]{{1,{MAX_CHANNEL_NAME}}}").fullmatch
"""A channel name `channel_name_problem` accepts, in one C call (1 to `MAX_CHANNEL_NAME` of
the allowed characters; `#server-to-user-` names are left to it)."""
_NO_INFO: frozenset[str] = frozenset()
MAX_PLAIN_SEEN = 4096
_plain_seen: set[str] = set()
"""Channel names `_PLAIN_CHANNEL` accepted lately: triggers name the same channels again and
again, and a set lookup costs a tenth of the regex. At most `MAX_PLAIN_SEEN` are kept;
past that the set starts over."""


def _plain(channel: str) -> bool:
    """`_PLAIN_CHANNEL(channel)`, remembered when it matches."""
    if _PLAIN_CHANNEL(channel) is None:
        return False
    if len(_plain_seen) >= MAX_PLAIN_SEEN:
        _plain_seen.clear()
    _plain_seen.add(channel)
    return True


@dataclass(slots=True)
class Trigger:
    """One validated event to publish (not frozen: a frozen dataclass's `__init__` sets each
    field through `object.__setattr__`, which this hot path would pay on every trigger)."""

    name: str
    channels: list[str]
    data: str
    socket_id: str | None
    info: frozenset[str]


def json_object(body: bytes) -> dict[str, Any]:
    """The request body as a JSON object, or `BadRequest`."""
    try:
        value = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise BadRequest("The body must be a JSON object") from None
    if not isinstance(value, dict):
        raise BadRequest("The body must be a JSON object")
    return value


def parse_trigger(
    config: AppConfig, body: dict[str, Any], multi_channel: bool, name_field: str = "name"
) -> Trigger:
    """Validate one event: `name`, `channels` (when `multi_channel`) or `channel`, `data`,
    and the optional `socket_id` and `info`. `name_field` is what the caller calls the
    event name (in error messages)."""
    get = body.get
    name = get("name")
    # Each check below is the common case's fast test first; only a failing value pays for
    # the helper that says what is wrong with it.
    if not (
        type(name) is str
        and 0 < len(name) <= MAX_EVENT_NAME
        and not (RESERVED_MARK in name and name.startswith(RESERVED_EVENT_PREFIXES))
    ):
        raise BadRequest(f"'{name_field}': {event_name_problem(name)}")
    channels = get("channels") if multi_channel else None
    if type(channels) is list and 0 < len(channels) <= config.max_channels_per_event:
        plain_seen = _plain_seen
        for channel in channels:  # one set lookup a channel when all are plain names seen before
            if type(channel) is not str or (channel not in plain_seen and not _plain(channel)):
                channels = _checked_channels(config, body, multi_channel)
                break
    else:
        channels = _checked_channels(config, body, multi_channel)
    data = get("data")
    if type(data) is str and len(data) * 4 <= config.max_event_payload_bytes:
        pass  # UTF-8 takes at most 4 bytes a character: under the limit without encoding
    elif data is None:
        raise BadRequest("'data' is required")
    else:
        data = event_data(data, config.max_event_payload_bytes)
    socket_id = get("socket_id")
    if socket_id is not None and (
        not isinstance(socket_id, str) or SOCKET_ID.fullmatch(socket_id) is None
    ):
        raise BadRequest("'socket_id' must look like '1234.5678'")
    info = get("info")
    fields = _NO_INFO if info is None else info_fields(info, {"user_count", "subscription_count"})
    return Trigger(name, channels, data, socket_id, fields)


def _checked_channels(config: AppConfig, body: dict[str, Any], multi_channel: bool) -> list[Any]:
    """The event's channels after the full checks, in the order that picks the error message;
    `parse_trigger` calls this only when its shortcut did not accept them."""
    if multi_channel and "channels" in body:
        channels = body["channels"]
        if not isinstance(channels, list) or not all(isinstance(c, str) for c in channels):
            raise BadRequest("'channels' must be a list of channel names")
    elif "channel" in body:
        channels = [body["channel"]]
    else:
        raise BadRequest("'channels' (a list) or 'channel' is required")
    limit = config.max_channels_per_event
    if not 1 <= len(channels) <= limit:
        raise BadRequest(f"An event goes to 1 to {limit} channels, not {len(channels)}")
    for channel in channels:
        check_channel(channel)
    return channels


def info_fields(value: object, allowed: set[str]) -> frozenset[str]:
    """The `info` attributes asked for (comma-separated), each one of `allowed`."""
    if value is None or value == "":
        return frozenset()
    if not isinstance(value, str):
        raise BadRequest("'info' must be a comma-separated string")
    fields = frozenset(f.strip() for f in value.split(",") if f.strip())
    unknown = fields - allowed
    if unknown:
        raise BadRequest(
            f"Unknown info attribute(s) {', '.join(sorted(unknown))}; "
            f"allowed: {', '.join(sorted(allowed))}"
        )
    return fields


def check_channel(channel: object) -> None:
    if type(channel) is str and _PLAIN_CHANNEL(channel) is not None:
        return  # a valid name without the server-to-user prefix: no further test needed
    problem = channel_name_problem(channel)
    if problem is not None:
        raise BadRequest(f"Invalid channel '{str(channel)[:200]}': {problem}")
