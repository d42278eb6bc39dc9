"""Protected mode through a real server on loopback: the default secret keeps the HTTP API and
the console to this machine, `protected_mode = false` or a secret of one's own opens them.

Every request goes to 127.0.0.1; a remote client appears only as what a reverse proxy on this
host would write in `X-Forwarded-For` or `Forwarded` (203.0.113.7, never contacted).
"""

from __future__ import annotations

import http.client
import json

import pytest

from pyserver.auth.protected import REFUSAL
from tests.integration.conftest import WS_QUERY, AppCreds
from tests.integration.httpapi import request, sign_params
from tests.integration.rawws import RawWebSocket
from tests.integration.serverproc import ServerProcess

DEFAULT_APP = AppCreds("app-id", "app-key", "app-secret")
OWN_SECRET = AppCreds("app-id", "app-key", "s3cr3t-of-our-own")
VIA_PROXY = {"X-Forwarded-For": "203.0.113.7"}
WARNING = "uses the well-known default secret"


def list_channels(
    port: int, app: AppCreds = DEFAULT_APP, headers: dict[str, str] | None = None
) -> tuple[int, object]:
    path = f"/apps/{app.id}/channels"
    params = sign_params("GET", path, {}, b"", app)
    status, body, _ = request(port, "GET", path, b"", params, headers)
    return status, body


@pytest.fixture(scope="module")
def default_server():
    """No configuration at all: the embedded default app and its well-known secret."""
    proc = ServerProcess()
    yield proc
    assert proc.stop() == 0


def test_the_default_secret_serves_loopback(default_server) -> None:
    assert list_channels(default_server.port) == (200, {"channels": {}})


def test_the_default_secret_refuses_a_client_forwarded_by_a_local_proxy(default_server) -> None:
    port = default_server.port
    assert list_channels(port, headers=VIA_PROXY) == (403, {"error": REFUSAL, "status": 403})
    forwarded = {"Forwarded": 'for="203.0.113.7:41000";proto=https'}
    assert list_channels(port, headers=forwarded)[0] == 403
    status, body, _ = request(port, "GET", "/console", headers=VIA_PROXY)
    assert (status, body) == (403, {"error": REFUSAL, "status": 403})
    status, body, _ = request(port, "POST", "/users/42/terminate_connections", headers=VIA_PROXY)
    assert status == 403


def test_every_forwarding_header_line_counts(default_server) -> None:
    # a chain of proxies may send one line each; the remote one first, a local one last
    conn = http.client.HTTPConnection("127.0.0.1", default_server.port, timeout=10)
    path = "/apps/app-id/channels"
    query = "&".join(f"{k}={v}" for k, v in sign_params("GET", path, {}, b"", DEFAULT_APP).items())
    conn.putrequest("GET", f"{path}?{query}")
    conn.putheader("X-Forwarded-For", "203.0.113.7")
    conn.putheader("X-Forwarded-For", "127.0.0.1")
    conn.endheaders()
    response = conn.getresponse()
    assert (response.status, json.loads(response.read())["error"]) == (403, REFUSAL)
    conn.close()


def test_health_and_websockets_are_not_protected(default_server) -> None:
    port = default_server.port
    for path in ("/up", "/ready"):
        assert request(port, "GET", path, headers=VIA_PROXY)[0] == 200
    ws = RawWebSocket(port, f"/app/app-key{WS_QUERY}", headers=VIA_PROXY)
    assert ws.recv()["event"] == "pusher:connection_established"
    ws.close()


def test_the_default_secret_is_warned_about_without_showing_it(default_server) -> None:
    log = default_server.output()
    assert f"WARNING pyserver: app app-id {WARNING}" in log
    assert "trigger events, read channel and presence data, terminate users" in log
    assert "app-secret" not in log


def test_protected_mode_false_lets_the_forwarded_client_in() -> None:
    proc = ServerProcess(env={"PYSERVER_PROTECTED_MODE": "false"})
    try:
        assert list_channels(proc.port, headers=VIA_PROXY) == (200, {"channels": {}})
        assert f"{WARNING} and protected_mode is false" in proc.output()
    finally:
        assert proc.stop() == 0


def test_a_secret_of_ones_own_changes_nothing() -> None:
    proc = ServerProcess(env={"PYSERVER_APP_SECRET": OWN_SECRET.secret})
    try:
        assert list_channels(proc.port, OWN_SECRET, VIA_PROXY) == (200, {"channels": {}})
        assert request(proc.port, "GET", "/console", headers=VIA_PROXY)[0] == 200
        assert "default secret" not in proc.output()
        assert "WARNING" not in proc.output()
    finally:
        assert proc.stop() == 0


def test_one_app_with_the_default_secret_protects_the_server() -> None:
    config = """
[[apps]]
id = "1"
key = "own-key"
secret = "s3cr3t-of-our-own"

[[apps]]
id = "2"
key = "default-key"
secret = "app-secret"
"""
    proc = ServerProcess(config)
    try:
        own = AppCreds("1", "own-key", "s3cr3t-of-our-own")
        assert list_channels(proc.port, own, VIA_PROXY)[0] == 403
        assert list_channels(proc.port, own)[0] == 200
        assert f"app 2 {WARNING}" in proc.output()
    finally:
        assert proc.stop() == 0
