"""The pinned test environment: scripts/constraints.txt against pyproject.toml and the scripts.

- scripts/test.sh installs through the constraints file; scripts/lock.sh writes it.
- Every dependency and every test or bench tool is pinned to one exact version, inside the
  range pyproject.toml gives users, so the file cannot drift from the project's ranges.
- No pin exists on one machine only (a local version label or a file URL).
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[2]
CONSTRAINTS = ROOT / "scripts" / "constraints.txt"
PINNED_EXTRAS = ("test", "bench")


def pins() -> dict[str, str]:
    found: dict[str, str] = {}
    for line in CONSTRAINTS.read_text().splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        name, sep, version = line.partition("==")
        assert sep and version, f"not an exact pin: {line!r}"
        found[canonicalize_name(name)] = version
    return found


def declared() -> list[Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    requirements = list(project["dependencies"])
    for extra in PINNED_EXTRAS:
        requirements += project["optional-dependencies"][extra]
    return [Requirement(r) for r in requirements]


def test_every_dependency_and_tool_is_pinned_inside_its_range() -> None:
    pinned = pins()
    for requirement in declared():
        if requirement.marker is not None and not requirement.marker.evaluate():
            continue
        version = pinned.get(canonicalize_name(requirement.name))
        assert version is not None, f"{requirement.name} is not in {CONSTRAINTS.name}"
        assert requirement.specifier.contains(version, prereleases=True), (
            f"{requirement.name}=={version} is outside pyproject.toml's {requirement.specifier}"
        )


def test_pins_exist_beyond_this_machine() -> None:
    for name, version in pins().items():
        assert Version(version).local is None, f"{name}=={version} is a local build"
        assert "@" not in version, f"{name} is pinned to a URL"


def test_the_test_command_installs_through_the_constraints_and_lock_writes_them() -> None:
    test_sh = (ROOT / "scripts" / "test.sh").read_text()
    assert re.search(r"pip install [^\n]*-c scripts/constraints\.txt -e \"\.\[test\]\"", test_sh)
    lock_sh = (ROOT / "scripts" / "lock.sh").read_text()
    assert "OUT=scripts/constraints.txt" in lock_sh
    assert "scripts/lock.sh" in CONSTRAINTS.read_text().splitlines()[1]
