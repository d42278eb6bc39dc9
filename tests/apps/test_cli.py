"""Issue 15 item 4: `pyserver apps`, run as the installed command on each database store
(and on the read-only `config` store), with its output and exit statuses."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.redisproc import free_port

SECRET = "first-secret-5e3a"


class Apps:
    """`pyserver apps ...` with `PYSERVER_APP_STORE` set to a store."""

    def __init__(self, store_url: str, cwd: Path) -> None:
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("PYSERVER_")}
        self.env["PYSERVER_APP_STORE"] = store_url
        self.cwd = cwd

    def __call__(self, *args: str, status: int = 0) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            ["pyserver", "apps", *args],
            env=self.env,
            cwd=self.cwd,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == status, (args, done.returncode, done.stdout, done.stderr)
        return done

    def json(self, *args: str) -> Any:
        return json.loads(self("--json", *args).stdout)


def test_manage_an_app_from_add_to_remove(store_url: str, tmp_path: Path) -> None:
    apps = Apps(store_url, tmp_path)
    added = apps(
        "add",
        "--id",
        "42",
        "--key",
        "shop-key",
        "--secret",
        SECRET,
        "--name",
        "Shop",
        "--max-connections",
        "100",
        "--client-events",
        "false",
        "--webhooks",
        '[{"url": "https://example.com/hook", "event_types": ["channel_occupied"]}]',
    )
    assert "added app 42 (key shop-key)" in added.stdout and SECRET not in added.stdout
    assert "created the schema (version 1)" in added.stderr

    listed = apps("list")
    assert "42" in listed.stdout and "shop-key" in listed.stdout and "Shop" in listed.stdout
    assert SECRET not in listed.stdout and "********" in listed.stdout
    [entry] = apps.json("list")
    assert "secret" not in entry and entry["options"]["max_connections"] == 100
    assert entry["settings"]["client_events"] is False and entry["enabled"] is True

    shown = apps("show", "42")
    assert SECRET not in shown.stdout and "* max_connections = 100" in shown.stdout
    assert "  max_presence_members = 100" in shown.stdout  # a default, not set
    assert apps.json("show", "42", "--show-secrets")["secret"] == SECRET

    apps("set", "42", "--max-connections", "10", "--cache-ttl", "60", "--reset", "name")
    assert "disabled app 42" in apps("disable", "42").stdout
    after = apps.json("show", "42")
    assert after["settings"]["max_connections"] == 10 and after["settings"]["cache_ttl"] == 60
    assert after["settings"]["name"] is None and "name" not in after["options"]
    assert after["options"]["webhooks"] == [
        {"url": "https://example.com/hook", "event_types": ["channel_occupied"]}
    ]
    assert after["enabled"] is False
    apps("enable", "42")

    rotated = apps("rotate-secret", "42")
    assert "the old one stays valid until" in rotated.stdout
    assert "pyserver apps show 42 --show-secrets" in rotated.stdout
    now = apps.json("show", "42", "--show-secrets")
    assert now["secret"] != SECRET and now["previous_secret"] == SECRET
    assert now["enabled"] is True

    refused = {
        ("add", "--id", "42", "--key", "k2", "--secret", "s"): "an app with id '42' already exists",
        ("add", "--id", "2", "--key", "shop-key", "--secret", "s"): (
            "the key 'shop-key' is already used by app '42'"
        ),
        ("set", "42", "--max-connections", "-1"): (
            "max_connections: Input should be greater than or equal to 0"
        ),
    }
    for args, message in refused.items():
        done = apps(*args, status=1)
        assert f"pyserver apps: {message}" in done.stderr, (args, done.stderr)

    assert "removed app 42" in apps("remove", "42").stdout
    assert "no app with id '42'" in apps("remove", "42", status=1).stderr
    assert apps.json("list") == []


def test_bad_input_exits_non_zero_with_a_clear_message(tmp_path: Path) -> None:
    apps = Apps(f"sqlite:///{tmp_path / 'apps.db'}", tmp_path)
    apps("add", "--id", "1", "--key", "k1", "--secret", "s1")
    refused = {
        ("set", "1", "--webhooks", '[{"url": "ftp://x"}]'): "webhooks.0.url: String should match",
        ("set", "1", "--client-events", "maybe"): "client_events: Input should be a valid boolean",
        ("set", "1", "--reset", "key"): "key has no default to reset to",
        ("show", "9"): "no app with id '9'",
        ("set", "9", "--watchlist", "false"): "no app with id '9'",
        ("disable", "9"): "no app with id '9'",
        ("rotate-secret", "9"): "no app with id '9'",
        ("rotate-secret", "1", "--secret", "s1"): "secret: the new secret is the current one",
        ("set", "1", "--name", "my\nshop"): "name: Value error, an app name is 1 to 255",
        ("add", "--id", "2", "--key", "k2", "--secret", "s2", "--name", "a" * 256): (
            "name: Value error, an app name is 1 to 255"
        ),
    }
    for args, message in refused.items():
        done = apps(*args, status=1)
        assert f"pyserver apps: {message}" in done.stderr, (args, done.stderr)
        assert "Traceback" not in done.stderr
    usage = {
        ("set", "1", "--max-conections", "3"): (
            "unknown option --max-conections (did you mean --max-connections?)"
        ),
        ("set", "1"): "give at least one option to change",
        ("add", "--id", "3", "--key", "k3"): "the following arguments are required: --secret",
        (): "COMMAND",
    }
    for args, message in usage.items():
        done = apps(*args, status=2)
        assert message in done.stderr, (args, done.stderr)
    assert apps.json("show", "1")["options"] == {}  # nothing refused was written
    assert [a["id"] for a in apps.json("list")] == ["1"]


def test_secrets_show_only_when_asked(tmp_path: Path) -> None:
    apps = Apps(f"sqlite:///{tmp_path / 'apps.db'}", tmp_path)
    apps("add", "--id", "1", "--key", "k1", "--secret", SECRET)
    assert SECRET in apps("list", "--show-secrets").stdout
    assert SECRET in apps("show", "1", "--show-secrets").stdout
    chosen = apps("rotate-secret", "1", "--secret", "chosen-secret", "--grace", "0")
    assert "chosen-secret" not in chosen.stdout and "the old one is invalid now" in chosen.stdout
    shown = apps("rotate-secret", "1", "--show-secrets")
    new = shown.stdout.split("new secret: ")[1].strip()
    assert len(new) == 32 and apps.json("show", "1", "--show-secrets")["secret"] == new
    as_json = apps.json("rotate-secret", "1")
    assert "secret" not in as_json and "previous_secret" not in as_json
    assert as_json["previous_secret_expires_at"]


def test_the_config_store_lists_but_refuses_changes(tmp_path: Path) -> None:
    config = tmp_path / "pyserver.toml"
    config.write_text('[[apps]]\nid = "7"\nkey = "seven"\nsecret = "hidden-7"\n')
    apps = Apps("config", tmp_path)
    listed = apps("--config", str(config), "list")
    assert "seven" in listed.stdout and "hidden-7" not in listed.stdout
    for args in (
        ("add", "--id", "8", "--key", "k", "--secret", "s"),
        ("set", "7", "--max-connections", "1"),
        ("disable", "7"),
        ("remove", "7"),
        ("rotate-secret", "7"),
    ):
        done = apps("--config", str(config), *args, status=1)
        assert 'app_store = "config" is read-only' in done.stderr


def test_the_configuration_seeds_a_new_store_once(tmp_path: Path) -> None:
    config = tmp_path / "pyserver.toml"
    config.write_text(
        '[[apps]]\nid = "1"\nkey = "k1"\nsecret = "s1"\nmax_connections = 5\n\n'
        '[[apps]]\nid = "2"\nkey = "k2"\nsecret = "s2"\n'
    )
    apps = Apps(f"sqlite:///{tmp_path / 'apps.db'}", tmp_path)
    first = apps("list", "--config", str(config))
    assert "seeded sqlite:///" in first.stderr and "with the 2 app(s)" in first.stderr
    apps("remove", "1", "--config", str(config))
    apps("remove", "2", "--config", str(config))
    again = apps("list", "--config", str(config))
    assert "seeded" not in again.stderr and "no apps in" in again.stdout


@pytest.mark.parametrize("scheme", ["postgresql", "mysql"])
def test_an_unreachable_store_exits_3_without_its_password(scheme: str, tmp_path: Path) -> None:
    apps = Apps(f"{scheme}://admin:hunter2@127.0.0.1:{free_port()}/apps", tmp_path)
    done = apps("list", status=3)
    assert "is unavailable" in done.stderr and "admin:***@127.0.0.1" in done.stderr
    assert "hunter2" not in done.stderr + done.stdout and "Traceback" not in done.stderr


def test_a_bad_configuration_exits_2(tmp_path: Path) -> None:
    apps = Apps("redis://127.0.0.1", tmp_path)
    done = apps("list", status=2)
    assert 'app_store: Value error, use "config" or a URL starting with sqlite://' in done.stderr


def test_a_change_is_saved_even_when_redis_cannot_be_told(tmp_path: Path) -> None:
    apps = Apps(f"sqlite:///{tmp_path / 'apps.db'}", tmp_path)
    apps.env["PYSERVER_ADAPTER"] = "redis"
    apps.env["PYSERVER_REDIS_URL"] = f"redis://127.0.0.1:{free_port()}"  # nobody listens
    done = apps("add", "--id", "1", "--key", "k", "--secret", "s")
    assert "announcing it on Redis failed" in done.stderr
    assert "within app_store_refresh (5 s)" in done.stderr
    assert apps.json("show", "1")["key"] == "k"
    assert "announcing" not in apps("list").stderr  # reading announces nothing
