"""pyserver/history sits on floor 1 of the layering (issue 12): it may import the floor-0
modules (protocol, auth, config and the like), the standard library and third-party
libraries, never the cluster, channels, webhooks, api, console or server packages; and the
position codec and rule lookup stay sans-I/O in pyserver/protocol."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "pyserver"
HIGHER = {"cluster", "channels", "webhooks", "api", "console", "server", "cli", "workers"}
IO_MODULES = {"asyncio", "socket", "uvloop", "redis", "aiohttp", "httptools", "selectors", "ssl"}


def _imports(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return found


def test_history_imports_only_floor_zero_of_pyserver() -> None:
    for path in (PACKAGE / "history").rglob("*.py"):
        for module in _imports(path):
            parts = module.split(".")
            if parts[0] == "pyserver" and len(parts) > 1:
                assert parts[1] not in HIGHER, f"{path.name} imports {module}"


def test_the_protocol_side_of_history_is_sans_io() -> None:
    path = PACKAGE / "protocol" / "history.py"
    roots = {module.split(".")[0] for module in _imports(path)}
    assert not roots & IO_MODULES
    assert "time" not in roots and "random" not in roots, "no clock or randomness read"
