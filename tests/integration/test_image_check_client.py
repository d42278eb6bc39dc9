"""The client side of scripts/check-image.sh, run against pyserver itself (no container).

`tests/js/image_check.mjs` is what the image check trusts to say that pusher-js 8 received an
SDK-triggered event and then saw close code 4200 on SIGTERM. Here it runs against a server
started from the source tree, exactly as the script drives it: wait for `READY`, send the
signal, read the verdict. It must pass on a draining shutdown and fail when the server dies
without one, so the image check cannot pass by accident.
"""

from __future__ import annotations

import json
import signal
import subprocess
import time
from typing import Any

import pytest

from tests.integration.jsdriver import JS_DIR, js_deps_installed
from tests.integration.serverproc import ServerProcess

pytestmark = pytest.mark.skipif(not js_deps_installed(), reason="run npm ci in tests/js")

APP = ["image-app", "image-key", "image-secret"]
ENV = {"PYSERVER_APP_ID": APP[0], "PYSERVER_APP_KEY": APP[1], "PYSERVER_APP_SECRET": APP[2]}


def _run_client(proc: ServerProcess, sig: int) -> tuple[dict[str, Any], int]:
    """The image check's client: ready after the SDK event, then `sig` to the server."""
    client = subprocess.Popen(
        ["node", str(JS_DIR / "image_check.mjs"), "127.0.0.1", str(proc.port), *APP],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert client.stdout is not None
        ready = client.stdout.readline().strip()  # the client bounds each of its steps
        assert ready == "READY", ready
        proc.proc.send_signal(sig)
        out, _ = client.communicate(timeout=40)
    finally:
        if client.poll() is None:
            client.kill()
            client.wait()
    return json.loads(out.strip().splitlines()[-1]), client.returncode


def test_passes_when_sigterm_drains_with_4200() -> None:
    proc = ServerProcess(env=ENV)
    try:
        verdict, code = _run_client(proc, signal.SIGTERM)
        assert verdict["ok"] is True and verdict["close_code"] == 4200 and code == 0
        assert proc.proc.wait(timeout=15) == 0
    finally:
        proc.stop()


def test_fails_when_the_server_dies_without_draining() -> None:
    proc = ServerProcess(env=ENV)
    started = time.monotonic()
    try:
        verdict, code = _run_client(proc, signal.SIGKILL)
        assert verdict["ok"] is False and verdict["close_code"] != 4200 and code == 1
        assert time.monotonic() - started < 30
    finally:
        proc.stop()
