"""Issue item 8: the design rules, checked on the code and on a running in-process server."""

from __future__ import annotations

import ast
import asyncio
import base64
import os
import re
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
    for layer in ("protocol", "auth"):
        for path in (PACKAGE / layer).rglob("*.py"):
            assert not (_imports(path) & IO_MODULES), f"{path} imports I/O"


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
