"""`GET /apps/{app_id}/channels/{channel_name}/history`: a channel's stored events over the
HTTP API (docs/history.md). Signing, the app lookup and rate limits stay with the API's
router; this module takes the app's rules, its store and the parsed query, and answers.

Query: `limit` 0..1000 (default 100; 0 answers only the head), `direction` `backward`
(newest first, the default) or `forward`, and `before` / `after` positions (strictly older /
newer events).

Answers (the JSON body of each, errors in the API's usual `{"error", "status"}` shape):
- 200 `{"channel", "epoch", "position", "events": [{"position", "event", "data", "time_ms",
  "user_id"?}], "next"}`;
- 400 a bad channel name, `limit`, `direction` or position (or one the channel never issued);
- 404 no history rule matches the channel;
- 409 a position of another epoch, with the current `"epoch"` added to the error body.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pyserver.config import HistoryRule
from pyserver.history.store import Direction, HistoryStore, OtherEpoch, Page, PositionAhead
from pyserver.protocol.errors import ApiError, BadRequest, NotFound
from pyserver.protocol.history import BadPosition, Position, RuleBook, decode_position
from pyserver.protocol.names import channel_name_problem

DEFAULT_LIMIT = 100
MAX_LIMIT = 1_000


class EpochConflict(ApiError):
    """A position of another epoch: the client must start over from the current one."""

    status = 409

    def __init__(self, message: str, epoch: str) -> None:
        super().__init__(message)
        self.epoch = epoch


@dataclass(frozen=True, slots=True)
class HistoryQuery:
    limit: int
    direction: Direction
    after: Position | None
    before: Position | None


@dataclass(frozen=True, slots=True)
class Reply:
    """Status and JSON body; the router renders it like every other API answer."""

    status: int
    body: dict[str, Any]


def parse_query(query: Mapping[str, str]) -> HistoryQuery:
    """The history parameters of a request's (already decoded) query; 400 when bad."""
    raw_limit = query.get("limit", str(DEFAULT_LIMIT))
    if not (raw_limit.isascii() and raw_limit.isdigit()) or int(raw_limit) > MAX_LIMIT:
        raise BadRequest(f"limit must be an integer from 0 to {MAX_LIMIT}")
    raw_direction = query.get("direction", Direction.BACKWARD.value)
    try:
        direction = Direction(raw_direction)
    except ValueError:
        raise BadRequest("direction must be 'backward' or 'forward'") from None
    return HistoryQuery(
        int(raw_limit), direction, _position(query, "after"), _position(query, "before")
    )


def _position(query: Mapping[str, str], name: str) -> Position | None:
    text = query.get(name)
    if text is None:
        return None
    try:
        return decode_position(text)
    except BadPosition:
        raise BadRequest(f"{name} is not a history position: {text[:100]!r}") from None


async def history_reply(
    rules: RuleBook[HistoryRule],
    store: HistoryStore,
    app_id: str,
    channel: str,
    query: Mapping[str, str],
) -> Reply:
    """The answer to one history request of an app already authenticated."""
    try:
        rule, wanted = _request(rules, channel, query)
        found = await _read(store, app_id, channel, rule, wanted)
    except EpochConflict as exc:
        return Reply(exc.status, {"error": exc.message, "status": exc.status, "epoch": exc.epoch})
    except ApiError as exc:
        return Reply(exc.status, {"error": exc.message, "status": exc.status})
    return Reply(200, _body(channel, found))


def _request(
    rules: RuleBook[HistoryRule], channel: str, query: Mapping[str, str]
) -> tuple[HistoryRule, HistoryQuery]:
    problem = channel_name_problem(channel)
    if problem is not None:
        raise BadRequest(problem)
    rule = rules.rule_for(channel)
    if rule is None:
        raise NotFound(f"Channel {channel} keeps no history: no history rule matches it")
    return rule, parse_query(query)


async def _read(
    store: HistoryStore, app_id: str, channel: str, rule: HistoryRule, wanted: HistoryQuery
) -> Page:
    try:
        return await store.read(
            app_id, channel, rule, wanted.limit, wanted.direction, wanted.after, wanted.before
        )
    except OtherEpoch as exc:
        raise EpochConflict(
            f"The position is from another epoch of {channel}'s history (the store started "
            f"over); the current epoch is {exc.head.epoch}",
            exc.head.epoch,
        ) from None
    except PositionAhead:
        raise BadRequest(f"The position is not one {channel} has reached") from None


def _body(channel: str, found: Page) -> dict[str, Any]:
    events = []
    for entry in found.entries:
        fields = entry.fields()
        event: dict[str, Any] = {
            "position": entry.position.encode(),
            "event": fields.event,
            "data": fields.data,
            "time_ms": entry.time_ms,
        }
        if fields.user_id is not None:
            event["user_id"] = fields.user_id
        events.append(event)
    return {
        "channel": channel,
        "epoch": found.head.epoch,
        "position": found.head.position.encode(),
        "events": events,
        "next": found.next.encode() if found.next is not None else None,
    }
