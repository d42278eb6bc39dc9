"""pyserver/apps is on floor 1: it may use the configuration, the protocol core, auth and
logs (floor 0), never the server, channels, API, console, cluster or webhooks, at run time,
under TYPE_CHECKING or inside functions alike. The running server will depend on it, not
the other way round."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "pyserver"
ALLOWED = (
    "pyserver.apps",
    "pyserver.config",
    "pyserver.protocol",
    "pyserver.auth",
    "pyserver.logs",
)


def imported(path: Path) -> list[str]:
    names: list[str] = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.append(node.module)
    return [name for name in names if name == "pyserver" or name.startswith("pyserver.")]


COMMAND_LINE_ALSO = ("pyserver.cluster.app_changes",)
"""`pyserver apps` (cli.py, a command line on the top floor) also announces changes on Redis."""


def test_the_app_stores_import_only_from_floor_0() -> None:
    for path in sorted((PACKAGE / "apps").rglob("*.py")):
        allowed = ALLOWED + (COMMAND_LINE_ALSO if path.name == "cli.py" else ())
        for name in imported(path):
            assert name.startswith(allowed), f"{path.name} imports {name}"


def test_nothing_below_imports_the_app_stores() -> None:
    for layer in ("config.py", "protocol", "auth", "logs.py"):
        target = PACKAGE / layer
        for path in [target] if target.is_file() else sorted(target.rglob("*.py")):
            assert not [n for n in imported(path) if n.startswith("pyserver.apps")], path.name
