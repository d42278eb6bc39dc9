"""Presence members and signed-in users: parsing the JSON strings clients send.

Invariants (`spec/protocol.md` §5.6, §7, §8.1):
- `channel_data` must be a JSON object with `user_id`; a number is normalised to its string.
- `user_info` is optional, kept as parsed JSON and round-tripped exactly; its encoded size is
  at most `max_user_info_bytes` (1 KB by default, as hosted Pusher).
- `user_data` (signin) must be a JSON object whose `id` is a valid user id (§6.3); an optional
  `watchlist` is a list of user ids.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from pyserver.protocol.jsontext import TooDeep, encode
from pyserver.protocol.names import MAX_USER_ID, user_id_problem


class MemberDataError(ValueError):
    """`channel_data` or `user_data` is unusable; the message says why."""


@dataclass(frozen=True, slots=True)
class Member:
    user_id: str
    user_info: Any


@dataclass(frozen=True, slots=True)
class SignedInUser:
    user_id: str
    user_info: Any
    watchlist: tuple[str, ...]
    user_data: str
    """The raw `user_data` string, echoed in `pusher:signin_success`."""


def _load_object(raw: str, what: str) -> dict[str, Any]:
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise MemberDataError(f"{what} must be a JSON object") from None
    if not isinstance(value, dict):
        raise MemberDataError(f"{what} must be a JSON object")
    return value


def normalise_user_id(value: object) -> str | None:
    """`user_id` as a string: numbers (but not booleans) become their decimal string."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return str(int(value)) if isinstance(value, float) and value.is_integer() else str(value)
    return value if isinstance(value, str) else None


def parse_channel_data(raw: str, max_user_info_bytes: int) -> Member:
    """The presence member a subscribe's `channel_data` describes."""
    data = _load_object(raw, "channel_data")
    user_id = normalise_user_id(data.get("user_id"))
    if not user_id:
        raise MemberDataError("channel_data must contain a user_id (string or number)")
    if len(user_id) > MAX_USER_ID:
        raise MemberDataError(f"user_id is longer than {MAX_USER_ID} characters")
    user_info = data.get("user_info")
    check_user_info(user_info, max_user_info_bytes)
    return Member(user_id, user_info)


def check_user_info(user_info: object, max_bytes: int) -> None:
    """Raise `MemberDataError` unless `user_info` encodes to at most `max_bytes`."""
    if user_info is None:
        return
    try:
        size = len(encode(user_info))
    except TooDeep as exc:
        raise MemberDataError(f"user_info: {exc}") from None
    if size > max_bytes:
        raise MemberDataError(f"user_info is larger than {max_bytes} bytes")


def parse_user_data(raw: str, max_watchlist: int) -> tuple[SignedInUser, bool]:
    """The user a `pusher:signin` describes, and whether its watchlist was cut to the limit."""
    data = _load_object(raw, "user_data")
    user_id = data.get("id")
    problem = user_id_problem(user_id)
    if problem is not None:
        raise MemberDataError(f"user_data.id: {problem}")
    assert isinstance(user_id, str)
    watchlist_raw = data.get("watchlist") or []
    if not isinstance(watchlist_raw, list):
        raise MemberDataError("user_data.watchlist must be a list of user ids")
    try:
        encode(data.get("user_info"))  # presence frames will carry it
    except TooDeep as exc:
        raise MemberDataError(f"user_data.user_info: {exc}") from None
    watchlist = [w for w in (normalise_user_id(w) for w in watchlist_raw) if w]
    cut = len(watchlist) > max_watchlist
    user = SignedInUser(
        user_id=user_id,
        user_info=data.get("user_info"),
        watchlist=tuple(watchlist[:max_watchlist]),
        user_data=raw,
    )
    return user, cut
