"""How an app is shown and how an option's value is read from text, for every tool that
manages apps: `pyserver apps` (cli.py) and the console's Apps page (pyserver/console).

Invariants:
- `app_json` leaves the secret and the previous secret out unless `show_secrets` is given;
  nothing else in it is secret.
- `parse_value` only reads text into the value `AppConfig` then validates; it never decides
  whether a value is allowed (that is `records.validate_app`, through the store).
- No I/O and no clock reads: times are passed in.
"""

from __future__ import annotations

import json
import time
import types
from typing import Any, Union, get_args, get_origin

from pyserver.apps.records import COLUMNS, OPTIONS, StoredApp
from pyserver.config import AppConfig

FLAG_FIELDS = tuple(name for name in AppConfig.model_fields if name not in ("id", "key", "secret"))
"""The AppConfig fields a tool offers to set by name (`enabled` among them, the id, key and
secret apart): `pyserver apps add/set --flag VALUE` and the console's option forms."""


def is_text(annotation: Any) -> bool:
    """str, or str | None: a value given as text is taken as it is, not read as JSON."""
    if annotation is str:
        return True
    if get_origin(annotation) in (Union, types.UnionType):
        return all(arg is str or arg is type(None) for arg in get_args(annotation))
    return False


def option_name(text: str) -> str:
    """An option as a person may write it (`max-connections`, `--max-connections`) as the
    field's name (`max_connections`)."""
    return text.lstrip("-").replace("-", "_")


def parse_value(name: str, text: str) -> Any:
    """An option's text as the value AppConfig validates: text fields as given, others as JSON
    when it parses (10, false, ["a"]), else as given (so AppConfig names what is wrong).
    `name` must be an AppConfig field."""
    if is_text(AppConfig.model_fields[name].annotation):
        return text
    try:
        return json.loads(text)
    except ValueError:
        return text


def jsonable(value: Any) -> Any:
    if hasattr(value, "model_dump"):
        return value.model_dump(mode="json")
    if isinstance(value, tuple | list):
        return [jsonable(item) for item in value]
    return value


def iso_time(seconds: float | None) -> str | None:
    """Unix seconds as `2026-12-05T08:00:00Z`; None for 0 or None (never set); the number
    itself when it is no date (a row edited by hand), so that showing an app never fails."""
    if not seconds:
        return None
    try:
        return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(seconds))
    except (OverflowError, OSError, ValueError):
        return str(seconds)


def app_json(app: StoredApp, show_secrets: bool) -> dict[str, Any]:
    """The app as JSON: id, key, (secret), enabled, the options set for it, every option's
    value (`settings`), revision, updated_at and, after a rotation, (previous_secret) and
    previous_secret_expires_at. Secrets only with `show_secrets`."""
    config = app.config
    data: dict[str, Any] = {"id": config.id, "key": config.key}
    if show_secrets:
        data["secret"] = config.secret
    data["enabled"] = config.enabled
    data["options"] = dict(app.options)
    data["settings"] = config.model_dump(mode="json", exclude=set(COLUMNS))
    data["revision"] = app.revision
    data["updated_at"] = iso_time(app.updated_at)
    if app.previous_secret is not None:
        if show_secrets:
            data["previous_secret"] = app.previous_secret
        data["previous_secret_expires_at"] = iso_time(app.previous_secret_expires_at)
    return data


def option_defaults() -> dict[str, Any]:
    """Every option (the fields of `records.OPTIONS`) with its default, as JSON values."""
    return {
        name: jsonable(AppConfig.model_fields[name].get_default(call_default_factory=True))
        for name in OPTIONS
    }
