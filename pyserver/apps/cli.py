"""`pyserver apps`: list, show, add, change, disable, enable, remove apps and rotate secrets.

Works on the store the configuration names (`app_store`, read with the same `--config` file
and `PYSERVER_*` variables as the server). Every option of an `[[apps]]` entry is a flag,
generated from `AppConfig`, so a new option needs no change here: `--max-connections 10`,
`--client-events false`, `--webhooks '[{"url": "https://example.com/hook"}]'` (JSON for
lists and objects).

Invariants:
- Secrets are printed only with `--show-secrets`, in text and in `--json` output alike.
- With the Redis adapter, a change is announced on Redis after it is saved
  (`cluster.app_changes`), so the nodes apply it at once; a failed announcement is a
  warning, not a failure (the nodes' refresh finds the change).
- Exit status: 0 done; 1 refused (unknown app, duplicate id or key, invalid option or value,
  read-only `config` store); 2 bad command line or configuration; 3 the store cannot be used
  (unreachable, driver not installed, schema too new). The message goes to stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import difflib
import json
import sys
from collections.abc import Sequence
from typing import Any

from pyserver.apps.errors import AppStoreError, UnknownApp
from pyserver.apps.factory import open_app_store
from pyserver.apps.present import FLAG_FIELDS, app_json, option_name, parse_value
from pyserver.apps.present import is_text as _is_text
from pyserver.apps.present import iso_time as _time
from pyserver.apps.present import jsonable as _jsonable
from pyserver.apps.records import StoredApp, validate_app
from pyserver.apps.store import AppStore
from pyserver.config import AppConfig, ConfigError, Settings, load_settings
from pyserver.logs import configure

MASK = "********"


# --- parsing -----------------------------------------------------------------------------------


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _metavar(annotation: Any) -> str:
    if _is_text(annotation):
        return "TEXT"
    return {int: "N", float: "SECONDS", bool: "true|false"}.get(annotation, "JSON")


def _add_option_flags(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("app options (docs/configuration.md, per-app options)")
    for name in FLAG_FIELDS:
        field = AppConfig.model_fields[name]
        default = json.dumps(_jsonable(field.get_default(call_default_factory=True)))
        group.add_argument(
            _flag(name),
            dest=f"option:{name}",
            metavar=_metavar(field.annotation),
            help=f"default {default}",
        )


def _options(args: argparse.Namespace) -> dict[str, Any]:
    return {
        name: parse_value(name, text)
        for name in FLAG_FIELDS
        if (text := getattr(args, f"option:{name}", None)) is not None
    }


def build_parser() -> tuple[argparse.ArgumentParser, dict[str, argparse.ArgumentParser]]:
    """The `pyserver apps` parser, and the parser of each command."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--config", metavar="FILE", default=argparse.SUPPRESS, help="TOML configuration file"
    )
    common.add_argument(
        "--json", action="store_true", default=argparse.SUPPRESS, help="print JSON for scripts"
    )
    common.add_argument(
        "--show-secrets",
        action="store_true",
        default=argparse.SUPPRESS,
        help="print secrets (hidden otherwise)",
    )
    parser = argparse.ArgumentParser(
        prog="pyserver apps",
        parents=[common],
        allow_abbrev=False,
        description="Manage the apps of the configured app store (app_store, docs/apps.md).",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    def command(name: str, text: str, usage: str | None = None) -> argparse.ArgumentParser:
        return commands.add_parser(
            name, parents=[common], help=text, usage=usage, allow_abbrev=False
        )

    command("list", "list the apps")
    show = command("show", "show one app and all its options")
    show.add_argument("id")

    add = command(
        "add",
        "add an app",
        "pyserver apps add --id ID --key KEY --secret SECRET [--OPTION VALUE ...]",
    )
    add.add_argument("--id", required=True)
    add.add_argument("--key", required=True)
    add.add_argument("--secret", required=True)
    _add_option_flags(add)

    change = command(
        "set",
        "change an app's key or options",
        "pyserver apps set ID [--key KEY] [--OPTION VALUE ...] [--reset OPTION ...]",
    )
    change.add_argument("id")
    change.add_argument("--key", help="a new key (clients connect with it from now on)")
    change.add_argument(
        "--reset",
        metavar="OPTION",
        action="append",
        default=[],
        help="return an option to its default (repeatable)",
    )
    _add_option_flags(change)

    for verb, text in (
        ("disable", "disable an app"),
        ("enable", "enable an app"),
        ("remove", "remove an app"),
    ):
        command(verb, text).add_argument("id")
    rotate = command(
        "rotate-secret", "replace an app's secret; the old one stays valid for the grace period"
    )
    rotate.add_argument("id")
    rotate.add_argument("--secret", help="the new secret (default: 32 random hex digits)")
    rotate.add_argument(
        "--grace",
        type=float,
        metavar="SECONDS",
        help="how long the old secret stays valid (default: secret_rotation_grace)",
    )
    return parser, dict(commands.choices)


def _unknown_flags(extra: Sequence[str], command: argparse.ArgumentParser) -> str:
    """The error for arguments the command does not take, with its closest flag."""
    flags = [flag for action in command._actions for flag in action.option_strings]
    problems = []
    after_flag = False
    for word in extra:
        if not word.startswith("-"):
            if not after_flag:  # the value of an unknown flag is no news
                problems.append(f"unexpected argument {word!r}")
            after_flag = False
            continue
        flag = word.partition("=")[0]
        near = difflib.get_close_matches(flag, flags, n=1, cutoff=0.75)
        problems.append(f"unknown option {flag}" + (f" (did you mean {near[0]}?)" if near else ""))
        after_flag = "=" not in word
    return "; ".join(problems)


# --- output ------------------------------------------------------------------------------------


def _table(apps: Sequence[StoredApp], show_secrets: bool) -> str:
    header = ("ID", "KEY", "SECRET", "ENABLED", "NAME", "UPDATED")
    rows = [header] + [
        (
            app.config.id,
            app.config.key,
            app.config.secret if show_secrets else MASK,
            "yes" if app.config.enabled else "no",
            app.config.name or "",
            _time(app.updated_at) or "-",
        )
        for app in apps
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in rows
    )


def _details(app: StoredApp, show_secrets: bool) -> str:
    config = app.config
    lines = [
        f"id:       {config.id}",
        f"key:      {config.key}",
        f"secret:   {config.secret if show_secrets else MASK}",
        f"enabled:  {'yes' if config.enabled else 'no'}",
        f"updated:  {_time(app.updated_at) or '-'} (revision {app.revision})",
    ]
    if app.previous_secret is not None:
        shown = app.previous_secret if show_secrets else MASK
        lines.append(
            f"previous secret: {shown}, valid until {_time(app.previous_secret_expires_at)}"
        )
    lines.append("options (* set for this app, others are defaults):")
    for name in FLAG_FIELDS:
        if name == "enabled":
            continue
        mark = "*" if name in app.options else " "
        value = json.dumps(_jsonable(getattr(config, name)))
        lines.append(f"  {mark} {name} = {value}")
    return "\n".join(lines)


# --- commands ----------------------------------------------------------------------------------


class _Output:
    def __init__(self, args: argparse.Namespace) -> None:
        self.json = bool(getattr(args, "json", False))
        self.show_secrets = bool(getattr(args, "show_secrets", False))

    def app(self, app: StoredApp, message: str) -> None:
        if self.json:
            print(json.dumps(app_json(app, self.show_secrets), indent=2))
        else:
            print(message)


WRITES = ("add", "set", "disable", "enable", "remove", "rotate-secret")


async def _run(args: argparse.Namespace, settings: Settings) -> int:
    out = _Output(args)
    store: AppStore = await open_app_store(settings)
    try:
        status = await _command(store, args, settings, out)
        cursor = await store.cursor() if status == 0 and args.command in WRITES else None
    finally:
        await store.close()
    if cursor is not None and settings.adapter == "redis":
        await _announce(settings, cursor)
    return status


async def _announce(settings: Settings, cursor: int) -> None:
    """Tell the running nodes (Redis adapter) to read the change now, not at their next
    refresh; failing that, they still see it within app_store_refresh seconds."""
    from pyserver.cluster.app_changes import announce

    try:
        await announce(settings, cursor)
    except Exception as exc:
        print(
            f"pyserver apps: the change is saved, but announcing it on Redis failed ({exc}); "
            f"the nodes see it within app_store_refresh ({settings.app_store_refresh:g} s)",
            file=sys.stderr,
        )


async def _command(
    store: AppStore, args: argparse.Namespace, settings: Settings, out: _Output
) -> int:
    command = args.command
    if command == "list":
        apps = await store.list_apps()
        if out.json:
            print(json.dumps([app_json(app, out.show_secrets) for app in apps], indent=2))
        elif apps:
            print(_table(apps, out.show_secrets))
        else:
            print(f"no apps in {store.description}: add one with `pyserver apps add`")
        return 0
    if command == "show":
        app = await store.get(args.id)
        if app is None:
            raise UnknownApp(args.id)
        if out.json:
            print(json.dumps(app_json(app, out.show_secrets), indent=2))
        else:
            print(_details(app, out.show_secrets))
        return 0
    if command == "add":
        values = {"id": args.id, "key": args.key, "secret": args.secret, **_options(args)}
        app = await store.add(validate_app(values))
        out.app(app, f"added app {app.id} (key {app.config.key}) to {store.description}")
        return 0
    if command == "set":
        changes = _changes(args)
        reset = [option_name(name) for name in args.reset]
        app = await store.update(args.id, changes, reset)
        out.app(app, f"changed app {app.id}: {', '.join([*changes, *reset])}")
        return 0
    if command in ("disable", "enable"):
        app = await store.set_enabled(args.id, command == "enable")
        out.app(app, f"{command}d app {app.id}")
        return 0
    if command == "remove":
        await store.remove(args.id)
        if out.json:
            print(json.dumps({"removed": args.id}))
        else:
            print(f"removed app {args.id}")
        return 0
    if command == "rotate-secret":
        grace = settings.secret_rotation_grace if args.grace is None else args.grace
        app, secret = await store.rotate_secret(args.id, args.secret, grace)
        if out.json:
            print(json.dumps(app_json(app, out.show_secrets), indent=2))
            return 0
        until = _time(app.previous_secret_expires_at)
        kept = f"the old one stays valid until {until}" if until else "the old one is invalid now"
        print(f"rotated the secret of app {app.id}; {kept}")
        if out.show_secrets:
            print(f"new secret: {secret}")
        elif args.secret is None:
            print(f"a new secret was generated: `pyserver apps show {app.id} --show-secrets`")
        return 0
    raise AssertionError(f"unhandled command {command}")


def _changes(args: argparse.Namespace) -> dict[str, Any]:
    changes = _options(args)
    if args.key is not None:
        changes["key"] = args.key
    return changes


def main(argv: Sequence[str]) -> int:
    """`pyserver apps ARGS`; returns the exit status."""
    parser, commands = build_parser()
    args, extra = parser.parse_known_args(list(argv))
    if args.command is None:
        parser.print_help(sys.stderr)
        return 2
    if extra:
        commands[args.command].error(_unknown_flags(extra, commands[args.command]))
    if args.command == "set" and not _changes(args) and not args.reset:
        parser.error("set: give at least one option to change or --reset (see set --help)")
    try:
        settings = load_settings(getattr(args, "config", None))
    except ConfigError as exc:
        print(f"pyserver apps: {exc}", file=sys.stderr)
        return 2
    configure(settings.log_level, settings.log_format)
    try:
        return asyncio.run(_run(args, settings))
    except AppStoreError as exc:
        print(f"pyserver apps: {exc}", file=sys.stderr)
        return exc.exit_status
