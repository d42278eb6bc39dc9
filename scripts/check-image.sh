#!/usr/bin/env bash
# Builds the container image from the Dockerfile with podman and runs it, as CI does.
#
# Checks, against the server started from the image's own ENTRYPOINT/CMD as the image's user
# (listening on a loopback port only):
#   - GET /up answers 200;
#   - pusher-js 8 subscribes and receives an event triggered through the Node `pusher` SDK;
#   - SIGTERM closes that client with 4200 and the server exits 0;
#   - the Dockerfile's HEALTHCHECK command passes inside the image while the server runs (and
#     fails once it is gone, so it really checks something).
#
# `podman run` is used where it works. Where it is refused (some sandboxes forbid setrlimit),
# the image's root filesystem is mounted and its entrypoint runs through `chroot --userspec`
# with the image's ENV and WORKDIR, in a private mount namespace with its own /proc and /dev.
# Without a reachable registry, a stand-in for the Dockerfile's python:X-slim base is built
# with debootstrap from the Debian mirror apt uses, and cached (rootfs tarball) under
# ${XDG_CACHE_HOME:-~/.cache}/pyserver. Package downloads in the build use the host's pip
# settings that reach an index (index URLs, proxy, CA bundle), so a TLS-inspecting proxy works.
#
# Root, idempotent, no input; installs podman, debootstrap, node and npm with apt-get when they
# are missing. Every process it starts is stopped by PID, the test image and container are
# removed (KEEP_IMAGE=1 keeps the image). Exits non-zero when any check fails.
# Usage: bash scripts/check-image.sh
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" != 0 ]; then
  exec sudo --preserve-env=XDG_CACHE_HOME,KEEP_IMAGE bash "$0" "$@"
fi

CACHE_DIR=${XDG_CACHE_HOME:-${HOME:-/root}/.cache}/pyserver
RUN_ID="$$-$(date +%s)"
IMAGE="localhost/pyserver-check:$RUN_ID"
CONTAINER="pyserver-check-$RUN_ID"
WORK=$(mktemp -d -t pyserver-check-image.XXXXXX)
T0=$SECONDS

step() { printf '\n==> [%3ss] %s\n' "$((SECONDS - T0))" "$*"; }
note() { printf '    %s\n' "$*"; }

# ------------------------------------------------------------------------------------------
# Results and clean-up
# ------------------------------------------------------------------------------------------
RESULTS=()
FAILED=0
pass() { RESULTS+=("PASS  $1"); note "PASS: $1"; }
fail() { RESULTS+=("FAIL  $1${2:+ ($2)}"); FAILED=$((FAILED + 1)); note "FAIL: $1${2:+ ($2)}"; }

SERVER_PID=""
CLIENT_PID=""
CONTAINER_MADE=""
IMAGE_BUILT=""

stop_pid() {
  # TERM, up to 5 s, then KILL: only PIDs this script started.
  local pid=$1
  [ -n "$pid" ] || return 0
  kill -0 "$pid" 2>/dev/null || return 0
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -KILL "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
}

cleanup() {
  local rc=$?
  stop_pid "$CLIENT_PID"
  stop_pid "$SERVER_PID"
  if [ -n "$CONTAINER_MADE" ]; then
    podman umount "$CONTAINER" >/dev/null 2>&1 || true
    podman rm --force "$CONTAINER" >/dev/null 2>&1 || true
  fi
  if [ -n "$IMAGE_BUILT" ] && [ "${KEEP_IMAGE:-0}" != 1 ]; then
    podman rmi --force "$IMAGE" >/dev/null 2>&1 || true
  fi
  rm -rf "$WORK"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

summary_and_exit() {
  printf '\n==> [%3ss] summary (image run through %s)\n' "$((SECONDS - T0))" "${RUN_MODE:-nothing}"
  if [ ${#RESULTS[@]} -eq 0 ]; then fail "no check ran"; fi
  printf '  %s\n' "${RESULTS[@]}"
  if [ "$FAILED" -eq 0 ]; then
    printf 'check-image: PASS, %d of %d checks passed\n' "${#RESULTS[@]}" "${#RESULTS[@]}"
    exit 0
  fi
  printf 'check-image: FAIL, %d of %d checks failed\n' "$FAILED" "${#RESULTS[@]}"
  exit 1
}

die() {
  # A step the checks depend on failed: show why, then the summary.
  fail "$1" "${2:-}"
  if [ -n "${3:-}" ] && [ -f "$3" ]; then note "last lines of $(basename "$3"):"; tail -n 25 "$3" | sed 's/^/      /'; fi
  summary_and_exit
}

# ------------------------------------------------------------------------------------------
# Tools
# ------------------------------------------------------------------------------------------
APT_UPDATED=""
apt_install() {
  local missing=()
  for pkg in "$@"; do dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg"); done
  [ ${#missing[@]} -gt 0 ] || return 0
  step "apt-get install ${missing[*]}"
  if [ -z "$APT_UPDATED" ]; then apt-get update -qq; APT_UPDATED=1; fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
}

step "tools"
apt_install podman debootstrap debian-archive-keyring
if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
  apt_install nodejs npm
fi
command -v python3 >/dev/null 2>&1 || apt_install python3
note "$(podman --version), node $(node --version)"

lock_hash=$(sha256sum tests/js/package-lock.json | cut -d' ' -f1)
if [ "$(cat tests/js/node_modules/.lock-hash 2>/dev/null)" != "$lock_hash" ]; then
  step "npm ci (pusher-js 8 and the Node pusher SDK)"
  (cd tests/js && npm ci --no-audit --no-fund --loglevel=error)
  echo "$lock_hash" > tests/js/node_modules/.lock-hash
fi

# ------------------------------------------------------------------------------------------
# Base image: the real one when present or pullable, else a cached debootstrap stand-in
# ------------------------------------------------------------------------------------------
# The external images the Dockerfile builds FROM (stage names excluded).
mapfile -t BASES < <(awk '
  toupper($1) == "FROM" {
    ref = ""; for (i = 2; i <= NF; i++) if ($i !~ /^--/) { ref = $i; break }
    if (!(ref in stages)) print ref
    if (toupper($(NF - 1)) == "AS") stages[$NF] = 1
  }' Dockerfile | sort -u)

qualified() {
  # docker.io/library/NAME:TAG for a short name, as Docker resolves it.
  local ref=$1 first=${1%%/*}
  if [[ $ref != */* ]]; then echo "docker.io/library/$ref"
  elif [[ $first == *.* || $first == *:* || $first == localhost ]]; then echo "$ref"
  else echo "docker.io/$ref"; fi
}

debian_mirror() {
  # The Debian archive this machine's apt uses (its own mirror or proxy), for debootstrap.
  local uri
  uri=$(apt-get indextargets --format '$(ORIGIN) $(REPO_URI)' 2>/dev/null \
    | awk '$1 == "Debian" && $2 !~ /security/ { print $2; exit }')
  echo "${uri:-http://deb.debian.org/debian/}"
}

make_standin() {
  # Builds a python:X-slim stand-in (Debian's python3 in a minbase system) and imports it.
  local ref=$1 suite
  case "$ref" in
    python:3.11-slim | python:3.11-slim-bookworm | python:3.11.*-slim | python:3.11.*-slim-bookworm)
      suite=bookworm ;;
    python:3.13-slim | python:3.13-slim-trixie | python:3.13.*-slim | python:3.13.*-slim-trixie)
      suite=trixie ;;
    *) die "base image $ref" "not present, not pullable, and no Debian stand-in recipe for it" ;;
  esac
  local packages=python3,python3-venv,python3-pip,python-is-python3,ca-certificates
  local recipe tarball
  recipe=$(printf '%s %s minbase' "$suite" "$packages" | sha256sum | cut -c1-12)
  tarball="$CACHE_DIR/base-images/${ref//[:\/]/_}-standin-$suite-$recipe.tar"
  if [ -f "$tarball" ]; then
    note "stand-in rootfs from the cache: $tarball"
  else
    local mirror proxy=""
    mirror=$(debian_mirror)
    eval "$(apt-config shell proxy Acquire::http::Proxy)"
    step "debootstrap $suite ($packages) from $mirror${proxy:+ via $proxy}"
    local rootfs="$WORK/rootfs"
    if ! http_proxy=${proxy:-${http_proxy:-}} timeout 1200 debootstrap --variant=minbase \
        --include="$packages" "$suite" "$rootfs" "$mirror" > "$WORK/debootstrap.log" 2>&1; then
      die "stand-in base image" "debootstrap failed" "$WORK/debootstrap.log"
    fi
    rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
    mkdir -p "$(dirname "$tarball")"
    tar -C "$rootfs" --numeric-owner -cf "$tarball.partial" .
    mv "$tarball.partial" "$tarball"
    rm -rf "$rootfs"
    note "cached: $tarball ($(du -h "$tarball" | cut -f1))"
  fi
  # The ENV and CMD the official python image has; the Dockerfile's ENV PATH extends PATH.
  podman import \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV LANG=C.UTF-8' --change 'CMD ["python3"]' \
    "$tarball" "localhost/$ref" > "$WORK/import.log" 2>&1 \
    || die "podman import of the stand-in" "" "$WORK/import.log"
  note "imported as localhost/$ref"
}

step "base image(s): ${BASES[*]}"
for ref in "${BASES[@]}"; do
  full=$(qualified "$ref")
  if podman image exists "$full"; then
    note "$full is present"
  elif timeout 300 podman pull --quiet "$full" >"$WORK/pull.log" 2>&1; then
    note "$full pulled"
  elif [[ $full == docker.io/library/* ]] && podman image exists "localhost/$ref"; then
    note "no registry ($(tail -n 1 "$WORK/pull.log" | cut -c1-100)); stand-in localhost/$ref is present"
  elif [[ $full == docker.io/library/* ]]; then
    note "no registry ($(tail -n 1 "$WORK/pull.log" | cut -c1-100)); making a stand-in"
    make_standin "$ref"
  else
    die "base image $full" "not present and not pullable" "$WORK/pull.log"
  fi
done

# ------------------------------------------------------------------------------------------
# Build
# ------------------------------------------------------------------------------------------
# pip inside the build reads /root/.config/pip/pip.conf: the host's settings that reach a
# package index (index URLs, proxy, timeout, CA bundle). Settings naming host folders
# (find-links, file:// indexes, constraint files) are left out: the image is built from the
# index alone. Mounting over /root, which the base image has, leaves nothing in the layers.
BUILD_HOME="$WORK/build-home"
mkdir -p "$BUILD_HOME/.config/pip"
python3 - "$BUILD_HOME/.config/pip" <<'PY'
import ast, os, shutil, subprocess, sys

out = sys.argv[1]
keep = {"index-url", "extra-index-url", "trusted-host", "proxy", "timeout", "retries", "cert",
        "client-cert"}
settings: dict[str, str] = {}
try:
    listing = subprocess.run([sys.executable, "-m", "pip", "config", "list"],
                             capture_output=True, text=True, timeout=60).stdout
except (OSError, subprocess.SubprocessError):
    listing = ""
for line in listing.splitlines():  # environment first: it wins over the files, as in pip
    name, _, raw = line.partition("=")
    section, _, key = name.rpartition(".")
    key = "timeout" if key == "default-timeout" else key
    if section in (":env:", "global", "install") and key in keep and key not in settings:
        try:
            settings[key] = str(ast.literal_eval(raw))
        except (ValueError, SyntaxError):
            continue
remote = lambda v: " ".join(u for u in v.split() if u.startswith(("http://", "https://")))
for key in ("index-url", "extra-index-url"):
    if key in settings:
        settings[key] = remote(settings[key])
        if not settings[key]:
            del settings[key]
settings.setdefault("cert", os.environ.get("SSL_CERT_FILE", "/etc/ssl/certs/ca-certificates.crt"))
for key, name in (("cert", "ca.pem"), ("client-cert", "client.pem")):
    if key in settings:
        if os.path.isfile(settings[key]):
            shutil.copyfile(settings[key], os.path.join(out, name))
            settings[key] = f"/root/.config/pip/{name}"
        else:
            del settings[key]
with open(os.path.join(out, "pip.conf"), "w") as f:
    f.write("[global]\n" + "".join(f"{k} = {v}\n" for k, v in sorted(settings.items())))
print("    build pip settings: " + (", ".join(sorted(settings)) or "none"))
PY

step "podman build -t $IMAGE"
if ! timeout 1200 podman build --format docker --isolation chroot --network host --pull=never \
    --layers=false --volume "$BUILD_HOME:/root" -t "$IMAGE" -f Dockerfile . \
    > "$WORK/build.log" 2>&1; then
  die "podman build" "see the build log" "$WORK/build.log"
fi
IMAGE_BUILT=1
note "built $(podman image inspect --format '{{.Id}}' "$IMAGE" | cut -c1-12), $(podman image inspect --format '{{.Size}}' "$IMAGE" | awk '{printf "%d MB", $1 / 1e6}')"

# ------------------------------------------------------------------------------------------
# How the image runs: its USER, ENV, WORKDIR, ENTRYPOINT, CMD (host made 127.0.0.1), HEALTHCHECK
# ------------------------------------------------------------------------------------------
PORT=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
APP_SECRET=$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')
# Set like `-e` on `docker run`: the port (the HEALTHCHECK follows PYSERVER_PORT), a free
# metrics port, and an app of our own, not the built-in default one.
RUN_ENV=("PYSERVER_PORT=$PORT" "PYSERVER_METRICS_PORT=0" "PYSERVER_APP_ID=image-check"
         "PYSERVER_APP_KEY=image-check-key" "PYSERVER_APP_SECRET=$APP_SECRET")

podman image inspect "$IMAGE" > "$WORK/image.json"
IMAGE_SHELL=$(python3 - "$WORK/image.json" <<'PY'
import json, shlex, sys

image = json.load(open(sys.argv[1]))[0]
config = image.get("Config") or {}
cmd = list(config.get("Cmd") or [])
# Loopback only: replace the CMD's --host (0.0.0.0 in the Dockerfile), or add one.
for i, arg in enumerate(cmd):
    if arg == "--host" and i + 1 < len(cmd):
        cmd[i + 1] = "127.0.0.1"
        break
    if arg.startswith("--host="):
        cmd[i] = "--host=127.0.0.1"
        break
else:
    cmd += ["--host", "127.0.0.1"]
test = list((image.get("Healthcheck") or config.get("Healthcheck") or {}).get("Test") or [])
if test[:1] == ["CMD"]:
    health = test[1:]
elif test[:1] == ["CMD-SHELL"]:
    health = ["/bin/sh", "-c", test[1]]
else:
    health = []
def arr(name, values):
    print(f"{name}=({' '.join(shlex.quote(v) for v in values)})")
print(f"IMG_USER={shlex.quote(config.get('User') or '0')}")
print(f"IMG_WORKDIR={shlex.quote(config.get('WorkingDir') or '/')}")
arr("IMG_ENV", config.get("Env") or [])
arr("IMG_ENTRYPOINT", config.get("Entrypoint") or [])
arr("IMG_CMD", cmd)
arr("IMG_HEALTH", health)
PY
) || die "read the image's configuration" "podman image inspect gave no usable JSON"
eval "$IMAGE_SHELL"
note "USER $IMG_USER, WORKDIR $IMG_WORKDIR, runs: ${IMG_ENTRYPOINT[*]} ${IMG_CMD[*]}"
[ ${#IMG_HEALTH[@]} -gt 0 ] || fail "the image has a HEALTHCHECK" "none in the image config"

# ------------------------------------------------------------------------------------------
# Start: podman run where it works, else chroot into the mounted root filesystem
# ------------------------------------------------------------------------------------------
step "start the entrypoint as the image's user"
SERVER_LOG="$WORK/server.log"
if timeout 120 podman run --rm --network none --entrypoint true "$IMAGE" >"$WORK/probe.log" 2>&1; then
  RUN_MODE="podman run"
else
  RUN_MODE="chroot"
  note "podman run is refused here ($(grep -m1 -o 'Error: .*' "$WORK/probe.log" | cut -c1-100 || true)): chroot"
fi

ROOTFS=""
RUN_UID=""
RUN_GID=""
RUN_HOME="/"
resolve_user() {
  # USER as uid:gid, names looked up in the image's own /etc/passwd and /etc/group.
  local user=${IMG_USER%%:*} group=""
  [[ $IMG_USER == *:* ]] && group=${IMG_USER#*:}
  local entry=""
  if [[ $user =~ ^[0-9]+$ ]]; then
    RUN_UID=$user
    entry=$(awk -F: -v u="$user" '$3 == u { print; exit }' "$ROOTFS/etc/passwd")
  else
    entry=$(awk -F: -v u="$user" '$1 == u { print; exit }' "$ROOTFS/etc/passwd")
    RUN_UID=$(cut -d: -f3 <<<"$entry")
  fi
  [ -n "$RUN_UID" ] || return 1
  if [ -z "$group" ]; then RUN_GID=$(cut -d: -f4 <<<"$entry"); RUN_GID=${RUN_GID:-$RUN_UID}
  elif [[ $group =~ ^[0-9]+$ ]]; then RUN_GID=$group
  else RUN_GID=$(awk -F: -v g="$group" '$1 == g { print $3; exit }' "$ROOTFS/etc/group"); fi
  [ -n "$RUN_GID" ] || return 1
  local home
  home=$(cut -d: -f6 <<<"$entry")
  RUN_HOME=${home:-/}
}

in_image() {
  # Runs argv inside the image's root filesystem as its user, with the image's ENV (plus
  # RUN_ENV) and WORKDIR, in a private mount namespace (its /proc and /dev vanish with it).
  # `exec` all along: the PID of this call is the PID of the program itself.
  exec unshare --mount --propagation private /bin/sh -ec '
    root=$1; user=$2; workdir=$3; shift 3
    mount -t proc proc "$root/proc"
    mount -t tmpfs -o nosuid,mode=755 tmpfs "$root/dev"
    for dev in null zero full random urandom tty; do
      : > "$root/dev/$dev"; mount --bind "/dev/$dev" "$root/dev/$dev"
    done
    mkdir "$root/dev/shm" "$root/dev/pts"; mount -t tmpfs -o nosuid,nodev tmpfs "$root/dev/shm"
    ln -s /proc/self/fd "$root/dev/fd"
    exec chroot --userspec="$user" "$root" /usr/bin/env -i -C "$workdir" "$@"
  ' in_image "$ROOTFS" "$RUN_UID:$RUN_GID" "$IMG_WORKDIR" \
    "${IMG_ENV[@]}" "HOME=$RUN_HOME" "HOSTNAME=$CONTAINER" "${RUN_ENV[@]}" "$@"
}

if [ "$RUN_MODE" = "podman run" ]; then
  env_args=()
  for e in "${RUN_ENV[@]}"; do env_args+=(--env "$e"); done
  podman run --rm --name "$CONTAINER" --network host --sig-proxy=true "${env_args[@]}" \
    "$IMAGE" "${IMG_CMD[@]}" > "$SERVER_LOG" 2>&1 &
  SERVER_PID=$!
  CONTAINER_MADE=1
  run_health() { podman healthcheck run "$CONTAINER"; }
  run_health_alone() {
    podman run --rm --network host "${env_args[@]}" --entrypoint "${IMG_HEALTH[0]}" \
      "$IMAGE" "${IMG_HEALTH[@]:1}"
  }
else
  podman create --name "$CONTAINER" "$IMAGE" > /dev/null
  CONTAINER_MADE=1
  ROOTFS=$(podman mount "$CONTAINER")
  resolve_user || die "the image's USER $IMG_USER" "not found in the image's /etc/passwd"
  (in_image "${IMG_ENTRYPOINT[@]}" "${IMG_CMD[@]}") > "$SERVER_LOG" 2>&1 &
  SERVER_PID=$!
  run_health() { in_image "${IMG_HEALTH[@]}"; }
  run_health_alone() { in_image "${IMG_HEALTH[@]}"; }
fi
note "server PID $SERVER_PID on 127.0.0.1:$PORT"

bounded() {
  # bounded SECONDS LOG COMMAND...: runs COMMAND (a function too) in the background with its
  # output in LOG; stops it by PID after SECONDS (status 124), else returns its status.
  local limit=$1 log=$2 pid rc=0
  shift 2
  ("$@") > "$log" 2>&1 &
  pid=$!
  for _ in $(seq $((limit * 10))); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  if kill -0 "$pid" 2>/dev/null; then stop_pid "$pid"; return 124; fi
  wait "$pid" || rc=$?
  return "$rc"
}

http_status() {
  python3 - "$1" <<'PY'
import sys, urllib.error, urllib.request
try:
    print(urllib.request.urlopen(sys.argv[1], timeout=3).status)
except urllib.error.HTTPError as e:
    print(e.code)
except Exception:
    print(0)
PY
}

# ------------------------------------------------------------------------------------------
# Checks
# ------------------------------------------------------------------------------------------
step "GET /up"
status=0
for _ in $(seq 120); do   # up to ~30 s for the server to listen
  kill -0 "$SERVER_PID" 2>/dev/null || break
  status=$(http_status "http://127.0.0.1:$PORT/up")
  [ "$status" = 200 ] && break
  sleep 0.25
done
if [ "$status" = 200 ]; then
  pass "GET /up answers 200"
else
  note "server output:"; tail -n 25 "$SERVER_LOG" | sed 's/^/      /'
  die "GET /up answers 200" "got ${status:-nothing}"
fi
if [ -n "$RUN_UID" ]; then
  uid=$(awk '/^Uid:/ { print $2 }' "/proc/$SERVER_PID/status" 2>/dev/null || true)
  if [ "$uid" = "$RUN_UID" ] && [ "$uid" != 0 ]; then note "server runs as uid $uid"
  else fail "the server runs as the image's non-root user" "uid $uid, USER $IMG_USER"; fi
fi
if grep -q '0\.0\.0\.0' "$SERVER_LOG"; then fail "the server listens on loopback only" "log names 0.0.0.0"; fi

step "HEALTHCHECK: ${IMG_HEALTH[*]:0:2} …"
if [ ${#IMG_HEALTH[@]} -gt 0 ]; then
  if bounded 30 "$WORK/health.log" run_health; then
    pass "the Dockerfile's HEALTHCHECK passes inside the image"
  else
    fail "the Dockerfile's HEALTHCHECK passes inside the image" "$(tail -n 1 "$WORK/health.log")"
  fi
fi

step "pusher-js 8 + Node SDK trigger, then SIGTERM"
CLIENT_OUT="$WORK/client.out"
: > "$CLIENT_OUT"
node tests/js/image_check.mjs 127.0.0.1 "$PORT" image-check image-check-key "$APP_SECRET" \
  > "$CLIENT_OUT" 2> "$WORK/client.err" &
CLIENT_PID=$!
for _ in $(seq 200); do   # up to ~40 s; the client bounds each of its own steps
  grep -q '^READY$' "$CLIENT_OUT" && break
  kill -0 "$CLIENT_PID" 2>/dev/null || break
  sleep 0.2
done
if grep -q '^READY$' "$CLIENT_OUT"; then
  pass "pusher-js subscribes and receives an event triggered by the Node SDK"
else
  fail "pusher-js subscribes and receives an event triggered by the Node SDK" \
    "$(tail -n 1 "$CLIENT_OUT" "$WORK/client.err" 2>/dev/null | tr '\n' ' ' | cut -c1-300)"
fi

kill -TERM "$SERVER_PID"
server_rc=""
for _ in $(seq 300); do   # up to 30 s: longer than the default shutdown_grace (10 s)
  if ! kill -0 "$SERVER_PID" 2>/dev/null; then
    wait "$SERVER_PID" && server_rc=0 || server_rc=$?
    break
  fi
  sleep 0.1
done
SERVER_PID_DONE=$SERVER_PID
[ -n "$server_rc" ] && SERVER_PID=""
for _ in $(seq 400); do kill -0 "$CLIENT_PID" 2>/dev/null || break; sleep 0.1; done
wait "$CLIENT_PID" 2>/dev/null || true
CLIENT_PID=""
verdict=$(grep '^{' "$CLIENT_OUT" | tail -n 1 || true)
if [[ $verdict == *'"ok":true'* ]]; then
  pass "SIGTERM: pusher-js sees close code 4200"
else
  fail "SIGTERM: pusher-js sees close code 4200" "${verdict:-no verdict from the client}"
fi
if [ "$server_rc" = 0 ]; then
  pass "SIGTERM: the server exits 0 (PID $SERVER_PID_DONE)"
else
  fail "SIGTERM: the server exits 0" "${server_rc:-still running after 30 s}"
  tail -n 10 "$SERVER_LOG" | sed 's/^/      /'
fi

if [ ${#IMG_HEALTH[@]} -gt 0 ] && [ -z "$SERVER_PID" ]; then
  step "HEALTHCHECK with the server gone"
  if bounded 30 "$WORK/health-down.log" run_health_alone; then
    fail "the HEALTHCHECK fails once the server is gone" "it still passed"
  else
    pass "the HEALTHCHECK fails once the server is gone"
  fi
fi

summary_and_exit
