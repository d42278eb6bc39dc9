"""The live debug console: `/console` serves a page, `/console/api/...` its JSON.

This module owns the console's routes and who may use them; what is recorded lives in
`feed.py`, the page in `page.py`.

Access: `Authorization: Bearer <console_token>` opens every app (when a token is set);
`Authorization: Basic base64(<app id>:<app secret>)` opens that app only. Secrets are
compared in constant time and never sent back. A refused login gets 401 JSON.

Routes:
- `GET /console`: the page, which polls the API about once a second.
- `GET /console/api/state?app=ID&since=N&channel=TEXT`: the apps this login may see, then
  for `app`: connection and local channel counts, its local channels (those whose name
  contains TEXT, `channel_total` of them, at most `MAX_CHANNELS` listed) with their type and
  local subscriber counts, the members of the first
  `MAX_PRESENCE_CHANNELS` presence channels among them, the feed's events after sequence
  N, `last_seq` and `started` (the server's start time: a page that sees it change starts
  over from sequence 0).
- `POST /console/api/trigger` `{"app", "channel", "event", "data"}`: publish a test event
  like an HTTP API trigger (channel and event names checked, data within the app's limit).
- `GET /console/api/stats?app=ID&from=UNIX_SECONDS`: the app's stats over time (`sampler.py`,
  documented in docs/extensions.md).
"""

from __future__ import annotations

import base64
import hmac
from collections.abc import Coroutine, Mapping
from typing import Any

import orjson

from pyserver.api.triggers import json_object, parse_trigger
from pyserver.channels.app import App
from pyserver.console.feed import EventFeed
from pyserver.console.page import PAGE, PAGE_HEADERS
from pyserver.console.sampler import StatsSampler
from pyserver.http import Request, Response
from pyserver.protocol.errors import (
    ApiError,
    BadRequest,
    MethodNotAllowed,
    NotFound,
    Unauthorized,
)

MAX_CHANNELS = 200
"""Channels listed per poll (sorted by name); `channel_total` says how many matched."""
MAX_PRESENCE_CHANNELS = 20
"""Presence channels whose members are looked up per poll (one adapter call each)."""

_NO_STORE = (("Cache-Control", "no-store"), ("X-Content-Type-Options", "nosniff"))
_ROUTES = {"/console/api/state": "GET", "/console/api/trigger": "POST"}


def _json(value: Any, status: int = 200) -> Response:
    return Response(status, orjson.dumps(value), extra_headers=_NO_STORE)


class Console(EventFeed):
    def __init__(self, apps: Mapping[str, App], token: str | None, started_at: float) -> None:
        super().__init__()
        self.apps = apps
        self.token = token
        """The `console_token` setting: a Bearer login with it opens every app ("" = none)."""
        self.started_at = started_at
        self.dashboard = StatsSampler(apps)

    def handle(self, request: Request) -> Response | Coroutine[Any, Any, Response]:
        if request.path in ("/console", "/console/"):
            if request.method != "GET":
                return _json({"error": "Use GET", "status": 405}, 405)
            return Response(
                200, PAGE, content_type="text/html; charset=utf-8", extra_headers=PAGE_HEADERS
            )
        try:
            apps = self._apps_for(request)
            if request.path == "/console/api/stats":  # the dashboard's stats over time
                if request.method != "GET":
                    raise MethodNotAllowed("Use GET for /console/api/stats")
                app = self._pick(apps, request.query.get("app"))
                return _json(self.dashboard.report(app.id, request.query.get("from")))
            method = _ROUTES.get(request.path)
            if method is None:
                raise NotFound(f"No console route {request.path[:100]}")
            if request.method != method:
                raise MethodNotAllowed(f"Use {method} for {request.path}")
            if method == "GET":
                return self._state(apps, request)
            return self._trigger(apps, request)
        except ApiError as exc:
            return _json({"error": exc.message, "status": exc.status}, exc.status)

    def _apps_for(self, request: Request) -> list[App]:
        """The apps this request's credentials open, or `Unauthorized`."""
        header = request.headers.get("authorization", "")
        scheme, _, value = header.partition(" ")
        scheme = scheme.lower()
        token = self.token
        if scheme == "bearer":
            if token and hmac.compare_digest(value.strip().encode(), token.encode()):
                return list(self.apps.values())
        elif scheme == "basic":
            try:
                app_id, _, secret = base64.b64decode(value.strip()).decode().partition(":")
            except (ValueError, UnicodeDecodeError):  # binascii.Error is a ValueError
                raise Unauthorized("Malformed Basic credentials") from None
            app = self.apps.get(app_id)
            expected = app.config.secret if app is not None else "\x00 no such app"
            # Compared even for an unknown app, so timing does not tell which ids exist.
            if hmac.compare_digest(secret.encode(), expected.encode()) and app is not None:
                return [app]
        raise Unauthorized("Sign in with an app id and its secret, or the console token")

    def _pick(self, apps: list[App], app_id: object) -> App:
        if app_id in (None, ""):
            return apps[0]
        for app in apps:
            if app.id == app_id:
                return app
        raise NotFound(f"App '{str(app_id)[:100]}' is not open to this login")

    async def _state(self, apps: list[App], request: Request) -> Response:
        app = self._pick(apps, request.query.get("app"))
        try:
            since = int(request.query.get("since", "0"))
        except ValueError:
            raise BadRequest("'since' must be a number") from None
        needle = request.query.get("channel", "").lower()
        names = sorted(n for n in app.registry.channels if needle in n.lower())
        channels: list[dict[str, Any]] = []
        presence_left = MAX_PRESENCE_CHANNELS
        for name in names[:MAX_CHANNELS]:
            local = app.registry.channels.get(name)
            if local is None:  # emptied while an earlier presence lookup awaited
                continue
            entry: dict[str, Any] = {
                "name": name,
                "type": local.type.kind.value + ("-cache" if local.type.cache else ""),
                "local_subscribers": len(local.subscribers),
            }
            if local.type.is_presence and presence_left > 0:
                presence_left -= 1
                entry["members"] = dict(await app.adapter.presence_members(app.id, name))
            channels.append(entry)
        return _json(
            {
                "apps": [a.id for a in apps],
                "app": app.id,
                "connections": len(app.clients),
                "channel_count": len(app.registry.channels),
                "channel_total": len(names),
                "channels": channels,
                "events": self.since(app.id, since),
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
