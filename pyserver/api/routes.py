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
import time
from collections.abc import Callable, Coroutine, Mapping
from typing import Any

import orjson

from pyserver.api.triggers import (
    SOCKET_ID,
    Trigger,
    check_channel,
    info_fields,
    json_object,
    parse_trigger,
)
from pyserver.auth.protected import REFUSAL as PROTECTED_MODE_REFUSAL
from pyserver.auth.protected import from_this_machine
from pyserver.auth.requests import verify_request
from pyserver.channels.app import App
from pyserver.history.api import history_reply
from pyserver.history.live import STORE_FAILURES
from pyserver.http import (
    EMPTY_OK,
    Request,
    Response,
    StreamingResponse,
    error_response,
    json_response,
)
from pyserver.protocol.errors import (
    ApiError,
    BadRequest,
    Forbidden,
    MethodNotAllowed,
    NotFound,
    TooManyRequests,
    Unauthorized,
    Unavailable,
)
from pyserver.protocol.names import (
    MAX_USER_ID,
    channel_type,
    user_id_problem,
)
from pyserver.ratelimit import TokenBucket

_HEALTH_PATHS = frozenset(("/", "/up", "/ready", "/health"))

# StreamingResponse: only the console's event stream answers with one (issue 16 part 2).
HandlerResult = Response | StreamingResponse | Coroutine[Any, Any, Response]


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
        missed_id: Callable[[str], None] | None = None,
        missed_key: Callable[[str], None] | None = None,
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
        self.missed_id = missed_id
        self.missed_key = missed_key
        """Told an unknown app id or key (the app store looks it up in the background)."""
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
        if path in _HEALTH_PATHS:
            if self.health is not None and path != "/":
                return self.health(path)
            return json_response({"ok": True})
        if self.protected and not from_this_machine(request.peer, request.headers):
            raise Forbidden(PROTECTED_MODE_REFUSAL)
        if path.startswith("/apps/"):  # /apps/{app_id}[/...]: one split, no regex
            app_id, slash, tail = path[6:].partition("/")
            if app_id:
                app = self.apps_by_id.get(app_id)
                if app is None:
                    if self.missed_id is not None:
                        self.missed_id(app_id)
                    raise NotFound(f"Unknown app id '{app_id[:100]}'")
                stats = request.stats = app.stats  # `_count`, inlined on the hot route
                stats.http_calls_received_total += 1
                stats.http_received_bytes += len(request.body)
                self._authenticate(app, request)
                if slash and tail == "events" and request.method == "POST":
                    return self._events(app, request)  # the hot route, without the table
                return self._app_route(app, slash + tail, request)
        if self.console is not None and (path == "/console" or path.startswith("/console/")):
            return self.console(request)
        parts = path.split("/")
        if len(parts) == 4 and parts[1] == "users" and parts[3] == "terminate_connections":
            # pusher-http-python posts here without the /apps/{id} prefix (§8.5).
            app = self.apps_by_key.get(request.query.get("auth_key", ""))
            if app is None:
                if self.missed_key is not None:
                    self.missed_key(request.query.get("auth_key", ""))
                raise Unauthorized("Unknown auth_key: it is not the key of any app")
            _count(app, request)
            self._authenticate(app, request)
            return self._terminate(app, request, parts[2])
        raise NotFound(f"No route for {request.method} {path[:200]}")

    def _authenticate(self, app: App, request: Request) -> None:
        config = app.config
        if not config.enabled:
            raise Forbidden(f"App {app.id} is disabled")
        verify_request(  # positional, and `previous_secret()` spared, on every signed request
            request.method,
            request.signed_paths,
            request.query,
            request.body,
            config.key,
            config.secret,
            self.clock(),
            self.max_auth_skew,
            None if app.rotation[0] is None else app.previous_secret(),
        )

    def _app_route(self, app: App, rest: str, request: Request) -> HandlerResult:
        method = request.method
        if method == "GET" and app.config.max_read_requests_per_second > 0:
            self._spend(app, "reads", app.config.max_read_requests_per_second, 1)
        route = _STATIC_ROUTES.get(rest)
        args: tuple[str, ...] = ()
        if route is None:
            segments = rest.split("/")[1:]
            for pattern, candidate in _PATTERN_ROUTES:
                captured = _match(pattern, segments)
                if captured is not None:
                    route, args = candidate, captured
                    break
        if route is None:
            raise NotFound(f"No route for {method} /apps/{app.id}{rest[:200]}")
        expected, handler = route
        if method != expected:
            raise MethodNotAllowed(f"Use {expected} for this route, not {method}")
        return handler(self, app, request, *args)

    # --- triggers --------------------------------------------------------------------------

    def _events(self, app: App, request: Request) -> HandlerResult:
        started = time.perf_counter()
        try:  # `json_object`, inlined on the hot route
            body = orjson.loads(request.body)
        except orjson.JSONDecodeError:
            raise BadRequest("The body must be a JSON object") from None
        if type(body) is not dict:
            raise BadRequest("The body must be a JSON object")
        config = app.config
        trigger = parse_trigger(config, body, True)  # multi_channel, positional: hot path
        if config.max_backend_events_per_second > 0:
            self._spend(app, "events", config.max_backend_events_per_second, len(trigger.channels))
        storing = app.trigger(trigger.name, trigger.channels, trigger.data, trigger.socket_id)
        if storing is not None:  # history in Redis: answer once the event is stored
            return self._stored(storing, lambda: self._events_answer(app, trigger))
        if self.on_trigger is not None:
            self.on_trigger(time.perf_counter() - started)
        if not trigger.info:
            return EMPTY_OK
        return self._events_info(app, trigger)

    async def _stored(
        self,
        storing: Coroutine[Any, Any, None],
        answer: Callable[[], HandlerResult],
    ) -> Response:
        """Wait for a trigger's history appends (Redis), then answer as usual."""
        try:
            await storing
        except STORE_FAILURES as exc:
            raise Unavailable(f"The history store cannot be reached: {exc}") from None
        result = answer()
        if isinstance(result, Response):
            return result
        assert not isinstance(result, StreamingResponse)
        return await result

    def _events_answer(self, app: App, trigger: Trigger) -> HandlerResult:
        return EMPTY_OK if not trigger.info else self._events_info(app, trigger)

    async def _stored_all(
        self, storing: list[Coroutine[Any, Any, None]], app: App, triggers: list[Trigger]
    ) -> Response:
        try:
            for work in storing:
                await work
        except STORE_FAILURES as exc:
            for work in storing:
                work.close()  # the ones never awaited
            raise Unavailable(f"The history store cannot be reached: {exc}") from None
        if not any(t.info for t in triggers):
            return EMPTY_OK
        return await self._batch_info(app, triggers)

    async def _events_info(self, app: App, trigger: Trigger) -> Response:
        return json_response({"channels": await self._infos(app, trigger)})

    def _batch_events(self, app: App, request: Request) -> HandlerResult:
        body = json_object(request.body)
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
                triggers.append(parse_trigger(app.config, item, multi_channel=False))
            except ApiError as exc:
                exc.message = f"batch[{index}]: {exc.message}"
                raise
        self._spend(app, "events", app.config.max_backend_events_per_second, len(triggers))
        storing = [
            work
            for t in triggers
            if (work := app.trigger(t.name, t.channels, t.data, t.socket_id)) is not None
        ]
        if storing:  # history in Redis: answer once every event is stored
            return self._stored_all(storing, app, triggers)
        if not any(t.info for t in triggers):
            return EMPTY_OK
        return self._batch_info(app, triggers)

    async def _batch_info(self, app: App, triggers: list[Trigger]) -> Response:
        results = []
        for t in triggers:
            infos = await self._infos(app, t) if t.info else {}
            results.append(infos.get(t.channels[0], {}))
        return json_response({"batch": results})

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

    def _legacy_channel_event(self, app: App, request: Request, channel: str) -> HandlerResult:
        """Deprecated `POST /apps/{id}/channels/{channel}/events?name=...`: the body is the data."""
        body = {
            "name": request.query.get("name"),
            "channel": channel,
            "data": request.body.decode(errors="replace"),
            "socket_id": request.query.get("socket_id"),
        }
        trigger = parse_trigger(app.config, body, multi_channel=False)
        self._spend(app, "events", app.config.max_backend_events_per_second, 1)
        storing = app.trigger(trigger.name, trigger.channels, trigger.data, trigger.socket_id)
        if storing is not None:
            return self._stored(storing, lambda: Response(202, b"{}"))
        return Response(202, b"{}")

    # --- queries ---------------------------------------------------------------------------

    async def _channels(self, app: App, request: Request) -> Response:
        prefix = request.query.get("filter_by_prefix", "")
        info = info_fields(request.query.get("info"), {"user_count"})
        if "user_count" in info and not prefix.startswith("presence-"):
            raise BadRequest("info=user_count requires filter_by_prefix=presence-")
        occupied = await app.adapter.occupied_channels(app.id, prefix)
        channels = {
            name: ({"user_count": counts.user_count} if info else {})
            for name, counts in sorted(occupied.items())
        }
        return json_response({"channels": channels})

    async def _channel(self, app: App, request: Request, channel: str) -> Response:
        check_channel(channel)
        ctype = channel_type(channel)
        info = info_fields(request.query.get("info"), {"user_count", "subscription_count", "cache"})
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

    async def _legacy_channel_stats(self, app: App, request: Request, channel: str) -> Response:
        """Deprecated `GET /apps/{id}/channels/{channel}/stats` (§11): occupancy, the number of
        subscribed connections, and distinct users on presence channels."""
        check_channel(channel)
        counts = await app.adapter.channel_counts(app.id, channel)
        result: dict[str, Any] = {"occupied": counts.subscription_count > 0}
        if channel_type(channel).is_presence:
            result["user_count"] = counts.user_count
        result["connection_count"] = counts.subscription_count
        return json_response(result)

    async def _users(self, app: App, request: Request, channel: str) -> Response:
        if not channel_type(channel).is_presence:
            raise BadRequest("Users can only be listed for presence channels")
        members = await app.adapter.presence_members(app.id, channel)
        return json_response({"users": [{"id": user_id} for user_id in members]})

    async def _history(self, app: App, request: Request, channel: str) -> Response:
        """`GET /apps/{id}/channels/{name}/history` (docs/history.md): 404 without a rule."""
        history = app.history
        if history is None:
            raise NotFound(f"Channel {channel[:200]} keeps no history: no history rule matches it")
        try:
            reply = await history_reply(
                history.rules, history.store, app.id, channel, request.query
            )
        except STORE_FAILURES as exc:
            raise Unavailable(f"The history store cannot be reached: {exc}") from None
        return json_response(reply.body, status=reply.status)

    def _kick(self, app: App, request: Request, channel: str) -> Response:
        """Extension: `POST /apps/{id}/channels/{name}/unsubscribe` with `{"user_id": ...}` or
        `{"socket_id": ...}` removes those subscriptions. Answers `{}`."""
        check_channel(channel)
        body = json_object(request.body)
        user_id, socket_id = body.get("user_id"), body.get("socket_id")
        if (user_id is None) == (socket_id is None):
            raise BadRequest("Give exactly one of 'user_id' or 'socket_id'")
        for value in (user_id, socket_id):
            if value is not None and (not isinstance(value, str) or not value):
                raise BadRequest("'user_id' and 'socket_id' must be non-empty strings")
        if user_id is not None and len(user_id) > MAX_USER_ID:
            raise BadRequest(f"'user_id' is longer than {MAX_USER_ID} characters")
        if socket_id is not None and SOCKET_ID.fullmatch(socket_id) is None:
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


Handler = Callable[..., HandlerResult]
"""`handler(api, app, request, *captured path segments)`."""

_STATIC_ROUTES: dict[str, tuple[str, Handler]] = {
    "/events": ("POST", Api._events),
    "/batch_events": ("POST", Api._batch_events),
    "/channels": ("GET", Api._channels),
}
"""Routes under `/apps/{app_id}` without a variable segment: path → (method, handler)."""

_PATTERN_ROUTES: tuple[tuple[tuple[str, ...], tuple[str, Handler]], ...] = (
    (("channels", "*"), ("GET", Api._channel)),
    (("channels", "*", "users"), ("GET", Api._users)),
    (("channels", "*", "events"), ("POST", Api._legacy_channel_event)),
    (("channels", "*", "stats"), ("GET", Api._legacy_channel_stats)),
    (("channels", "*", "history"), ("GET", Api._history)),
    (("channels", "*", "unsubscribe"), ("POST", Api._kick)),
    (("users", "*", "terminate_connections"), ("POST", Api._terminate)),
)
"""Routes under `/apps/{app_id}` with variable segments (`*`), matched in order."""


def _match(pattern: tuple[str, ...], segments: list[str]) -> tuple[str, ...] | None:
    """The segments `*` captured when `segments` fit `pattern`, else None."""
    if len(pattern) != len(segments):
        return None
    captured = []
    for expected, segment in zip(pattern, segments, strict=True):
        if expected == "*":
            captured.append(segment)
        elif expected != segment:
            return None
    return tuple(captured)
