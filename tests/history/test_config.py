"""`[[apps.history]]` rules: their validation (TOML and PYSERVER_APPS), their documentation,
and which rule a channel gets (`RuleBook`)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from pyserver.config import ConfigError, HistoryRule, Settings, load_settings
from pyserver.protocol import history as history_protocol
from pyserver.protocol.history import RuleBook

ROOT = Path(__file__).resolve().parents[2]

TOML = """
[[apps]]
id = "1"
key = "k"
secret = "s"

[[apps.history]]
channels = "chat-*"
limit = 100
ttl = 3600
rewind = 10
recovery_window = 120
client_events = false

[[apps.history]]
channels = "presence-room-*"
limit = 50
"""


@pytest.fixture(autouse=True)
def _no_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [n for n in __import__("os").environ if n.startswith("PYSERVER_")]:
        monkeypatch.delenv(name)


def test_toml_rules_load_in_order_with_defaults(tmp_path: Path) -> None:
    path = tmp_path / "p.toml"
    path.write_text(TOML)
    (app,) = load_settings(path).apps
    first, second = app.history
    assert first == HistoryRule(
        channels="chat-*", limit=100, ttl=3600, rewind=10, recovery_window=120
    )
    assert (second.limit, second.ttl, second.rewind, second.recovery_window) == (50, 3600, 0, 120)
    assert second.client_events is False


def test_pyserver_apps_json_takes_the_same_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    apps = [
        {
            "id": "1",
            "key": "k",
            "secret": "s",
            "history": [{"channels": "chat-*", "limit": 20, "rewind": 5, "client_events": True}],
        }
    ]
    monkeypatch.setenv("PYSERVER_APPS", json.dumps(apps))
    (rule,) = load_settings().apps[0].history
    assert (rule.channels, rule.limit, rule.rewind, rule.client_events) == ("chat-*", 20, 5, True)


def test_no_rule_means_no_history() -> None:
    assert Settings().apps[0].history == ()


@pytest.mark.parametrize(
    ("rule", "field", "words"),
    [
        ({"limit": 0}, "limit", "greater than or equal to 1"),
        ({"limit": 1001}, "limit", "less than or equal to 1000"),
        ({"ttl": 0}, "ttl", "greater than or equal to 1"),
        ({"rewind": -1}, "rewind", "greater than or equal to 0"),
        ({"limit": 10, "rewind": 11}, "history.0", "rewind (11) must not exceed limit (10)"),
        ({"recovery_window": -5}, "recovery_window", "greater than or equal to 0"),
        ({"channels": ""}, "channels", "at least 1 character"),
        ({"channels": "chat/*"}, "channels", "channel name pattern"),
        ({"bogus": 1}, "bogus", "Extra inputs are not permitted"),
        ({"client_events": "maybe"}, "client_events", "valid boolean"),
    ],
)
def test_bad_rules_name_the_field(
    monkeypatch: pytest.MonkeyPatch, rule: dict[str, object], field: str, words: str
) -> None:
    rule = {"channels": "chat-*", **rule}
    apps = [{"id": "1", "key": "k", "secret": "s", "history": [rule]}]
    monkeypatch.setenv("PYSERVER_APPS", json.dumps(apps))
    with pytest.raises(ConfigError) as error:
        load_settings()
    message = str(error.value)
    assert "apps.0.history.0" in message and field in message and words in message, message


def test_the_first_matching_rule_wins_on_the_whole_name() -> None:
    chat = HistoryRule(channels="chat-*")
    room = HistoryRule(channels="presence-room-?")
    anything = HistoryRule(channels="*")
    book = RuleBook([chat, room, anything])
    assert book.rule_for("chat-1") is chat
    assert book.rule_for("chat-") is chat
    assert book.rule_for("presence-room-1") is room
    assert book.rule_for("presence-room-12") is anything
    assert RuleBook([chat]).rule_for("private-chat-1") is None, "whole name, not a substring"
    assert RuleBook([HistoryRule(channels="Chat-*")]).rule_for("chat-1") is None, "case counts"
    assert RuleBook([HistoryRule(channels="room-[!0]")]).rule_for("room-0") is None
    assert not RuleBook([])


def test_rule_lookups_are_cached_and_the_cache_is_bounded(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(history_protocol, "RULE_CACHE_SIZE", 3)
    book = RuleBook([HistoryRule(channels="a-*")])
    calls = 0
    real = history_protocol.fnmatchcase

    def counting(name: str, pattern: str) -> bool:
        nonlocal calls
        calls += 1
        return real(name, pattern)

    monkeypatch.setattr(history_protocol, "fnmatchcase", counting)
    assert book.rule_for("a-1") is not None
    assert book.rule_for("a-1") is not None
    assert calls == 1
    for name in ("b-1", "b-2", "b-3", "b-4"):
        book.rule_for(name)
    assert len(book._cache) <= 3


def test_every_rule_key_and_the_memory_cap_are_documented() -> None:
    configuration = (ROOT / "docs" / "configuration.md").read_text()
    history = (ROOT / "docs" / "history.md").read_text()
    for field in HistoryRule.model_fields:
        assert f"`{field}`" in configuration, f"HistoryRule.{field} is not in configuration.md"
        assert f"`{field}`" in history, f"HistoryRule.{field} is not in history.md"
    assert "`history`" in configuration
    assert "PYSERVER_HISTORY_MAX_MEMORY_MB" in configuration
    assert re.search(r"\[\[apps\.history\]\]", configuration)
