"""The design rules, checked on the code and on a running in-process server: sans-I/O core,
wire strings in one package, encode once, no Task per connection, and the floors of the
import graph (no import runs up a floor, no cycle, `TYPE_CHECKING` imports included)."""

from __future__ import annotations

import ast
import asyncio
import base64
import os
import re
from collections.abc import Collection
from pathlib import Path

from pyserver.channels.app import App
from pyserver.cluster.local import LocalAdapter
from pyserver.config import AppConfig, Settings
from pyserver.protocol import frames
from pyserver.protocol.commands import Subscribe
from pyserver.server.server import Server
from tests.unit.fakes import FakeClient, drive

PACKAGE = Path(__file__).resolve().parents[2] / "pyserver"
IO_MODULES = {"asyncio", "socket", "uvloop", "redis", "aiohttp", "httptools", "selectors", "ssl"}


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module.split(".")[0])
    return names


def test_protocol_and_auth_are_sans_io() -> None:
    paths = [*(PACKAGE / "protocol").rglob("*.py"), *(PACKAGE / "auth").rglob("*.py")]
    for path in [*paths, PACKAGE / "ratelimit.py"]:
        assert not (_imports(path) & IO_MODULES), f"{path} imports I/O"
        assert "time" not in _imports(path), f"{path} reads the clock: take `now` instead"


FLOORS: tuple[tuple[str, ...], ...] = (
    # 0: the sans-I/O core (protocol state, signatures, token buckets)
    ("pyserver", "pyserver.protocol", "pyserver.auth", "pyserver.ratelimit"),
    # 1: plumbing every layer may use
    ("pyserver.config", "pyserver.logs", "pyserver.stats", "pyserver.tasks", "pyserver.http"),
    # 2: the cluster engines and the storage engines
    ("pyserver.cluster", "pyserver.history", "pyserver.apps"),
    # 3: an app at run time
    ("pyserver.channels",),
    # 4: webhooks, which observe the apps
    ("pyserver.webhooks",),
    # 5: the HTTP API, the console and the metrics renderer
    ("pyserver.api", "pyserver.console", "pyserver.metrics"),
    # 6: the server, the composition root of one process
    ("pyserver.server",),
    # 7: the command lines and the worker supervisor
    ("pyserver.cli", "pyserver.workers", "pyserver.apps.cli", "pyserver.__main__"),
)
"""Layers from the bottom; a module may import from its own floor and the floors below."""


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _import_graph() -> dict[str, set[str]]:
    """Every `pyserver` import of every module: top level, inside functions and under
    `TYPE_CHECKING` alike, resolved to the module imported."""
    modules = {_module_name(path): path for path in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        graph[name] = _pyserver_imports(path.read_text(), modules.keys()) - {name}
        assert graph[name] <= modules.keys(), f"{name} imports an unknown pyserver module"
    return graph


def _pyserver_imports(source: str, modules: Collection[str]) -> set[str]:
    targets: set[str] = set()
    for node in ast.walk(ast.parse(source)):  # every node: functions, `if TYPE_CHECKING:`
        if isinstance(node, ast.Import):
            targets |= {a.name for a in node.names if a.name.startswith("pyserver")}
        elif (
            isinstance(node, ast.ImportFrom)
            and node.module
            and node.level == 0
            and node.module.startswith("pyserver")
        ):
            for alias in node.names:
                full = f"{node.module}.{alias.name}"
                targets.add(full if full in modules else node.module)
    return targets


def _floor(module: str) -> int:
    best, found = -1, -1
    for index, floor in enumerate(FLOORS):
        for prefix in floor:
            if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > best:
                best, found = len(prefix), index
    assert found >= 0, f"{module} is on no floor: add it to FLOORS"
    return found


def test_no_import_runs_up_a_floor() -> None:
    graph = _import_graph()
    upward = {
        (source, target)
        for source, targets in graph.items()
        for target in targets
        if _floor(target) > _floor(source)
    }
    assert not upward, sorted(upward)


def test_the_import_graph_has_no_cycle() -> None:
    graph = _import_graph()
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def visit(node: str) -> None:  # Tarjan's strongly connected components
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in graph[node]:
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    assert not cycles, cycles


def test_the_rules_see_type_checking_and_local_imports() -> None:
    """Imports under `if TYPE_CHECKING:` and inside functions count (they close cycles too)."""
    source = (
        "from typing import TYPE_CHECKING\n"
        "from pyserver import tasks\n"
        "if TYPE_CHECKING:\n"
        "    from pyserver.server.server import Server\n"
        "def f() -> None:\n"
        "    import pyserver.cluster.redis\n"
    )
    modules = {"pyserver", "pyserver.tasks", "pyserver.server.server", "pyserver.cluster.redis"}
    assert _pyserver_imports(source, modules) == modules - {"pyserver"}


def test_wire_event_names_appear_only_in_the_protocol_package() -> None:
    pattern = re.compile(r"[\"'](pusher|pusher_internal):[a-z_]+[\"']")
    for path in PACKAGE.rglob("*.py"):
        if path.parent.name != "protocol":
            assert not pattern.search(path.read_text()), f"{path} builds a wire frame"


def test_a_broadcast_is_encoded_once_and_the_same_bytes_go_to_everyone(monkeypatch) -> None:
    app = App(AppConfig(id="1", key="k", secret="s"), LocalAdapter())
    clients = [FakeClient(f"{i}.1") for i in range(50)]
    for client in clients:
        drive(app.subscribe(client, Subscribe("room", None, None)))
        client.sent.clear()
    calls = 0
    real = frames.channel_event

    def counting(*args: object, **kwargs: object) -> bytes:
        nonlocal calls
        calls += 1
        return real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr("pyserver.channels.app.frames.channel_event", counting)
    app.trigger("ev", ["room"], '{"a":1}', except_socket_id="3.1")
    assert calls == 1
    delivered = [c.sent[0] for c in clients if c.sent]
    assert len(delivered) == 49 and not clients[3].sent
    assert all(frame is delivered[0] for frame in delivered)


def test_no_task_per_connection() -> None:
    async def scenario() -> int:
        settings = Settings(host="127.0.0.1", port=0)
        server = Server(settings)
        await server.start()
        writers = []
        for _ in range(50):
            reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
            key = base64.b64encode(os.urandom(16)).decode()
            writer.write(
                (
                    f"GET /app/app-key?protocol=7 HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
                    f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                    "Sec-WebSocket-Version: 13\r\n\r\n"
                ).encode()
            )
            await reader.readuntil(b"\r\n\r\n")
            await reader.readexactly(2)
            writers.append(writer)
        await asyncio.sleep(0.1)
        tasks = len(asyncio.all_tasks())
        connected = sum(len(app.clients) for app in server.apps_by_id.values())
        assert connected == 50
        for writer in writers:
            writer.close()
        await server.shutdown(grace=0.5)
        return tasks

    assert asyncio.run(scenario()) == 1  # only the test's own task
