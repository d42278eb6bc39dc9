"""The Sentinel and Cluster docker-compose examples, read without a Docker daemon: valid YAML,
files they mount and build from exist, the pyserver nodes' environment loads as settings of
the intended Redis topology, and the Redis side matches what those settings name."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from pyserver.config import Settings, load_settings

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
SENTINEL = EXAMPLES / "docker-compose.sentinel.yml"
CLUSTER = EXAMPLES / "docker-compose.cluster.yml"


def services(path: Path) -> dict[str, dict[str, Any]]:
    document = yaml.safe_load(path.read_text())
    assert isinstance(document, dict) and isinstance(document.get("services"), dict), path
    return document["services"]


def pyserver_nodes(found: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {name: s for name, s in found.items() if s.get("build") == ".."}


def settings_of(node: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> Settings:
    """The node's settings, `${VAR:-default}` taken at its default."""
    for name in list(os.environ):
        if name.startswith("PYSERVER_"):
            monkeypatch.delenv(name)
    for variable, value in node["environment"].items():
        assert variable in {f"PYSERVER_{f.upper()}" for f in Settings.model_fields}, variable
        text = re.sub(r"\$\{\w+:-([^}]*)\}", r"\1", str(value))
        monkeypatch.setenv(variable, text)
    return load_settings()


@pytest.mark.parametrize("path", [SENTINEL, CLUSTER], ids=lambda p: p.name)
def test_example_is_valid_and_its_paths_exist(path: Path) -> None:
    found = services(path)
    nodes = pyserver_nodes(found)
    assert len(nodes) == 2
    assert (path.parent / ".." / "Dockerfile").resolve().is_file()
    for service in found.values():
        for volume in service.get("volumes", []):
            source = str(volume).split(":")[0]
            if source.startswith("."):
                assert (path.parent / source).resolve().exists(), volume
        for dependency in service.get("depends_on", {}):
            assert dependency in found, dependency
    upstreams = set(
        re.findall(
            r"^\s*server\s+([\w.-]+):6001\b", (ROOT / "deploy" / "nginx.conf").read_text(), re.M
        )
    )
    assert upstreams == set(nodes)


def test_sentinel_example(monkeypatch: pytest.MonkeyPatch) -> None:
    found = services(SENTINEL)
    sentinels = {n: s for n, s in found.items() if n.startswith("redis-sentinel-")}
    assert len(sentinels) == 3
    for node in pyserver_nodes(found).values():
        settings = settings_of(node, monkeypatch)
        assert settings.redis_mode() == "sentinel"
        assert sorted(settings.redis_sentinels) == sorted(f"{n}:26379" for n in sentinels)
        for sentinel in sentinels.values():
            script = "\n".join(sentinel["command"])
            assert (
                f"sentinel monitor {settings.redis_sentinel_master} redis-master 6379 2" in script
            )
            assert "--sentinel" in script and "port 26379" in script
    assert "redis-master" in found["redis-replica"]["command"]


def test_cluster_example(monkeypatch: pytest.MonkeyPatch) -> None:
    found = services(CLUSTER)
    redis_nodes = [n for n in found if n.startswith("redis-node-")]
    assert len(redis_nodes) == 3
    for name in redis_nodes:
        command = found[name]["command"]
        assert command[command.index("--cluster-enabled") + 1] == "yes"
        assert command[command.index("--cluster-announce-hostname") + 1] == name
    init = "\n".join(found["redis-cluster-init"]["command"])
    assert "--cluster create" in init and all(n in init for n in redis_nodes)
    for node in pyserver_nodes(found).values():
        settings = settings_of(node, monkeypatch)
        assert settings.redis_mode() == "cluster"
        assert settings.redis_url.split("//")[1].split(":")[0] in redis_nodes
        assert node["depends_on"]["redis-cluster-init"]["condition"] == (
            "service_completed_successfully"
        )
