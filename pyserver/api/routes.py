"""The HTTP API (`spec/protocol.md` §11): triggers, channel queries, user termination, health.

`Api.handle(request)` returns a `Response`, or a coroutine producing one when the answer
needs cluster-wide counts. Triggers without `info` never create a coroutine: they are the
hot path.

Invariants:
- Every `/apps/...` route (and pusher-http-python's `/users/{id}/terminate_connections`)
  is signed (§11.1) and checked before anything else is read from the body.
- In protected mode every route but the health checks (`/`, `/up`, `/ready`, `/health`)
  answers requests that are not from this machine with 403 (`pyserver.auth.protected`).
- Every failure is an `ApiError` with a real status (400, 401, 403, 404, 405, 413, 429) and a JSON
  body whose `error` says what was wrong.
- A trigger is validated whole before anything is published: a batch is all or nothing.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from pyserver.auth.protected import REFUSAL as PROTECTED_MODE_REFUSAL
from pyserver.auth.protected import from_this_machine
from pyserver.auth.requests import verify_request
from pyserver.channels.app import App
from pyserver.http import EMPTY_OK, Request, Response, error_response, json_response
from pyserver.protocol.errors import (
    ApiError,
    BadRequest,
    Forbidden,
    MethodNotAllowed,
    NotFound,
    TooManyRequests,
    Unauthorized,
)
from pyserver.protocol.jsontext import event_data
from pyserver.protocol.names import (
    MAX_USER_ID,
    channel_name_problem,
    channel_type,
    event_name_problem,
    user_id_problem,
)
from pyserver.ratelimit import TokenBucket

HandlerResult = Response | Coroutine[Any, Any, Response]

_SOCKET_ID = re.compile(r"\d+\.\d+")
_APP_ROUTE = re.compile(r"/apps/([^/]+)(/.*)?")


@dataclass(frozen=True, slots=True)
class Trigger:
    """One validated event to publish."""

    name: str
    channels: list[str]
    data: str
    socket_id: str | None
    info: frozenset[str]


class Api:
    def __init__(
        self,
        apps_by_id: Mapping[str, App],
        apps_by_key: Mapping[str, App],
        max_auth_skew: float,
        health: Callable[[str], Response] | None = None,
        clock: Callable[[], float] = time.time,
        console: Callable[[Request], HandlerResult] | None = None,
        on_trigger: Callable[[float], None] | None = None,
        protected: bool = False,
    ) -> None:
        self.apps_by_id = apps_by_id
        self.apps_by_key = apps_by_key
        self.max_auth_skew = max_auth_skew
        self.health = health
        self.clock = clock
        self.console = console
        self.on_trigger = on_trigger
        """Told how many seconds each trigger took to hand its frames to the connections."""
        self.protected = protected
        """Protected mode is on: only requests from this machine get past the health checks."""
        self._buckets: dict[tuple[str, str], TokenBucket] = {}
        """(app id, "events" or "reads") → the app's HTTP rate limit on this node."""

    def handle(self, request: Request) -> HandlerResult:
        try:
            return self._route(request)
        except TooManyRequests as exc:
            refused = error_response(exc.status, exc.message)
            return Response(
                refused.status, refused.body, extra_headers=(("Retry-After", str(exc.retry_after)),)
            )
        except ApiError as exc:
            return error_response(exc.status, exc.message)

    def _spend(self, app: App, kind: str, per_second: int, cost: int) -> None:
        """Take `cost` from the app's `kind` budget, or refuse the call with 429."""
        if per_second <= 0:
            return
        now = time.monotonic()
        bucket = self._buckets.get((app.id, kind))
        if bucket is None or bucket.rate != per_second:
            bucket = self._buckets[(app.id, kind)] = TokenBucket(per_second, now)
        if bucket.take(cost, now):
            return
        app.stats.http_rate_limited_total += 1
        what = "events published" if kind == "events" else "read requests"
        raise TooManyRequests(
            f"App {app.id} is over its limit of {per_second} {what} per second",
            retry_after=max(1, math.ceil(bucket.seconds_until(cost))),
        )

    def _route(self, request: Request) -> HandlerResult:
        path = request.path
        if path in ("/", "/up", "/ready", "/health"):
            if self.health is not None and path != "/":
                return self.health(path)
            return json_response({"ok": True})
        if self.protected and not from_this_machine(request.peer, request.headers):
            raise Forbidden(PROTECTED_MODE_REFUSAL)
        if self.console is not None and (path == "/console" or path.startswith("/console/")):
            return self.console(request)
        match = _APP_ROUTE.fullmatch(path)
        if match is not None:
            app = self.apps_by_id.get(match.group(1))
            if app is None:
                raise NotFound(f"Unknown app id '{match.group(1)[:100]}'")
            _count(app, request)
            self._authenticate(app, request)
            return self._app_route(app, match.group(2) or "", request)
        parts = path.split("/")
        if len(parts) == 4 and parts[1] == "users" and parts[3] == "terminate_connections":
            # pusher-http-python posts here without the /apps/{id} prefix (§8.5).
            app = self.apps_by_key.get(request.query.get("auth_key", ""))
            if app is None:
                raise Unauthorized("Unknown auth_key: it is not the key of any app")
            _count(app, request)
            self._authenticate(app, request)
            return self._terminate(app, request, parts[2])
        raise NotFound(f"No route for {request.method} {path[:200]}")

    def _authenticate(self, app: App, request: Request) -> None:
        if not app.config.enabled:
            raise Forbidden(f"App {app.id} is disabled")
        verify_request(
            method=request.method,
            paths=request.signed_paths,
            params=request.query,
            body=request.body,
            app_key=app.config.key,
            secret=app.config.secret,
            now=self.clock(),
            max_skew=self.max_auth_skew,
        )

    def _app_route(self, app: App, rest: str, request: Request) -> HandlerResult:
        method = request.method
        if method == "GET":
            self._spend(app, "reads", app.config.max_read_requests_per_second, 1)
        if rest == "/events":
            _require(method, "POST")
            return self._events(app, request)
        if rest == "/batch_events":
            _require(method, "POST")
            return self._batch_events(app, request)
        if rest == "/channels":
            _require(method, "GET")
            return self._channels(app, request)
        parts = rest.split("/")
        if len(parts) >= 3 and parts[1] == "channels":
            channel = parts[2]
            tail = parts[3:]
            if not tail:
                _require(method, "GET")
                return self._channel(app, request, channel)
            if tail == ["users"]:
                _require(method, "GET")
                return self._users(app, channel)
            if tail == ["events"]:
                _require(method, "POST")
                return self._legacy_channel_event(app, request, channel)
            if tail == ["stats"]:
                _require(method, "GET")
                return self._legacy_channel_stats(app, channel)
            if tail == ["unsubscribe"]:
                _require(method, "POST")
                return self._kick(app, request, channel)
        if len(parts) == 4 and parts[1] == "users" and parts[3] == "terminate_connections":
            _require(method, "POST")
            return self._terminate(app, request, parts[2])
        raise NotFound(f"No route for {method} /apps/{app.id}{rest[:200]}")

    # --- triggers --------------------------------------------------------------------------

    def _events(self, app: App, request: Request) -> HandlerResult:
        started = time.perf_counter()
        body = _json_object(request.body)
        trigger = self._trigger(app, body, multi_channel=True)
        self._spend(app, "events", app.config.max_backend_events_per_second, len(trigger.channels))
        app.trigger(trigger.name, trigger.channels, trigger.data, trigger.socket_id)
        if self.on_trigger is not None:
            self.on_trigger(time.perf_counter() - started)
        if not trigger.info:
            return EMPTY_OK
        return self._events_info(app, trigger)

    async def _events_info(self, app: App, trigger: Trigger) -> Response:
        return json_response({"channels": await self._infos(app, trigger)})

    def _batch_events(self, app: App, request: Request) -> HandlerResult:
        body = _json_object(request.body)
        batch = body.get("batch")
        if not isinstance(batch, list) or not batch:
            raise BadRequest("'batch' must be a non-empty list of events")
        if len(batch) > app.config.max_batch_size:
            raise BadRequest(
                f"Batch of {len(batch)} events is over the limit of {app.config.max_batch_size}"
            )
        triggers = []
        for index, item in enumerate(batch):
            if not isinstance(item, dict):
                raise BadRequest(f"batch[{index}] must be an object")
            try:
                triggers.append(self._trigger(app, item, multi_channel=False))
            except ApiError as exc:
                exc.message = f"batch[{index}]: {exc.message}"
                raise
        self._spend(app, "events", app.config.max_backend_events_per_second, len(triggers))
        for t in triggers:
            app.trigger(t.name, t.channels, t.data, t.socket_id)
        if not any(t.info for t in triggers):
            return EMPTY_OK
        return self._batch_info(app, triggers)

    async def _batch_info(self, app: App, triggers: list[Trigger]) -> Response:
        results = []
        for t in triggers:
            infos = await self._infos(app, t) if t.info else {}
            results.append(infos.get(t.channels[0], {}))
        return json_response({"batch": results})

    def _trigger(self, app: App, body: dict[str, Any], multi_channel: bool) -> Trigger:
        name = body.get("name")
        problem = event_name_problem(name)
        if problem is not None:
            raise BadRequest(f"'name': {problem}")
        assert isinstance(name, str)
        if "channels" in body and multi_channel:
            channels = body["channels"]
            if not isinstance(channels, list) or not all(isinstance(c, str) for c in channels):
                raise BadRequest("'channels' must be a list of channel names")
        elif "channel" in body:
            channels = [body["channel"]]
        else:
            raise BadRequest("'channels' (a list) or 'channel' is required")
        limit = app.config.max_channels_per_event
        if not 1 <= len(channels) <= limit:
            raise BadRequest(f"An event goes to 1 to {limit} channels, not {len(channels)}")
        for channel in channels:
            _check_channel(channel)
        data = body.get("data")
        if data is None:
            raise BadRequest("'data' is required")
        data = event_data(data, app.config.max_event_payload_bytes)
        socket_id = body.get("socket_id")
        if socket_id is not None and (
            not isinstance(socket_id, str) or _SOCKET_ID.fullmatch(socket_id) is None
        ):
            raise BadRequest("'socket_id' must look like '1234.5678'")
        info = _info_fields(body.get("info"), {"user_count", "subscription_count"})
        return Trigger(name, channels, data, socket_id, info)

    async def _infos(self, app: App, trigger: Trigger) -> dict[str, dict[str, int]]:
        infos: dict[str, dict[str, int]] = {}
        for channel in trigger.channels:
            counts = await app.adapter.channel_counts(app.id, channel)
            info: dict[str, int] = {}
            presence = channel_type(channel).is_presence
            if "user_count" in trigger.info and presence:
                info["user_count"] = counts.user_count
            if "subscription_count" in trigger.info and not presence:
                info["subscription_count"] = counts.subscription_count
            infos[channel] = info
        return infos

    def _legacy_channel_event(self, app: App, request: Request, channel: str) -> Response:
        """Deprecated `POST /apps/{id}/channels/{channel}/events?name=...`: the body is the data."""
        body = {
            "name": request.query.get("name"),
            "channel": channel,
            "data": request.body.decode(errors="replace"),
            "socket_id": request.query.get("socket_id"),
        }
        trigger = self._trigger(app, body, multi_channel=False)
        self._spend(app, "events", app.config.max_backend_events_per_second, 1)
        app.trigger(trigger.name, trigger.channels, trigger.data, trigger.socket_id)
        return Response(202, b"{}")

    # --- queries ---------------------------------------------------------------------------

    async def _channels(self, app: App, request: Request) -> Response:
        prefix = request.query.get("filter_by_prefix", "")
        info = _info_fields(request.query.get("info"), {"user_count"})
        if "user_count" in info and not prefix.startswith("presence-"):
            raise BadRequest("info=user_count requires filter_by_prefix=presence-")
        occupied = await app.adapter.occupied_channels(app.id, prefix)
        channels = {
            name: ({"user_count": counts.user_count} if info else {})
            for name, counts in sorted(occupied.items())
        }
        return json_response({"channels": channels})

    async def _channel(self, app: App, request: Request, channel: str) -> Response:
        _check_channel(channel)
        ctype = channel_type(channel)
        info = _info_fields(
            request.query.get("info"), {"user_count", "subscription_count", "cache"}
        )
        if "user_count" in info and not ctype.is_presence:
            raise BadRequest("info=user_count is only available for presence channels")
        if "subscription_count" in info and ctype.is_presence:
            raise BadRequest("info=subscription_count is not available for presence channels")
        if "cache" in info and not ctype.cache:
            raise BadRequest("info=cache is only available for cache channels")
        counts = await app.adapter.channel_counts(app.id, channel)
        result: dict[str, Any] = {"occupied": counts.subscription_count > 0}
        if "user_count" in info:
            result["user_count"] = counts.user_count
        if "subscription_count" in info:
            result["subscription_count"] = counts.subscription_count
        if "cache" in info:
            cached = await app.adapter.cache_get(app.id, channel)
            result["cache"] = (
                None if cached is None else {"data": cached.data, "ttl": int(cached.ttl)}
            )
        return json_response(result)

    async def _legacy_channel_stats(self, app: App, channel: str) -> Response:
        """Deprecated `GET /apps/{id}/channels/{channel}/stats` (§11): occupancy, the number of
        subscribed connections, and distinct users on presence channels."""
        _check_channel(channel)
        counts = await app.adapter.channel_counts(app.id, channel)
        result: dict[str, Any] = {"occupied": counts.subscription_count > 0}
        if channel_type(channel).is_presence:
            result["user_count"] = counts.user_count
        result["connection_count"] = counts.subscription_count
        return json_response(result)

    async def _users(self, app: App, channel: str) -> Response:
        if not channel_type(channel).is_presence:
            raise BadRequest("Users can only be listed for presence channels")
        members = await app.adapter.presence_members(app.id, channel)
        return json_response({"users": [{"id": user_id} for user_id in members]})

    def _kick(self, app: App, request: Request, channel: str) -> Response:
        """Extension: `POST /apps/{id}/channels/{name}/unsubscribe` with `{"user_id": ...}` or
        `{"socket_id": ...}` removes those subscriptions. Answers `{}`."""
        _check_channel(channel)
        body = _json_object(request.body)
        user_id, socket_id = body.get("user_id"), body.get("socket_id")
        if (user_id is None) == (socket_id is None):
            raise BadRequest("Give exactly one of 'user_id' or 'socket_id'")
        for value in (user_id, socket_id):
            if value is not None and (not isinstance(value, str) or not value):
                raise BadRequest("'user_id' and 'socket_id' must be non-empty strings")
        if user_id is not None and len(user_id) > MAX_USER_ID:
            raise BadRequest(f"'user_id' is longer than {MAX_USER_ID} characters")
        if socket_id is not None and _SOCKET_ID.fullmatch(socket_id) is None:
            raise BadRequest(f"Invalid socket_id '{socket_id[:64]}': expected digits.digits")
        app.kick(channel, user_id, socket_id)
        return EMPTY_OK

    def _terminate(self, app: App, request: Request, user_id: str) -> Response:
        problem = user_id_problem(user_id)
        if problem is not None:
            raise BadRequest(f"Invalid user id '{user_id[:128]}': {problem}")
        app.terminate_user(user_id)
        return EMPTY_OK


def _count(app: App, request: Request) -> None:
    request.stats = app.stats
    app.stats.http_calls_received_total += 1
    app.stats.http_received_bytes += len(request.body)


def _require(method: str, expected: str) -> None:
    if method != expected:
        raise MethodNotAllowed(f"Use {expected} for this route, not {method}")


def _json_object(body: bytes) -> dict[str, Any]:
    try:
        value = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise BadRequest("The body must be a JSON object") from None
    if not isinstance(value, dict):
        raise BadRequest("The body must be a JSON object")
    return value


def _info_fields(value: object, allowed: set[str]) -> frozenset[str]:
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


def _check_channel(channel: object) -> None:
    problem = channel_name_problem(channel)
    if problem is not None:
        raise BadRequest(f"Invalid channel '{str(channel)[:200]}': {problem}")
