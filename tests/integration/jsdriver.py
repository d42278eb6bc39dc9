"""Drive real Pusher JS clients from pytest.

`JsDriver` starts ``node tests/js/driver.mjs`` (pusher-js 8.x and 7.x, laravel-echo and the
Node ``pusher`` server SDK; install them once with ``npm ci`` in ``tests/js``) and talks to it
over JSON lines: each call sends ``{"id", "cmd", **args}`` and blocks until the reply with the
same id arrives. Replies are routed by a reader thread, so several threads may issue calls at
once and a pending ``wait`` in one thread does not block others. ``call``'s own ``timeout``
(seconds) is the reply deadline; driver commands that take a timeout of their own get it as
``timeout_ms``.

Example::

    with JsDriver() as js:
        js.connect("alice", port)
        js.subscribe("alice", "my-channel")
        js.sdk("trigger", "my-channel", "greet", {"hi": 1}, port=port)
        (entry,) = js.wait("alice", type="channel", event="greet")
        assert entry["data"] == {"hi": 1}

See the header of ``tests/js/driver.mjs`` for the full command list and log entry format.
"""

from __future__ import annotations

import collections
import contextlib
import itertools
import json
import os
import shutil
import subprocess
import threading
from pathlib import Path
from queue import Empty, Queue
from types import TracebackType
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[2]
JS_DIR = REPO_ROOT / "tests" / "js"
DRIVER_PATH = JS_DIR / "driver.mjs"

_STDERR_TAIL_LINES = 60


class JsDriverError(RuntimeError):
    """A driver command failed (``ok: false``), timed out, or the node process died."""


def js_deps_installed() -> bool:
    """True when node is on PATH and ``npm ci`` has been run in ``tests/js``."""
    modules = JS_DIR / "node_modules"
    return shutil.which("node") is not None and all(
        (modules / pkg / "package.json").is_file()
        for pkg in ("pusher-js", "pusher-js-7", "laravel-echo", "pusher")
    )


class JsDriver:
    """A long-lived ``node driver.mjs`` process with a blocking, thread-safe call API."""

    def __init__(self, node: str = "node", env: dict[str, str] | None = None) -> None:
        self._ids = itertools.count(1)
        self._pending: dict[int, Queue[dict[str, Any]]] = {}
        self._lock = threading.Lock()
        self._write_lock = threading.Lock()
        self._stderr_tail: collections.deque[str] = collections.deque(maxlen=_STDERR_TAIL_LINES)
        self._closed = False
        self.proc = subprocess.Popen(
            [node, str(DRIVER_PATH)],
            cwd=JS_DIR,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            encoding="utf-8",
            bufsize=1,
            env={**os.environ, **(env or {})},
        )
        self._reader = threading.Thread(target=self._read_stdout, name="jsdriver-out", daemon=True)
        self._reader.start()
        self._err_reader = threading.Thread(
            target=self._read_stderr, name="jsdriver-err", daemon=True
        )
        self._err_reader.start()

    # -- plumbing -------------------------------------------------------------------------------

    def _read_stdout(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            line = line.strip()
            if not line:
                continue
            try:
                msg = json.loads(line)
            except json.JSONDecodeError:
                self._stderr_tail.append(f"<non-JSON stdout> {line}")
                continue
            with self._lock:
                queue = self._pending.get(msg.get("id"))
            if queue is not None:
                queue.put(msg)
        # stdout closed: the process is gone; wake every waiter.
        with self._lock:
            waiting = list(self._pending.values())
        for queue in waiting:
            queue.put({"ok": False, "error": "node driver exited", "_dead": True})

    def _read_stderr(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self._stderr_tail.append(line.rstrip("\n"))

    def stderr_tail(self) -> str:
        """The last lines the node process wrote to stderr."""
        return "\n".join(self._stderr_tail)

    def call(self, cmd: str, timeout: float = 15, **args: Any) -> Any:
        """Run one driver command and return its ``result``.

        Raises `JsDriverError` when the command fails, the reply does not arrive within
        ``timeout`` seconds, or the node process has exited.
        """
        if self.proc.poll() is not None:
            raise JsDriverError(
                f"node driver is not running (exit {self.proc.returncode})\n{self.stderr_tail()}"
            )
        msg_id = next(self._ids)
        queue: Queue[dict[str, Any]] = Queue(maxsize=1)
        with self._lock:
            self._pending[msg_id] = queue
        try:
            line = json.dumps({"id": msg_id, "cmd": cmd, **args}) + "\n"
            try:
                with self._write_lock:
                    assert self.proc.stdin is not None
                    self.proc.stdin.write(line)
                    self.proc.stdin.flush()
            except (BrokenPipeError, OSError) as exc:
                raise JsDriverError(f"cannot write to node driver: {exc}") from exc
            try:
                reply = queue.get(timeout=timeout)
            except Empty:
                raise JsDriverError(
                    f"{cmd}: no reply within {timeout}s\n--- node stderr ---\n{self.stderr_tail()}"
                ) from None
        finally:
            with self._lock:
                self._pending.pop(msg_id, None)
        if not reply.get("ok"):
            detail = f"\n--- node stderr ---\n{self.stderr_tail()}" if reply.get("_dead") else ""
            raise JsDriverError(f"{cmd}: {reply.get('error')}{detail}")
        return reply.get("result")

    # -- convenience wrappers ------------------------------------------------------------------

    def connect(
        self,
        client: str,
        port: int,
        key: str = "app-key",
        secret: str = "app-secret",
        app_id: str = "app-id",
        version: str = "8",
        *,
        host: str = "127.0.0.1",
        log_raw: bool = False,
        sdk_options: dict[str, Any] | None = None,
        timeout: float = 15,
        **options: Any,
    ) -> dict[str, Any]:
        """Connect a pusher-js client (``version`` "8" or "7"); returns ``{"socket_id": ...}``.

        Extra keyword arguments are passed to the Pusher constructor as options (for example
        ``activityTimeout=...``, or ``forceTLS=True, insecure=True`` where ``insecure`` turns
        off certificate checks for the whole node process). ``log_raw`` also logs every raw
        frame as ``{"type": "message", ...}``. ``sdk_options`` go to the Node SDK that signs
        this client's channel/user auth (e.g. ``{"encryptionMasterKeyBase64": ...}`` for
        private-encrypted channels).
        """
        result: dict[str, Any] = self.call(
            "connect",
            timeout=timeout,
            client=client,
            version=version,
            key=key,
            secret=secret,
            app_id=app_id,
            host=host,
            port=port,
            log_raw=log_raw,
            sdk_options=sdk_options or {},
            options=options,
        )
        return result

    def subscribe(self, client: str, channel: str, timeout_ms: int = 5000) -> dict[str, Any]:
        """Subscribe; returns ``{"succeeded": bool, "data": ...}`` (or ``"timeout": True``)."""
        result: dict[str, Any] = self.call(
            "subscribe",
            timeout_ms / 1000 + 5,
            client=client,
            channel=channel,
            timeout_ms=timeout_ms,
        )
        return result

    def wait(
        self,
        client: str,
        timeout_ms: int = 5000,
        count: int = 1,
        since: int = 0,
        **match: Any,
    ) -> list[dict[str, Any]]:
        """Wait until ``count`` log entries match all ``match`` fields; returns those entries.

        Entries already logged count too; pass ``since`` (from `mark`) to ignore older ones.
        """
        result: list[dict[str, Any]] = self.call(
            "wait",
            timeout_ms / 1000 + 5,
            client=client,
            match=match,
            timeout_ms=timeout_ms,
            count=count,
            since=since,
        )
        return result

    def events(self, client: str, since: int = 0) -> list[dict[str, Any]]:
        """The client's log entries with sequence number ``i >= since``."""
        result: list[dict[str, Any]] = self.call("events", client=client, since=since)
        return result

    def mark(self, client: str) -> int:
        """Sequence number of the next log entry (use as ``since``)."""
        return int(self.call("mark", client=client))

    def sdk(
        self,
        method: str,
        *args: Any,
        port: int,
        key: str = "app-key",
        secret: str = "app-secret",
        app_id: str = "app-id",
        host: str = "127.0.0.1",
        timeout: float = 15,
        **sdk_options: Any,
    ) -> Any:
        """Call a method of the Node ``pusher`` SDK.

        HTTP methods return ``{"status", "body"}`` (plus ``"error"`` for error statuses).
        """
        return self.call(
            "sdk",
            timeout=timeout,
            method=method,
            args=list(args),
            port=port,
            key=key,
            secret=secret,
            app_id=app_id,
            host=host,
            sdk_options=sdk_options,
        )

    # -- lifecycle -----------------------------------------------------------------------------

    def close(self) -> None:
        """Disconnect every client and stop the node process."""
        if self._closed:
            return
        self._closed = True
        if self.proc.poll() is None:
            with contextlib.suppress(JsDriverError):
                self.call("close_all", timeout=5)
            with contextlib.suppress(OSError):
                assert self.proc.stdin is not None
                self.proc.stdin.close()  # the driver exits when stdin closes
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        self._reader.join(timeout=2)
        self._err_reader.join(timeout=2)

    def __enter__(self) -> JsDriver:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
