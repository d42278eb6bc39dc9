"""A one-line progress bar on stderr, redrawn with \\r; silent when stderr is not a TTY."""

from __future__ import annotations

import sys
from typing import TextIO

WIDTH = 24


class Progress:
    def __init__(self, enabled: bool = True, stream: TextIO | None = None) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = enabled and self.stream.isatty()
        self._last_len = 0

    def update(self, phase: str, done: float, total: float, text: str = "") -> None:
        """Draw `phase [####----] done/total s  text`."""
        if not self.enabled:
            return
        fraction = min(max(done / total, 0.0), 1.0) if total > 0 else 0.0
        filled = int(fraction * WIDTH)
        line = f"{phase:<8} [{'#' * filled}{'-' * (WIDTH - filled)}] {done:5.1f}/{total:g}s  {text}"
        pad = max(0, self._last_len - len(line))
        self.stream.write("\r" + line + " " * pad)
        self.stream.flush()
        self._last_len = len(line)

    def finish(self) -> None:
        """End the line so later output starts on a fresh one."""
        if self.enabled and self._last_len:
            self.stream.write("\n")
            self.stream.flush()
            self._last_len = 0
