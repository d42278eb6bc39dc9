"""Start pyserver for real, as its own process, on a free loopback port."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
_LISTENING = re.compile(r"listening on 127\.0\.0\.1:(\d+)")
UNEXPECTED = re.compile(
    r"Traceback \(most recent call last\)|exception was never retrieved|Exception in callback"
)
"""What the server prints only when a task or callback died of a bug: any test fails on it."""


class ServerProcess:
    """A running `python -m pyserver`; `port` is where it listens, `log` what it printed."""

    def __init__(
        self, config: str = "", env: dict[str, str] | None = None, args: list[str] | None = None
    ) -> None:
        self.config_path: str | None = None
        cmd = [sys.executable, "-m", "pyserver", "--host", "127.0.0.1", "--port", "0"]
        if config:
            handle, self.config_path = tempfile.mkstemp(suffix=".toml")
            with os.fdopen(handle, "w") as f:
                f.write(config)
            cmd += ["--config", self.config_path]
        cmd += args or []
        full_env = {k: v for k, v in os.environ.items() if not k.startswith("PYSERVER_")}
        full_env["PYSERVER_METRICS_PORT"] = "0"  # many servers run at once in the tests
        full_env.update(env or {})
        self.proc = subprocess.Popen(
            cmd,
            cwd=ROOT,
            env=full_env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.log: list[str] = []
        self.port = 0
        deadline = time.monotonic() + 20
        assert self.proc.stdout is not None
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                break
            self.log.append(line)
            match = _LISTENING.search(line)
            if match:
                self.port = int(match.group(1))
                break
        if not self.port:
            self.proc.kill()
            raise RuntimeError("pyserver did not start:\n" + "".join(self.log))
        self._drainer = threading.Thread(target=self._drain, daemon=True)
        self._drainer.start()

    def metrics_port(self, timeout: float = 10) -> int:
        """The port of the metrics listener, from the start-up log."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            match = re.search(r"metrics at http://127\.0\.0\.1:(\d+)/metrics", self.output())
            if match:
                return int(match.group(1))
            time.sleep(0.05)
        raise AssertionError("no metrics line in the log:\n" + self.output())

    def _drain(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.log.append(line)

    def output(self) -> str:
        return "".join(self.log)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.config_path:
            os.unlink(self.config_path)
            self.config_path = None
        self._drainer.join(timeout=5)
        output = self.output()
        crash = UNEXPECTED.search(output)
        if crash is not None:
            raise AssertionError(
                "the server logged a bug:\n" + output[max(0, crash.start() - 500) :]
            )
        return self.proc.returncode
