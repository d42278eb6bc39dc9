#!/usr/bin/env bash
# Installs everything the test suite needs, then runs it: lint, types, unit and integration.
# Idempotent and non-interactive, so a fresh clone (CI runs it as root) and a developer's
# machine run the very same steps. Usage: scripts/test.sh [extra pytest args]
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*"; }

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

apt_install() {
  # Debian packages the tests use, installed only when missing.
  local missing=()
  for pkg in "$@"; do dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg"); done
  if [ ${#missing[@]} -gt 0 ]; then
    step "apt-get install ${missing[*]}"
    as_root apt-get update -qq
    DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq "${missing[@]}" >/dev/null
  fi
}

if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
  apt_install nodejs npm
fi
command -v redis-server >/dev/null 2>&1 || apt_install redis-server   # the cluster tests
# Sentinels run as `redis-server --sentinel`; redis-cli forms the test Redis Cluster.
command -v redis-cli >/dev/null 2>&1 || apt_install redis-tools
command -v chromium >/dev/null 2>&1 || apt_install chromium           # the console test
# The app store tests start their own PostgreSQL and MariaDB (tests/dbproc.py); Debian keeps
# PostgreSQL's programs in /usr/lib/postgresql/N/bin. No service is started by us.
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || apt_install postgresql
[ -x /usr/sbin/mariadbd ] || apt_install mariadb-server

PYTHON=${PYTHON:-python3}
# The exact versions the suite was last verified with (scripts/lock.sh refreshes them), so a
# new release of a dependency or a tool cannot break this command on a fresh machine.
step "pip install -c scripts/constraints.txt -e .[test]"
quiet=(--quiet --disable-pip-version-check --root-user-action=ignore)
"$PYTHON" -m pip install "${quiet[@]}" -c scripts/constraints.txt -e ".[test]"

step "npm ci (pusher-js 8 and 7, laravel-echo, the Node pusher SDK)"
lock_hash=$(sha256sum tests/js/package-lock.json | cut -d' ' -f1)
if [ "$(cat tests/js/node_modules/.lock-hash 2>/dev/null)" != "$lock_hash" ]; then
  (cd tests/js && npm ci --no-audit --no-fund --loglevel=error)
  echo "$lock_hash" > tests/js/node_modules/.lock-hash
fi

step "ruff"
"$PYTHON" -m ruff check pyserver tests bench examples
step "mypy"
"$PYTHON" -m mypy
step "pytest"
"$PYTHON" -m pytest -q "$@"
