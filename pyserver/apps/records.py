"""What a store holds for one app, and the one place an app is validated and split into columns.

A stored app is an `AppConfig` (validated, exactly what an `[[apps]]` entry gives) plus what
only a store has: the previous secret and the moment it stops being valid, the revision of
its last change and when that was.

Invariants:
- The real columns are id, key, secret, enabled (plus the rotation and change columns); every
  other `AppConfig` field lives in one JSON document, `options`, holding only the options that
  were set explicitly, so a default changed by a later pyserver applies to apps that never
  set it.
- Every write goes through `validate_app`, so a store never holds what `AppConfig` refuses,
  and every error names the field (`InvalidApp`). Reading goes through `parse_row`, which
  returns None (after an error log line naming the app and the field) for a row that no
  longer validates, e.g. one edited by hand or written by a newer pyserver.
- No clock reads and no I/O here: times are passed in.
"""

from __future__ import annotations

import difflib
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
from pydantic import ValidationError

from pyserver.apps.errors import InvalidApp
from pyserver.config import AppConfig

log = logging.getLogger("pyserver.apps")

COLUMNS = ("id", "key", "secret", "enabled")
"""AppConfig fields stored as real columns; every other field is an option."""
OPTIONS = tuple(name for name in AppConfig.model_fields if name not in COLUMNS)
"""The fields stored in the `options` JSON document (and offered by `pyserver apps set`)."""
MAX_COLUMN_BYTES = 255
"""Longest id, key and secret (UTF-8 bytes): the width of the columns in MySQL/MariaDB."""


@dataclass(frozen=True, slots=True)
class StoredApp:
    """One app as a store has it."""

    config: AppConfig
    options: Mapping[str, Any] = field(default_factory=dict)
    """The options set explicitly (JSON-compatible values); the rest are AppConfig's defaults."""
    revision: int = 0
    """The store's change counter when this app last changed (0 for the config store)."""
    updated_at: float = 0.0
    """Unix time of the last change (0 for the config store)."""
    previous_secret: str | None = None
    """The secret replaced by the last rotation, valid until `previous_secret_expires_at`."""
    previous_secret_expires_at: float | None = None

    @property
    def id(self) -> str:
        return self.config.id

    def secrets(self, now: float) -> tuple[str, ...]:
        """The secrets a signature may be made with at `now`: the current one first."""
        if (
            self.previous_secret is not None
            and self.previous_secret_expires_at is not None
            and now < self.previous_secret_expires_at
        ):
            return (self.config.secret, self.previous_secret)
        return (self.config.secret,)


@dataclass(frozen=True, slots=True)
class ChangeSet:
    """What changed in a store after a cursor (see `AppStore.changes`)."""

    cursor: int
    """Pass this to the next `changes` call."""
    full: bool
    """True: `apps` is every app, and any app not in it is gone (replace, do not merge)."""
    apps: tuple[StoredApp, ...] = ()
    """Apps added or changed (all apps when `full`)."""
    removed: tuple[str, ...] = ()
    """Ids of apps removed (never set when `full`)."""
    skipped: tuple[str, ...] = ()
    """Ids of changed apps whose row no longer validates (logged); they are in neither list."""


@dataclass(frozen=True, slots=True)
class Row:
    """An app's row as the database returns it, before validation."""

    id: str
    key: str
    secret: str
    enabled: bool
    options: str
    revision: int
    updated_at: float
    previous_secret: str | None
    previous_secret_expires_at: float | None


def validate_app(values: Mapping[str, Any]) -> AppConfig:
    """An AppConfig from `values` (columns and options), or InvalidApp naming the field."""
    for name in ("id", "key", "secret"):
        value = values.get(name)
        if isinstance(value, str) and len(value.encode()) > MAX_COLUMN_BYTES:
            raise _invalid(name, f"at most {MAX_COLUMN_BYTES} bytes")
    try:
        return AppConfig.model_validate(dict(values))
    except ValidationError as exc:
        raise _from_validation(exc, values.get("id")) from None


def revalidate(app: AppConfig) -> AppConfig:
    """`app` checked against the store's limits too, keeping which options were set."""
    return validate_app(app.model_dump(exclude_unset=True))


def explicit_options(app: AppConfig) -> dict[str, Any]:
    """The options of `app` that were set explicitly (down to the fields of a webhook
    target), as JSON-compatible values."""
    return app.model_dump(mode="json", include=set(OPTIONS), exclude_unset=True)


def dump_options(options: Mapping[str, Any]) -> str:
    return orjson.dumps(dict(options), option=orjson.OPT_SORT_KEYS).decode()


def parse_row(row: Row) -> StoredApp | None:
    """The app of `row`, or None (logged with the app and the field) when it does not validate."""
    try:
        options = orjson.loads(row.options)
        if not isinstance(options, dict):
            raise ValueError("options is not a JSON object")
    except ValueError as exc:
        log.error("app store: app %r is skipped: its options are not valid JSON (%s)", row.id, exc)
        return None
    options = {name: value for name, value in options.items() if name not in COLUMNS}
    values = {**options, "id": row.id, "key": row.key, "secret": row.secret}
    values["enabled"] = bool(row.enabled)
    try:
        config = validate_app(values)
    except InvalidApp as exc:
        log.error(
            "app store: app %r is skipped, its row no longer validates: %s "
            "(fix it with `pyserver apps set`)",
            row.id,
            exc,
        )
        return None
    return StoredApp(
        config=config,
        options=options,
        revision=int(row.revision),
        updated_at=float(row.updated_at),
        previous_secret=row.previous_secret,
        previous_secret_expires_at=(
            None
            if row.previous_secret_expires_at is None
            else float(row.previous_secret_expires_at)
        ),
    )


def apply_changes(
    row: Row, changes: Mapping[str, Any], reset: Sequence[str] = ()
) -> tuple[AppConfig, dict[str, Any]]:
    """The app of `row` after `changes` (columns key and enabled, or options) are set and the
    options named in `reset` go back to their defaults, validated, with its explicit options.

    Refuses (InvalidApp) unknown names (with the closest option), the id (fixed for the life
    of an app), the secret (that is `rotate_secret`, which keeps the old one valid for a
    while) and resetting a column. Works on a row that no longer validates, so that `set` is
    how such a row is repaired.
    """
    try:
        stored = orjson.loads(row.options)
    except ValueError:
        stored = None
    if not isinstance(stored, dict):  # never replace what cannot be read: fix it by hand
        raise InvalidApp(
            f"the options of app {row.id!r} are not a JSON object: correct the row with SQL "
            "(docs/apps.md, changing rows by hand)"
        )
    for name in [*changes, *reset]:
        if name not in AppConfig.model_fields and not (name in reset and name in stored):
            raise _unknown(name)
        if name == "id":
            raise InvalidApp("an app's id cannot change: add a new app and remove this one")
        if name == "secret":
            raise InvalidApp(
                "the secret changes with rotate-secret, which keeps the old one valid for "
                "the grace period"
            )
    for name in reset:
        if name in COLUMNS:
            raise InvalidApp(f"{name} has no default to reset to: set it instead")
    options = {
        name: value for name, value in stored.items() if name not in COLUMNS and name not in reset
    }
    options.update({name: value for name, value in changes.items() if name not in COLUMNS})
    values = {
        **options,
        "id": row.id,
        "key": changes.get("key", row.key),
        "secret": row.secret,
        "enabled": changes.get("enabled", bool(row.enabled)),
    }
    config = validate_app(values)
    return config, explicit_options(config)


def _unknown(name: str) -> InvalidApp:
    near = difflib.get_close_matches(name, list(AppConfig.model_fields), n=1, cutoff=0.7)
    hint = f" (did you mean {near[0]!r}?)" if near else ""
    return InvalidApp(f"unknown option {name!r}{hint}")


def _invalid(name: str, message: str) -> InvalidApp:
    return InvalidApp(f"{name}: {message}")


def _from_validation(exc: ValidationError, app_id: object) -> InvalidApp:
    problems = []
    for err in exc.errors():
        name = ".".join(str(p) for p in err["loc"]) or "app"
        if err["type"] == "extra_forbidden":
            problems.append(str(_unknown(name)))
        else:
            problems.append(f"{name}: {err['msg']}")
    return InvalidApp("; ".join(problems))
