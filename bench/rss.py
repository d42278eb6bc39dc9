"""Resident memory of a local process, from /proc/PID/status (Linux only)."""

from __future__ import annotations

from pathlib import Path


def parse_vmrss_kb(status_text: str) -> int | None:
    """The `VmRSS:` value in kB of a /proc/PID/status text, or None."""
    for line in status_text.splitlines():
        if line.startswith("VmRSS:"):
            parts = line.split()
            if len(parts) >= 2 and parts[1].isdigit():
                return int(parts[1])
    return None


def read_rss_kb(pid: int | None) -> int | None:
    """VmRSS of process `pid` in kB; None when there is no such process or no /proc."""
    if pid is None:
        return None
    try:
        return parse_vmrss_kb(Path(f"/proc/{pid}/status").read_text())
    except OSError:
        return None
