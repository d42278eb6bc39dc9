"""Logging set-up: readable lines by default, one JSON object per line with `--log-format json`;
and `SocketLog`, the per-connection debug logger (docs/logging.md).

Invariants:
- Nothing logs per message at the default level; secrets are never logged.
- Debug logging costs a connection nothing at INFO: `socket_log` asks `isEnabledFor` once,
  when the connection opens, and returns None when debug is off; callers test `is not None`.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import MutableMapping
from typing import Any

import orjson


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        socket_id = getattr(record, "socket_id", None)
        if socket_id is not None:
            entry["socket_id"] = socket_id
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(entry).decode()


def configure(level: str, fmt: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())


class SocketLog(logging.LoggerAdapter):  # type: ignore[type-arg]
    """A logger that prefixes every message with `socket <id>: ` and adds `socket_id` to the
    record (a field of its own in JSON lines), like websockets' per-connection adapter."""

    def process(
        self, msg: object, kwargs: MutableMapping[str, Any]
    ) -> tuple[object, MutableMapping[str, Any]]:
        assert self.extra is not None
        kwargs["extra"] = self.extra
        return f"socket {self.extra['socket_id']}: {msg}", kwargs


def socket_log(logger: logging.Logger, socket_id: str) -> SocketLog | None:
    """A `SocketLog` for one connection when `logger` logs at DEBUG, else None."""
    if not logger.isEnabledFor(logging.DEBUG):
        return None
    return SocketLog(logger, {"socket_id": socket_id})
