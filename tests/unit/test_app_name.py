"""An app's `name`: 1 to 255 printable characters (`config.check_app_name`), and a bad one is a
configuration error naming the field, from the TOML file and from `PYSERVER_APPS` alike. (The
`pyserver apps` command, the console and the app stores are in tests/apps and
tests/unit/test_console_apps.py.)"""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from pyserver.config import AppConfig, ConfigError, check_app_name, load_settings

GOOD = ["a", "Shop", "My Shop (EU)", "café", "商店", "a/b", "x" * 255, "é" * 255]
BAD = [
    "",
    "x" * 256,
    "shop\n",  # a trailing newline
    "two\nlines",
    "tab\there",
    "nul\x00",
    "del\x7f",
    "line\u2028separator",
]


@pytest.mark.parametrize("name", GOOD)
def test_a_good_name_is_kept(name: str) -> None:
    assert check_app_name(name) == name
    assert AppConfig(id="1", key="k", secret="s", name=name).name == name


@pytest.mark.parametrize("name", BAD)
def test_a_bad_name_is_refused_saying_what_a_name_is(name: str) -> None:
    with pytest.raises(ValueError, match=r"an app name is 1 to 255 printable characters"):
        check_app_name(name)
    with pytest.raises(ValidationError, match="name"):
        AppConfig(id="1", key="k", secret="s", name=name)


def test_no_name_is_fine() -> None:
    assert AppConfig(id="1", key="k", secret="s").name is None


def test_a_long_bad_name_is_shown_cut_short() -> None:
    with pytest.raises(ValueError) as caught:
        check_app_name("y\t" * 200)
    assert "(400 characters)" in str(caught.value) and len(str(caught.value)) < 200


def test_the_config_file_names_the_app_and_the_field(tmp_path: Path) -> None:
    path = tmp_path / "pyserver.toml"
    path.write_text(
        '[[apps]]\nid = "1"\nkey = "k1"\nsecret = "s"\nname = "ok"\n'
        '[[apps]]\nid = "2"\nkey = "k2"\nsecret = "s"\nname = "my\\tshop"\n'
    )
    with pytest.raises(ConfigError, match=r"apps\.1\.name: .*an app name is .*'my\\tshop'"):
        load_settings(path)


def test_pyserver_apps_names_the_app_and_the_field(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYSERVER_APPS", '[{"id": "1", "key": "k", "secret": "s", "name": ""}]')
    with pytest.raises(ConfigError, match=r"apps\.0\.name: .*an app name is .*not ''"):
        load_settings()
