#!/usr/bin/env bash
# Install soketi 1.6.1 into this folder from the npm registry, as pinned by package-lock.json.
#
#   bench/servers/soketi/install.sh
#
# soketi 1.6.1 pins uWebSockets.js to a GitHub tarball (v20.10.0) that has no binary for
# Node 20; package.json's "overrides" maps it to @trufflesuite/uws-js-unofficial
# 20.30.0-unofficial.0, a registry build with native binaries for Node 16/18/20 on linux
# x64/arm64. Install scripts are skipped: soketi needs none of them (they build optional
# accelerators of code paths it does not use here).
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$HERE"
command -v node >/dev/null || { echo "install.sh: node is not installed (Node 16, 18 or 20)" >&2; exit 1; }
npm ci --no-audit --no-fund --ignore-scripts --loglevel=error
node check-uws.js
echo "soketi $(node -p "require('@soketi/soketi/package.json').version") installed in $HERE"
