"""The console's Apps page: list, show, add, change, disable, enable, remove apps and rotate
their secrets, the operations of `pyserver apps`, over JSON.

This module owns the `/console/api/apps...` routes; the console (`console.py`) decides who
reaches them (the `console_token` login only: an app's own login is answered 403), the page
(`page.py`) draws them.

Routes (bodies and answers are JSON objects; an error is `{"error": MESSAGE, "status": N}`):
- `GET /console/api/apps`: `store` (its description, no password), `read_only` and, when
  read-only, `reason`; `apps`, each as `pyserver apps list --json` shows it (no secrets);
  `options`, every option with its default (for the page's forms).
- `GET /console/api/apps/show?id=ID[&secrets=1]`: one app; its secret (and the previous one
  during its grace period) only with `secrets=1`.
- `POST /console/api/apps/add` `{"id", "key", "secret", "options": {NAME: VALUE}}`.
- `POST /console/api/apps/set` `{"id", "options": {NAME: VALUE}, "reset": [NAME]}`; `key`
  and `enabled` are set like options.
- `POST /console/api/apps/disable`, `/enable`, `/remove` `{"id"}`.
- `POST /console/api/apps/rotate-secret` `{"id", "secret"?, "grace"?}`: answers the app and
  `secret`, the new one (the operator asked for it: a generated secret is seen only here).

Invariants:
- Every change goes through the store's own operations, validated there by the code
  `pyserver apps` uses (`records.validate_app`); an option given as text is read like the
  CLI's `--option TEXT` (`present.parse_value`), any other JSON value is passed as it is.
  This module only checks the shape of the body (which fields are text, which objects).
- Store errors map to statuses here, once: unknown app 404, duplicate id or key 409,
  invalid option or value 400, read-only store (`app_store = "config"`) 409, the store
  unusable (database down, driver missing) 503. The message is the store's, made for an
  operator, and never holds a secret.
- After a change the server is told at once (`applied`), so this node serves it without
  waiting for the next refresh; the change is stored even if that call fails.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any

import orjson

from pyserver.api.triggers import json_object
from pyserver.apps.errors import (
    AppStoreError,
    DuplicateApp,
    ReadOnlyStore,
    UnknownApp,
)
from pyserver.apps.present import (
    FLAG_FIELDS,
    app_json,
    option_defaults,
    option_name,
    parse_value,
)
from pyserver.apps.records import validate_app
from pyserver.apps.store import AppStore, ConfigStore
from pyserver.config import AppConfig
from pyserver.http import Request, Response
from pyserver.protocol.errors import ApiError, BadRequest, MethodNotAllowed, NotFound

log = logging.getLogger("pyserver.console")

PREFIX = "/console/api/apps"
ROUTES = {
    "": "GET",
    "/show": "GET",
    "/add": "POST",
    "/set": "POST",
    "/disable": "POST",
    "/enable": "POST",
    "/remove": "POST",
    "/rotate-secret": "POST",
}
"""The routes under PREFIX and their methods."""

_NO_STORE = (("Cache-Control", "no-store"), ("X-Content-Type-Options", "nosniff"))


def _json(value: Any, status: int = 200) -> Response:
    return Response(status, orjson.dumps(value), extra_headers=_NO_STORE)


def store_error(exc: AppStoreError) -> ApiError:
    """The console's answer to a store's error (see the module's invariants)."""
    status = 400
    if isinstance(exc, UnknownApp):
        status = 404
    elif isinstance(exc, DuplicateApp | ReadOnlyStore):
        status = 409
    elif exc.exit_status != 1:  # the store cannot be used at all
        status = 503
    return ApiError(str(exc), status)


class AppsAdmin:
    """The Apps page's endpoints, on the store the server reads its apps from."""

    def __init__(self, config_apps: Callable[[], Iterable[AppConfig]]) -> None:
        """`config_apps`: the apps served now, shown read-only while no store is attached
        (`app_store = "config"`)."""
        self._config_apps = config_apps
        self.store: AppStore | None = None
        """The server's open store; None: the configuration's apps, read-only."""
        self.rotation_grace = 300.0
        """The `secret_rotation_grace` setting: a rotation's default grace period."""
        self.applied: Callable[[str], Awaitable[None]] | None = None
        """Told the app id after each change, to serve the change at once on this node."""
        self.unusable: Callable[[], str | None] = lambda: None
        """Why the store cannot be used now (not open yet: the database was away at start),
        or None; while it says something every request is answered 503 with it."""

    def attach(
        self,
        store: AppStore,
        rotation_grace: float,
        applied: Callable[[str], Awaitable[None]] | None = None,
        unusable: Callable[[], str | None] | None = None,
    ) -> None:
        """Manage `store`, the server's (see the attributes for the others)."""
        self.store = store
        self.rotation_grace = rotation_grace
        self.applied = applied
        if unusable is not None:
            self.unusable = unusable

    def _store(self) -> AppStore:
        if self.store is not None:
            return self.store
        return ConfigStore(list(self._config_apps()))

    async def handle(self, request: Request) -> Response:
        """Answer a request for PREFIX or below it (the caller has checked the login)."""
        route = request.path[len(PREFIX) :].rstrip("/")
        method = ROUTES.get(route)
        if method is None:
            raise NotFound(f"No console route {request.path[:100]}")
        if request.method != method:
            raise MethodNotAllowed(f"Use {method} for {request.path[:100]}")
        problem = self.unusable()
        if problem is not None:
            raise ApiError(problem, 503)
        store = self._store()
        try:
            if route == "":
                return _json(await self._list(store))
            if route == "/show":
                app_id = request.query.get("id", "")
                shown = await store.get(app_id)
                if shown is None:
                    raise UnknownApp(app_id)
                secrets = request.query.get("secrets", "") in ("1", "true")
                return _json(app_json(shown, secrets))
            return _json(await self._change(store, route, json_object(request.body)))
        except AppStoreError as exc:
            raise store_error(exc) from None

    async def _list(self, store: AppStore) -> dict[str, Any]:
        apps = await store.list_apps()
        listing: dict[str, Any] = {"store": store.description, "read_only": store.read_only}
        if store.read_only:
            listing["reason"] = str(ReadOnlyStore())
        listing["apps"] = [app_json(app, False) for app in apps]
        listing["options"] = option_defaults()
        return listing

    async def _change(self, store: AppStore, route: str, body: dict[str, Any]) -> dict[str, Any]:
        app_id = _text(body, "id")
        answer: dict[str, Any]
        if route == "/add":
            options = _options(body)
            for name in ("id", "key", "secret"):
                if name in options:
                    raise BadRequest(f"{name} is a field of its own, not an option")
            values = {**options, "id": app_id, "key": _text(body, "key")}
            values["secret"] = _text(body, "secret")
            answer = app_json(await store.add(validate_app(values)), False)
        elif route == "/set":
            changes = _options(body)
            reset = [option_name(name) for name in _names(body, "reset")]
            if not changes and not reset:
                raise BadRequest("Give at least one option to change or to reset")
            answer = app_json(await store.update(app_id, changes, reset), False)
        elif route in ("/disable", "/enable"):
            answer = app_json(await store.set_enabled(app_id, route == "/enable"), False)
        elif route == "/remove":
            await store.remove(app_id)
            answer = {"removed": app_id}
        else:  # /rotate-secret
            secret = body.get("secret")
            if secret is not None and not isinstance(secret, str):
                raise BadRequest("'secret' must be text (or left out for a random one)")
            grace = body.get("grace", self.rotation_grace)
            if grace is None:
                grace = self.rotation_grace
            if isinstance(grace, bool) or not isinstance(grace, int | float):
                raise BadRequest("'grace' must be a number of seconds")  # its range: the store
            rotated, new_secret = await store.rotate_secret(app_id, secret or None, grace)
            answer = {**app_json(rotated, False), "secret": new_secret}
        log.info("console: %s app %s", route.lstrip("/"), app_id)
        await self._applied(app_id)
        return answer

    async def _applied(self, app_id: str) -> None:
        if self.applied is None:
            return
        try:
            await self.applied(app_id)
        except AppStoreError as exc:  # the change is stored: the next refresh serves it
            log.warning("console: app %s was changed but not applied at once: %s", app_id, exc)
        except Exception:
            log.exception("console: app %s was changed but not applied at once", app_id)


def _text(body: Mapping[str, Any], name: str) -> str:
    value = body.get(name)
    if not isinstance(value, str) or not value:
        raise BadRequest(f"'{name}' is required, as text")
    return value


def _options(body: Mapping[str, Any]) -> dict[str, Any]:
    """`body["options"]`: each value given as text is read like the CLI's `--name TEXT`."""
    options = body.get("options", {})
    if not isinstance(options, dict):
        raise BadRequest("'options' must be an object of option names and values")
    values: dict[str, Any] = {}
    for name, value in options.items():
        if isinstance(value, str) and (name in FLAG_FIELDS or name == "key"):
            value = parse_value(name, value)
        values[name] = value  # an unknown name is refused by the store, with the closest one
    return values


def _names(body: Mapping[str, Any], field: str) -> list[str]:
    names = body.get(field, [])
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise BadRequest(f"'{field}' must be a list of option names")
    return names


__all__ = ["PREFIX", "ROUTES", "AppsAdmin", "store_error"]
