"""The Redis topology options (Sentinel, Cluster): how each source spells them, and the errors
a bad value gives, which must say what to write instead."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from pyserver.config import ConfigError, load_settings, sentinel_address


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("PYSERVER_"):
            monkeypatch.delenv(name)


def test_defaults_are_a_single_server() -> None:
    settings = load_settings()
    assert settings.redis_sentinels == []
    assert settings.redis_sentinel_master == "mymaster"
    assert settings.redis_sentinel_password is None
    assert settings.redis_sentinel_tls is False
    assert settings.redis_sentinel_tls_ca is None
    assert settings.redis_cluster is False
    assert settings.redis_mode() == "single"


@pytest.mark.parametrize(
    "value",
    [
        '["s1:26379", "s2:26380", "[::1]:26381"]',
        "s1:26379,s2:26380,[::1]:26381",
        " s1:26379 , s2:26380 ,[::1]:26381 ",
    ],
)
def test_sentinels_from_the_environment_as_json_or_commas(
    monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    monkeypatch.setenv("PYSERVER_REDIS_SENTINELS", value)
    monkeypatch.setenv("PYSERVER_REDIS_SENTINEL_MASTER", "cache")
    monkeypatch.setenv("PYSERVER_REDIS_SENTINEL_PASSWORD", "s3cret")
    monkeypatch.setenv("PYSERVER_REDIS_SENTINEL_TLS", "true")
    monkeypatch.setenv("PYSERVER_REDIS_SENTINEL_TLS_CA", "/etc/redis/ca.pem")
    settings = load_settings()
    assert settings.redis_sentinels == ["s1:26379", "s2:26380", "[::1]:26381"]
    assert settings.redis_sentinel_master == "cache"
    assert settings.redis_sentinel_password == "s3cret"
    assert settings.redis_sentinel_tls is True
    assert settings.redis_sentinel_tls_ca == "/etc/redis/ca.pem"
    assert settings.redis_mode() == "sentinel"


def test_sentinels_and_cluster_from_toml(tmp_path: Path) -> None:
    path = tmp_path / "s.toml"
    path.write_text(
        'adapter = "redis"\nredis_url = "rediss://:pw@ignored:6379/2"\n'
        'redis_sentinels = ["10.0.0.1:26379", "10.0.0.2:26379"]\n'
        'redis_sentinel_master = "pyserver"\n'
    )
    settings = load_settings(path)
    assert settings.redis_mode() == "sentinel"
    described = settings.describe()[0]
    assert "sentinel:pyserver@10.0.0.1:26379,10.0.0.2:26379" in described
    assert "pw" not in described
    path.write_text('adapter = "redis"\nredis_url = "redis://node-1:7000"\nredis_cluster = true\n')
    settings = load_settings(path)
    assert settings.redis_mode() == "cluster"
    assert "cluster:redis://node-1:7000" in settings.describe()[0]


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"redis_sentinels": ["sentinel-1"]}, "sentinel 'sentinel-1': write host:port"),
        ({"redis_sentinels": ["s:0"]}, "write host:port"),
        ({"redis_sentinels": ["s:port"]}, "write host:port"),
        ({"redis_sentinels": [":26379"]}, "write host:port"),
        ({"redis_sentinels": ["::1"]}, "[addr]:port"),
        (
            {"redis_sentinels": ["s:26379"], "redis_cluster": True},
            "redis_sentinels and redis_cluster exclude each other",
        ),
        (
            {"redis_cluster": True, "redis_url": "redis://n:7000/1"},
            "a Redis Cluster has only database 0",
        ),
        ({"redis_sentinel_password": "x"}, "list them in redis_sentinels"),
        ({"redis_sentinel_tls": True}, "list them in redis_sentinels"),
        (
            {"redis_sentinels": ["s:26379"], "redis_sentinel_tls_ca": "ca.pem"},
            "redis_sentinel_tls_ca: set redis_sentinel_tls = true too",
        ),
        ({"redis_url": "tcp://localhost:6379"}, "redis:// or rediss://"),
        ({"redis_sentinel_master": ""}, "redis_sentinel_master"),
    ],
)
def test_bad_values_say_what_to_write(options: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError) as error:
        load_settings(**options)
    assert message in str(error.value)


def test_a_broken_json_list_in_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYSERVER_REDIS_SENTINELS", '["s1:26379"')
    with pytest.raises(ConfigError, match="a JSON list such as"):
        load_settings()


def test_sentinel_address_forms() -> None:
    assert sentinel_address("s1:26379") == ("s1", 26379)
    assert sentinel_address(" 10.0.0.1:1 ") == ("10.0.0.1", 1)
    assert sentinel_address("[fd00::1]:26379") == ("fd00::1", 26379)
    with pytest.raises(ValueError):
        sentinel_address("fd00::1:26379")  # ambiguous without brackets
