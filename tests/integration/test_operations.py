"""Issue 7 items: metrics, health and readiness, TLS with pusher-js, JSON logs."""

from __future__ import annotations

import json
import os
import re
import socket
import ssl
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from tests.installed import installed_command
from tests.integration.conftest import WS_QUERY, PusherSocket, sdk
from tests.integration.httpapi import request
from tests.integration.jsdriver import JsDriver
from tests.integration.rawws import RawWebSocket
from tests.integration.serverproc import ServerProcess

CONFIG = """
[[apps]]
id = "1001"
key = "app-key"
secret = "app-secret"
"""


def _metrics(port: int) -> dict[str, float]:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    values = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            values[name] = float(value)
    return values


def test_prometheus_metrics_count_connections_messages_and_http(uid) -> None:
    proc = ServerProcess(CONFIG)
    try:
        port = proc.metrics_port()
        a, b = PusherSocket(proc.port), PusherSocket(proc.port)
        a.subscribe(f"m-{uid}")
        b.subscribe(f"m-{uid}")
        sdk(proc.port).trigger(f"m-{uid}", "ev", {"x": 1})
        a.recv()
        b.recv()
        values = _metrics(port)
        label = '{app_id="1001"}'
        assert values[f"pyserver_connected{label}"] == 2
        assert values[f"pyserver_new_connections_total{label}"] == 2
        assert values[f"pyserver_ws_messages_received_total{label}"] == 2
        # 2 subscription_succeeded + 2 deliveries of the event (+2 connection_established)
        assert values[f"pyserver_ws_messages_sent_total{label}"] == 6
        assert values[f"pyserver_socket_transmitted_bytes{label}"] > 0
        assert values[f"pyserver_socket_received_bytes{label}"] > 0
        assert values[f"pyserver_http_calls_received_total{label}"] == 1
        assert values["pyserver_broadcast_latency_seconds_count"] == 1
        assert values["pyserver_webhook_queue_depth"] == 0
        assert values["pyserver_process_resident_memory_bytes"] > 1_000_000
        a.close()
        b.close()
        assert request(port, "GET", "/nothing")[0] == 404
    finally:
        proc.stop()


def test_metrics_prefix_can_match_soketi() -> None:
    proc = ServerProcess(CONFIG, env={"PYSERVER_METRICS_PREFIX": "soketi_"})
    try:
        assert 'soketi_connected{app_id="1001"}' in _metrics(proc.metrics_port())
    finally:
        proc.stop()


def test_up_and_ready_while_draining(uid) -> None:
    proc = ServerProcess(CONFIG, env={"PYSERVER_SHUTDOWN_GRACE": "3"})
    try:
        assert request(proc.port, "GET", "/up")[0] == 200
        assert request(proc.port, "GET", "/ready")[0] == 200
        clients = [RawWebSocket(proc.port, f"/app/app-key{WS_QUERY}") for _ in range(30)]
        for client in clients:
            client.recv()
        proc.proc.send_signal(15)
        # clients are closed in paced batches over the grace period, each with 4200
        codes = [client.expect_close(timeout=10).code for client in clients]
        assert set(codes) == {4200}
        assert proc.proc.wait(timeout=15) == 0
    finally:
        proc.stop()


def test_ready_fails_over_the_memory_threshold() -> None:
    proc = ServerProcess(CONFIG, env={"PYSERVER_READY_MAX_MEMORY_MB": "1"})
    try:
        status, body, _ = request(proc.port, "GET", "/ready")
        assert status == 503 and body["over_memory"] is True
        assert request(proc.port, "GET", "/up")[0] == 200
    finally:
        proc.stop()


def test_json_logs_one_object_per_line_without_secrets() -> None:
    proc = ServerProcess(CONFIG, args=["--log-format", "json"])
    try:
        lines = [line for line in proc.output().splitlines() if line.strip()]
        entries = [json.loads(line) for line in lines]
        assert any("listening on" in e["message"] for e in entries)
        assert all({"time", "level", "logger", "message"} <= set(e) for e in entries)
        assert "app-secret" not in proc.output()
    finally:
        proc.stop()


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
    )
    return cert, key


def test_native_tls_with_pusher_js_force_tls(certificate, js: JsDriver, uid) -> None:
    cert, key = certificate
    proc = ServerProcess(CONFIG, env={"PYSERVER_SSL_CERT": str(cert), "PYSERVER_SSL_KEY": str(key)})
    try:
        name = f"tls-{uid}"
        js.connect(
            name,
            proc.port,
            "app-key",
            "app-secret",
            "1001",
            "8",
            forceTLS=True,
            insecure=True,
            enabledTransports=["ws", "wss"],
        )
        assert js.subscribe(name, f"secure-{uid}")["succeeded"]
        result = js.sdk(
            "trigger",
            f"secure-{uid}",
            "over-tls",
            {"ok": True},
            port=proc.port,
            key="app-key",
            secret="app-secret",
            app_id="1001",
            useTLS=True,
        )
        assert result["status"] == 200
        (entry,) = js.wait(name, type="channel", event="over-tls")
        assert entry["data"] == {"ok": True}
        js.call("disconnect", client=name)
        with pytest.raises(ConnectionError):  # plain ws:// is not served on a TLS port
            RawWebSocket(proc.port, f"/app/app-key{WS_QUERY}", timeout=2)
    finally:
        proc.stop()


def test_wss_to_a_plain_port_is_explained_in_the_log() -> None:
    proc = ServerProcess(CONFIG)
    try:
        for _ in range(3):  # a reconnecting client: one warning, not one per attempt
            context = ssl.create_default_context()
            context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
            with (
                socket.create_connection(("127.0.0.1", proc.port), timeout=5) as raw,
                pytest.raises((ssl.SSLError, OSError)),
            ):
                context.wrap_socket(raw).close()
        hint = "a client started a TLS handshake (wss:// or https://) on this plain port"
        deadline = time.monotonic() + 5
        while hint not in proc.output() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert proc.output().count(hint) == 1
    finally:
        assert proc.stop() == 0


def test_start_up_refuses_half_a_tls_config(certificate) -> None:
    cert, _ = certificate
    command = installed_command("pyserver")
    assert command, "the pyserver command is not installed: pip install -e ."
    result = subprocess.run(
        [command, "--port", "0"],
        env={"PYSERVER_SSL_CERT": str(cert), "PATH": os.environ.get("PATH", "")},
        capture_output=True,
        text=True,
        timeout=20,
    )
    assert result.returncode == 2 and re.search(r"ssl_cert and ssl_key", result.stderr)
