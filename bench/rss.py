"""Resident memory and CPU time of a local server, from /proc (Linux only).

A server is a process and its descendants (a `--workers` supervisor and its workers, or a
start script that forks), so both figures are summed over that process tree. Every reader
returns None when the process is gone or /proc is missing; none of them raises.
"""

from __future__ import annotations

import os
from pathlib import Path

PROC = Path("/proc")
CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def parse_vmrss_kb(status_text: str) -> int | None:
    """The `VmRSS:` value in kB of a /proc/PID/status text, or None."""
    for line in status_text.splitlines():
        if line.startswith("VmRSS:"):
            parts = line.split()
            if len(parts) >= 2 and parts[1].isdigit():
                return int(parts[1])
    return None


def parse_stat(stat_text: str) -> tuple[int, int] | None:
    """(parent PID, utime + stime in clock ticks) of a /proc/PID/stat text, or None.

    The command name (field 2) may hold spaces and parentheses, so fields are counted from
    the last `)`.
    """
    end = stat_text.rfind(")")
    if end < 0:
        return None
    fields = stat_text[end + 2 :].split()
    # fields[0] is field 3 (state): ppid is field 4, utime 14, stime 15.
    if len(fields) < 13:
        return None
    try:
        return int(fields[1]), int(fields[11]) + int(fields[12])
    except ValueError:
        return None


def _stat(pid: int) -> tuple[int, int] | None:
    try:
        return parse_stat((PROC / str(pid) / "stat").read_text())
    except OSError:
        return None


def process_tree(pid: int) -> list[int]:
    """`pid` and all its descendants that are alive now (`pid` first); [] when it is gone."""
    if _stat(pid) is None:
        return []
    children: dict[int, list[int]] = {}
    try:
        entries = [e.name for e in os.scandir(PROC) if e.name.isdigit()]
    except OSError:
        return [pid]
    for name in entries:
        stat = _stat(int(name))
        if stat is not None:
            children.setdefault(stat[0], []).append(int(name))
    tree = [pid]
    i = 0
    while i < len(tree):
        tree.extend(children.get(tree[i], []))
        i += 1
    return tree


def read_rss_kb(pid: int | None) -> int | None:
    """VmRSS of process `pid` plus its descendants, in kB; None when there is no such
    process or no /proc."""
    if pid is None:
        return None
    total: int | None = None
    for member in process_tree(pid):
        try:
            value = parse_vmrss_kb((PROC / str(member) / "status").read_text())
        except OSError:
            continue
        if value is not None:
            total = (total or 0) + value
    return total


def read_cpu_s(pid: int | None) -> float | None:
    """User plus system CPU seconds used so far by `pid` and its live descendants."""
    if pid is None:
        return None
    total: float | None = None
    for member in process_tree(pid):
        stat = _stat(member)
        if stat is not None:
            total = (total or 0.0) + stat[1] / CLOCK_TICKS
    return total


def kb_per_connection(start_kb: int | None, end_kb: int | None, connections: int) -> float | None:
    """RSS growth between two readings per open connection, in kB; None without both
    readings or without a connection."""
    if start_kb is None or end_kb is None or connections <= 0:
        return None
    return (end_kb - start_kb) / connections
