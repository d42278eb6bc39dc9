"""Issue items 1-2: the installed command, configuration sources and start-up messages."""

from __future__ import annotations

import subprocess
import sys

from tests.installed import installed_command
from tests.integration.conftest import WS_QUERY
from tests.integration.rawws import RawWebSocket
from tests.integration.serverproc import ROOT, ServerProcess


def test_console_script_is_installed() -> None:
    command = installed_command("pyserver")
    assert command, "the pyserver command is not installed: pip install -e ."
    out = subprocess.run([command, "--version"], capture_output=True, text=True, check=True)
    assert out.stdout.startswith("pyserver ")


def test_default_app_with_no_config() -> None:
    proc = ServerProcess()
    try:
        ws = RawWebSocket(proc.port, f"/app/app-key{WS_QUERY}")
        assert ws.recv()["event"] == "pusher:connection_established"
        ws.close()
        log = proc.output()
        assert "listening on 127.0.0.1:" in log and "serving app app-id (key app-key" in log
        assert "app-secret" not in log
    finally:
        assert proc.stop() == 0


def test_env_vars_set_the_default_app() -> None:
    proc = ServerProcess(env={"PYSERVER_APP_KEY": "env-key", "PYSERVER_APP_SECRET": "s3cr3t"})
    try:
        ws = RawWebSocket(proc.port, f"/app/env-key{WS_QUERY}")
        assert ws.recv()["event"] == "pusher:connection_established"
        ws.close()
        assert "s3cr3t" not in proc.output()
        assert "is no option" not in proc.output()
    finally:
        proc.stop()


def test_a_misspelt_variable_is_named_in_a_warning() -> None:
    # left unnoticed, the typo would keep the default secret in force
    proc = ServerProcess(env={"PYSERVER_APP_SECRT": "s3cr3t", "PYSERVER_SERVICE_HOST": "x"})
    try:
        log = proc.output()
        assert (
            "PYSERVER_APP_SECRT is no option and is ignored (did you mean PYSERVER_APP_SECRET?)"
            in log
        )
        assert "PYSERVER_SERVICE_HOST is no option and is ignored\n" in log
    finally:
        assert proc.stop() == 0


def test_env_overrides_file() -> None:
    config = '[[apps]]\nid = "1"\nkey = "file-key"\nsecret = "x"\n'
    proc = ServerProcess(config, env={"PYSERVER_ACTIVITY_TIMEOUT": "7"})
    try:
        ws = RawWebSocket(proc.port, f"/app/file-key{WS_QUERY}")
        assert '\\"activity_timeout\\":7' in __import__("json").dumps(ws.recv())
        ws.close()
    finally:
        proc.stop()


def _start_fails(config: str, *extra: str) -> subprocess.CompletedProcess[str]:
    path = ROOT / "tests" / ".bad-config.toml"
    path.write_text(config)
    try:
        return subprocess.run(
            [sys.executable, "-m", "pyserver", "--port", "0", "--config", str(path), *extra],
            capture_output=True,
            text=True,
            timeout=20,
            cwd=ROOT,
        )
    finally:
        path.unlink()


def test_bad_config_stops_start_up_naming_the_field() -> None:
    result = _start_fails('[[apps]]\nid = "1"\nkey = "k"\nsecret = "s"\nmax_connections = -5\n')
    assert result.returncode == 2
    assert "apps.0.max_connections" in result.stderr
    result = _start_fails('activity_timeout = "soon"\n')
    assert result.returncode == 2 and "activity_timeout" in result.stderr
    result = _start_fails('[[apps]]\nid = "1"\nkey = "k"\n')
    assert result.returncode == 2 and "apps.0.secret" in result.stderr
    dup = '[[apps]]\nid="1"\nkey="k"\nsecret="s"\n[[apps]]\nid="2"\nkey="k"\nsecret="t"\n'
    result = _start_fails(dup)
    assert result.returncode == 2 and "key" in result.stderr
    result = _start_fails("this is not toml = = =\n")
    assert result.returncode == 2 and "cannot read" in result.stderr


def test_sigterm_exits_zero_and_closes_clients_with_4200() -> None:
    proc = ServerProcess()
    ws = RawWebSocket(proc.port, f"/app/app-key{WS_QUERY}")
    ws.recv()
    proc.proc.send_signal(15)
    error = ws.recv()
    assert error["event"] == "pusher:error" and error["data"]["code"] == 4200
    assert ws.expect_close().code == 4200
    assert proc.proc.wait(timeout=10) == 0
    assert "draining" in proc.output()
    proc.stop()


def test_a_webhook_that_can_never_fire_is_named_in_a_warning() -> None:
    config = (
        '[[apps]]\nid = "1"\nkey = "k"\nsecret = "s"\n'
        '[[apps.webhooks]]\nurl = "http://127.0.0.1:9/hook"\n'
        'event_types = ["channel_occupied", "subscription_count"]\n'
    )
    proc = ServerProcess(config)
    try:
        assert (
            "app 1: webhook http://127.0.0.1:9/hook lists subscription_count, which is never "
            "sent while the app's subscription_count is false" in proc.output()
        )
    finally:
        assert proc.stop() == 0
