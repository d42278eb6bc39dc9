"""JSON text of values that came from outside (client events, channel and user data, API
trigger data): the one place that turns an unencodable value into a clear error.

Invariant: `orjson.loads` accepts deeper nesting (about 1,024 levels) than `orjson.dumps`
can write back (255), so anything parsed from a client and re-encoded goes through
`encode`, which raises `TooDeep` instead of a bare `TypeError` deep in a handler.
"""

from __future__ import annotations

import orjson

from pyserver.protocol.errors import BadRequest, PayloadTooLarge


class TooDeep(ValueError):
    """The value cannot be written back as JSON (nested more than 255 levels)."""


def encode(value: object) -> bytes:
    try:
        return orjson.dumps(value)
    except orjson.JSONEncodeError:
        raise TooDeep("JSON nested more than 255 levels deep") from None


def encode_text(value: object) -> str:
    """`encode(value).decode()` in one call (a client event's object `data` comes here)."""
    try:
        return orjson.dumps(value).decode()
    except orjson.JSONEncodeError:
        raise TooDeep("JSON nested more than 255 levels deep") from None


def event_data(data: object, max_bytes: int) -> str:
    """An API-triggered event's `data` as the text clients receive: a string as given, any
    other JSON value encoded; 400 when it cannot be, 413 above `max_bytes`."""
    if not isinstance(data, str):
        try:
            data = encode_text(data)
        except TooDeep as exc:
            raise BadRequest(f"'data': {exc}") from None
    if len(data.encode()) > max_bytes:
        raise PayloadTooLarge(f"Event data is larger than {max_bytes} bytes")
    return data
