#!/usr/bin/env bash
# Start soketi 1.6.1 in the foreground on 127.0.0.1:PORT, configured like
# ../pyserver-parity.toml configures pyserver, for `python -m bench compare`:
#
#   bench/servers/soketi/start.sh PORT        (run install.sh once first)
#
# - one app: app-id / app-key / app-secret, client events on, no client-event rate limit
#   (soketi's default, -1), presence channels capped at 100 members (soketi's default);
# - user authentication off: with it on, soketi closes with 4009 every connection that
#   neither signs in nor joins a private channel within 30 s, which would end idle and
#   long fan-out runs;
# - metrics off, debug off, everything bound to 127.0.0.1: the /usage server on PORT+3600
#   and the cluster discovery socket on PORT+5001 (client-only, so it sends no broadcast).
# `exec` keeps the PID: SIGTERM to it stops soketi (it sends 4200 to its clients first).
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
PORT="${1:?usage: start.sh PORT}"
if ! [[ "$PORT" =~ ^[0-9]+$ ]] || (( PORT < 1 || PORT > 65535 )); then
  echo "start.sh: PORT must be 1..65535, got '$PORT'" >&2
  exit 2
fi
side_port() { local p=$(( PORT + $1 )); (( p > 65535 )) && p=$(( PORT - $1 )); echo "$p"; }
BIN="$HERE/node_modules/@soketi/soketi/bin/server.js"
[[ -f "$BIN" ]] || { echo "start.sh: soketi is not installed; run $HERE/install.sh" >&2; exit 1; }
node "$HERE/check-uws.js"

export SOKETI_HOST=127.0.0.1 SOKETI_PORT="$PORT"
export SOKETI_METRICS_HOST=127.0.0.1 SOKETI_METRICS_SERVER_PORT="$(side_port 3600)"
export SOKETI_CLUSTER_PORT="$(side_port 5001)"
export SOKETI_DEFAULT_APP_ID=app-id SOKETI_DEFAULT_APP_KEY=app-key SOKETI_DEFAULT_APP_SECRET=app-secret
export SOKETI_DEFAULT_APP_ENABLED=true SOKETI_DEFAULT_APP_ENABLE_CLIENT_MESSAGES=true
export SOKETI_DEFAULT_APP_MAX_CLIENT_EVENTS_PER_SEC=-1 SOKETI_PRESENCE_MAX_MEMBERS=100
export SOKETI_DEFAULT_APP_USER_AUTHENTICATION=false
export SOKETI_DEBUG=false SOKETI_METRICS_ENABLED=false SOKETI_SHUTDOWN_GRACE_PERIOD=500
export FORCE_COLOR=0 AWS_SDK_JS_SUPPRESS_MAINTENANCE_MODE_MESSAGE=1
unset UWS_USE_FALLBACK
# soketi reads ./.env from its working directory: run from here, where there is none.
cd "$HERE"
exec node "$BIN" start --config="$HERE/soketi.config.json"
