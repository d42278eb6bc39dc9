#!/usr/bin/env bash
# Refreshes scripts/constraints.txt, the exact versions scripts/test.sh installs.
#
# In a throwaway virtual environment it installs the project with its test and bench extras
# as a user would, without constraints (so the newest releases that pyproject.toml's ranges
# allow), and writes what got installed. pyproject.toml keeps its ranges; only the test
# environment is pinned. After a refresh, run scripts/test.sh and commit the file with the
# fixes the new versions ask for.  Usage: scripts/lock.sh   (PYTHON=python3.11 to choose)
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
OUT=scripts/constraints.txt

venv=$(mktemp -d)
trap 'rm -rf "$venv"' EXIT

"$PYTHON" -m venv "$venv"
# Only the project's own constraints are left out; pip's configuration (indexes, proxies,
# certificates, a machine-wide cap) applies as it does to scripts/test.sh, so what is written
# here is what installs here.
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check --root-user-action=ignore \
  -e ".[test,bench]"

frozen=$("$venv/bin/python" -m pip freeze --exclude-editable --disable-pip-version-check |
  grep -v -i -E '^pyserver(==| @)')

# A local build (torch==2.1+cpu) or a file URL exists on one machine only: CI and a new
# contributor could not install it.
if local=$(grep -E '\+|@ file:' <<<"$frozen"); then
  printf 'scripts/lock.sh: these pins exist only on this machine:\n%s\n' "$local" >&2
  exit 1
fi

python_version=$("$venv/bin/python" -c 'import platform, sys; print(
    f"{platform.python_implementation()} {platform.python_version()}, {sys.platform} {platform.machine()}")')
{
  echo "# The exact versions scripts/test.sh installs (pip install -c $OUT -e \".[test]\")."
  echo "# Made by scripts/lock.sh: pip install -e \".[test,bench]\" in a new virtual environment"
  echo "# without constraints, then pip freeze. Python: $python_version."
  echo "# Do not edit by hand: run scripts/lock.sh, then scripts/test.sh, and commit the result."
  echo "$frozen"
} >"$OUT"
echo "wrote $OUT ($(grep -c -v '^#' "$OUT") pins, $python_version)"
