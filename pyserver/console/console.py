"""The live debug console: `/console` serves a page, `/console/api/...` its JSON.

Access: `Authorization: Bearer <console_token>` opens every app (when a token is set);
`Authorization: Basic base64(<app id>:<app secret>)` opens that app only. Secrets are
compared in constant time and never sent back.

Routes:
- `GET /console`: the page (`page.py`), which polls the API about once a second.
- `GET /console/api/state?app=ID&since=N`: the apps this login may see, then for `app`:
  connection count, channels with local subscribers, presence members, and the feed's
  events after sequence N.
- `POST /console/api/trigger` `{"app", "channel", "event", "data"}`: publish a test event.
"""

from __future__ import annotations

import base64
import binascii
import hmac
from typing import TYPE_CHECKING, Any

import orjson

from pyserver.channels.app import App
from pyserver.console.feed import EventFeed
from pyserver.console.page import PAGE
from pyserver.protocol.errors import ApiError, BadRequest, NotFound, PayloadTooLarge, Unauthorized
from pyserver.protocol.names import channel_name_problem, channel_type, event_name_problem
from pyserver.server.http import Request, Response, error_response, json_response

if TYPE_CHECKING:
    from collections.abc import Coroutine

    from pyserver.server.server import Server


class Console(EventFeed):
    def __init__(self, server: Server) -> None:
        super().__init__()
        self.server = server

    def handle(self, request: Request) -> Response | Coroutine[Any, Any, Response]:
        if request.path in ("/console", "/console/"):
            return Response(200, PAGE, content_type="text/html; charset=utf-8")
        try:
            apps = self._apps_for(request)
            if request.path == "/console/api/state" and request.method == "GET":
                return self._state(apps, request)
            if request.path == "/console/api/trigger" and request.method == "POST":
                return self._trigger(apps, request)
            raise NotFound(f"No console route {request.method} {request.path[:100]}")
        except ApiError as exc:
            return error_response(exc.status, exc.message)

    def _apps_for(self, request: Request) -> list[App]:
        """The apps this request's credentials open, or `Unauthorized`."""
        header = request.headers.get("authorization", "")
        scheme, _, value = header.partition(" ")
        token = self.server.settings.console_token
        if scheme.lower() == "bearer" and token:
            if hmac.compare_digest(value.encode(), token.encode()):
                return list(self.server.apps_by_id.values())
        elif scheme.lower() == "basic":
            try:
                app_id, _, secret = base64.b64decode(value).decode().partition(":")
            except (binascii.Error, UnicodeDecodeError):
                raise Unauthorized("Malformed Basic credentials") from None
            app = self.server.apps_by_id.get(app_id)
            if app is not None and hmac.compare_digest(secret.encode(), app.config.secret.encode()):
                return [app]
        raise Unauthorized("Sign in with an app id and its secret, or the console token")

    def _pick(self, apps: list[App], app_id: str | None) -> App:
        for app in apps:
            if app_id in (None, "", app.id):
                return app
        raise NotFound(f"App '{str(app_id)[:100]}' is not open to this login")

    async def _state(self, apps: list[App], request: Request) -> Response:
        app = self._pick(apps, request.query.get("app"))
        try:
            since = int(request.query.get("since", "0"))
        except ValueError:
            raise BadRequest("'since' must be a number") from None
        channels = []
        for name, channel in sorted(app.registry.channels.items()):
            entry: dict[str, Any] = {"name": name, "local_subscribers": len(channel.subscribers)}
            if channel_type(name).is_presence:
                entry["members"] = dict(await app.adapter.presence_members(app.id, name))
            channels.append(entry)
        return json_response(
            {
                "apps": [a.id for a in apps],
                "app": app.id,
                "connections": len(app.clients),
                "channels": channels,
                "events": self.since(app.id, since),
            }
        )

    def _trigger(self, apps: list[App], request: Request) -> Response:
        try:
            body = orjson.loads(request.body)
        except orjson.JSONDecodeError:
            raise BadRequest("The body must be a JSON object") from None
        if not isinstance(body, dict):
            raise BadRequest("The body must be a JSON object")
        app = self._pick(apps, body.get("app"))
        channel, event, data = body.get("channel"), body.get("event"), body.get("data", "")
        problem = channel_name_problem(channel) or event_name_problem(event)
        if problem is not None:
            raise BadRequest(problem)
        if not isinstance(data, str):
            data = orjson.dumps(data).decode()
        if len(data.encode()) > app.config.max_event_payload_bytes:
            raise PayloadTooLarge(
                f"Event data is larger than {app.config.max_event_payload_bytes} bytes"
            )
        assert isinstance(channel, str) and isinstance(event, str)
        app.trigger(event, [channel], data, None)
        return json_response({"ok": True})
