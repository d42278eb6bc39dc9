"""The live debug console: `/console` serves a page, `/console/api/...` its JSON.

This module owns the console's routes and who may use them; what is recorded lives in
`feed.py`, the page in `page.py`.

Access: `Authorization: Bearer <console_token>` opens every app (when a token is set);
`Authorization: Basic base64(<app id>:<app secret>)` opens that app only. Secrets are
compared in constant time and never sent back. A refused login gets 401 JSON.

Routes:
- `GET /console`: the page, which reads the stream below.
- `GET /console/api/stream?app=ID`: server-sent events, the feed, stats and state pushed
  live (`live.py`, documented in docs/extensions.md).
- `GET /console/api/state?app=ID&since=N&channel=TEXT`: the apps this login may see, then
  for `app`: connection and channel counts (cluster-wide), its channels (those whose name
  contains TEXT, `channel_total` of them, at most `MAX_CHANNELS` listed) with their type and
  subscriber counts (cluster-wide and local), the members of the first
  `MAX_PRESENCE_CHANNELS` presence channels among them, this node's feed events after
  sequence N, `last_seq` and `started` (the server's start time: a page that sees it
  change starts over from sequence 0).
- `POST /console/api/trigger` `{"app", "channel", "event", "data"}`: publish a test event
  like an HTTP API trigger (channel and event names checked, data within the app's limit).
- `GET /console/api/stats?app=ID&from=UNIX_SECONDS`: the app's stats over time (`sampler.py`,
  documented in docs/extensions.md); with the redis adapter, the whole cluster's
  (`cluster_stats.py`).
- `/console/api/apps...`: the Apps page, managing the app store like `pyserver apps`
  (`apps_admin.py`, documented in docs/apps.md). Only the `console_token` login reaches it;
  an app's own login is answered 403. `state` tells the page which login it has
  (`operator`).
"""

from __future__ import annotations

import base64
import hmac
from collections.abc import Coroutine, Mapping
from typing import TYPE_CHECKING, Any

import orjson

from pyserver.api.triggers import json_object, parse_trigger
from pyserver.channels.app import App
from pyserver.console.apps_admin import PREFIX as APPS_PREFIX
from pyserver.console.apps_admin import AppsAdmin
from pyserver.console.feed import EventFeed
from pyserver.console.live import MAX_CHANNELS, MAX_PRESENCE_CHANNELS, LiveHub, app_state
from pyserver.console.page import PAGE, PAGE_HEADERS
from pyserver.console.sampler import StatsSampler
from pyserver.http import Request, Response, StreamingResponse
from pyserver.protocol.errors import (
    ApiError,
    BadRequest,
    Forbidden,
    MethodNotAllowed,
    NotFound,
    Unauthorized,
)

if TYPE_CHECKING:
    from pyserver.cluster.redis_connect import Client, RedisLink
    from pyserver.console.cluster_stats import ClusterStats

__all__ = ["MAX_CHANNELS", "MAX_PRESENCE_CHANNELS", "Console"]

_NO_STORE = (("Cache-Control", "no-store"), ("X-Content-Type-Options", "nosniff"))
_ROUTES = {"/console/api/state": "GET", "/console/api/trigger": "POST"}


def _json(value: Any, status: int = 200) -> Response:
    return Response(status, orjson.dumps(value), extra_headers=_NO_STORE)


class Console(EventFeed):
    def __init__(
        self,
        apps: Mapping[str, App],
        token: str | None,
        started_at: float,
        *,
        redis: str | Client | None = None,
        redis_prefix: str = "",
        node: str = "",
        link: RedisLink | None = None,
    ) -> None:
        """`redis`, the redis adapter's client (or a URL for a client of the console's
        own): share the stats and the feed across the cluster, this process being `node`
        there. `link`, the adapter's link (whose client `redis` is): the feed's nodes then
        announce new watches instead of polling for them (`cluster_feed`)."""
        super().__init__()
        self.apps = apps
        self.token = token
        """The `console_token` setting: a Bearer login with it opens every app ("" = none)."""
        self.started_at = started_at
        self.dashboard = StatsSampler(apps)
        self.cluster_stats: ClusterStats | None = None
        feed = None
        if redis is not None:
            from pyserver.console.cluster_feed import ClusterFeed
            from pyserver.console.cluster_stats import ClusterStats

            node = node or str(id(self))
            self.cluster_stats = ClusterStats(self.dashboard.history, redis, redis_prefix, node)
            self.dashboard.after_sample.append(self.cluster_stats.sampled)
            feed = ClusterFeed(self, redis, redis_prefix, node, link)
        self.cluster_feed = feed
        self.live = LiveHub(self, self._stats_report, feed)
        self.apps_admin = AppsAdmin(lambda: [app.config for app in self.apps.values()])
        """The Apps page; the server attaches its app store to it (`attach`)."""

    def start(self) -> None:
        """Start sampling (and, with the redis adapter, sharing) the stats."""
        self.dashboard.start()
        if self.cluster_stats is not None:
            self.cluster_stats.start()
        if self.cluster_feed is not None:
            self.cluster_feed.start()

    async def close(self) -> None:
        """End every open stream and stop the timers (shutdown)."""
        self.dashboard.stop()
        await self.live.close()
        if self.cluster_feed is not None:
            await self.cluster_feed.close()
        if self.cluster_stats is not None:
            await self.cluster_stats.close()

    async def _stats_report(self, app_id: str, since: float | None) -> dict[str, Any]:
        now = self.dashboard.clock()
        if self.cluster_stats is not None:
            return await self.cluster_stats.report(app_id, now, since)
        return self.dashboard.history.report(app_id, now, since)

    def handle(
        self, request: Request
    ) -> Response | StreamingResponse | Coroutine[Any, Any, Response]:
        if request.path in ("/console", "/console/"):
            if request.method != "GET":
                return _json({"error": "Use GET", "status": 405}, 405)
            return Response(
                200, PAGE, content_type="text/html; charset=utf-8", extra_headers=PAGE_HEADERS
            )
        try:
            apps, operator = self._login(request)
            if request.path == APPS_PREFIX or request.path.startswith(APPS_PREFIX + "/"):
                if not operator:
                    raise Forbidden("The Apps page needs the console token, not an app's login")
                return self._manage(request)
            if request.path == "/console/api/stats":  # the dashboard's stats over time
                if request.method != "GET":
                    raise MethodNotAllowed("Use GET for /console/api/stats")
                app = self._pick(apps, request.query.get("app"))
                since = self.dashboard.since(request.query.get("from"))
                if self.cluster_stats is not None:
                    return self._cluster_report(app.id, since)
                return _json(self.dashboard.history.report(app.id, self.dashboard.clock(), since))
            if request.path == "/console/api/stream":  # live: server-sent events
                if request.method != "GET":
                    raise MethodNotAllowed("Use GET for /console/api/stream")
                app = self._pick(apps, request.query.get("app"))
                last = request.headers.get("last-event-id") or request.query.get("last_event_id")
                return self.live.open(app, last)
            method = _ROUTES.get(request.path)
            if method is None:
                raise NotFound(f"No console route {request.path[:100]}")
            if request.method != method:
                raise MethodNotAllowed(f"Use {method} for {request.path}")
            if method == "GET":
                return self._state(apps, operator, request)
            return self._trigger(apps, request)
        except ApiError as exc:
            return _json({"error": exc.message, "status": exc.status}, exc.status)

    async def _manage(self, request: Request) -> Response:
        try:
            return await self.apps_admin.handle(request)
        except ApiError as exc:
            return _json({"error": exc.message, "status": exc.status}, exc.status)

    def _login(self, request: Request) -> tuple[list[App], bool]:
        """The apps this request's credentials open and whether it is the operator's login
        (the console token), or `Unauthorized`."""
        header = request.headers.get("authorization", "")
        scheme, _, value = header.partition(" ")
        scheme = scheme.lower()
        token = self.token
        if scheme == "bearer":
            if token and hmac.compare_digest(value.strip().encode(), token.encode()):
                return list(self.apps.values()), True
        elif scheme == "basic":
            try:
                app_id, _, secret = base64.b64decode(value.strip()).decode().partition(":")
            except (ValueError, UnicodeDecodeError):  # binascii.Error is a ValueError
                raise Unauthorized("Malformed Basic credentials") from None
            app = self.apps.get(app_id)
            expected = app.config.secret if app is not None else "\x00 no such app"
            # Compared even for an unknown app, so timing does not tell which ids exist.
            if hmac.compare_digest(secret.encode(), expected.encode()) and app is not None:
                return [app], False
        raise Unauthorized("Sign in with an app id and its secret, or the console token")

    async def _cluster_report(self, app_id: str, since: float | None) -> Response:
        assert self.cluster_stats is not None
        return _json(await self.cluster_stats.report(app_id, self.dashboard.clock(), since))

    def _pick(self, apps: list[App], app_id: object) -> App:
        if not apps:  # every app was removed (a database store): the Apps page adds one
            raise NotFound("No app is served: add one on the Apps page")
        if app_id in (None, ""):
            return apps[0]
        for app in apps:
            if app.id == app_id:
                return app
        raise NotFound(f"App '{str(app_id)[:100]}' is not open to this login")

    async def _state(self, apps: list[App], operator: bool, request: Request) -> Response:
        try:
            since = int(request.query.get("since", "0"))
        except ValueError:
            raise BadRequest("'since' must be a number") from None
        state: dict[str, Any]
        if not apps and operator:  # the operator still signs in, to add an app
            state = {"app": "", "connections": 0, "local_connections": 0, "channel_count": 0}
            state |= {"channel_total": 0, "channels": []}
        else:
            app = self._pick(apps, request.query.get("app"))
            state = await app_state(app, request.query.get("channel", "").lower())
        return _json(
            {
                "apps": [a.id for a in apps],
                "operator": operator,
                **state,
                "events": self.since(state["app"], since),
                "last_seq": self.last_seq,
                "started": self.started_at,
            }
        )

    def webhook_attempt(self, app_id: str, url: str, body: bytes, outcome: str) -> None:
        super().webhook_attempt(app_id, url, body, outcome)
        self.dashboard.webhook_attempt(app_id, outcome)

    def _trigger(self, apps: list[App], request: Request) -> Response:
        """Publish like `POST /apps/{id}/events`, validated by the same code."""
        body = json_object(request.body)
        app = self._pick(apps, body.get("app"))
        fields = {"name": body.get("event"), "channel": body.get("channel")}
        fields["data"] = body.get("data", "")
        trigger = parse_trigger(app.config, fields, multi_channel=False, name_field="event")
        app.trigger(trigger.name, trigger.channels, trigger.data, None)
        return _json({"ok": True})
