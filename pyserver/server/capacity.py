"""Descriptor budget and admission: how many connections this process may hold, and when
it stops accepting.

Every connection costs one file descriptor, and a process's descriptors are capped
(RLIMIT_NOFILE, often by a hard limit that nothing here can raise). This module owns:
- `raise_descriptor_limit`: the soft limit goes up to the hard one at start-up;
- `Budget`: what of that limit is left for client connections once the process's own
  descriptors (Redis connections, webhook senders, metrics, logs) are set aside;
- `Admission`: the count of open connections against that budget, and how many more may be
  accepted now (the listener asks before each `accept`);
- `Board`: one byte per worker of `--workers N`, in memory the workers share, saying which are
  full, so that a full worker steps aside only while another one has room.

Invariants:
- Pure bookkeeping: no socket, no event loop, no clock. The listener (`server.listener`) does
  the accepting; the connection hooks call `opened`/`closed` exactly once each.
- `open` never exceeds `capacity + overflow`: the listener accepts at most `budget()` more.
- While another worker has room, a full worker accepts nothing (it leaves the connections in
  the shared queue for the others) and resumes once below the low-water mark. When no other
  worker has room, it accepts up to `overflow` connections beyond its capacity only to close
  them politely with 4100 (`admit` says which), so clients back off instead of failing at
  connect or waiting in a queue nobody reads.
"""

from __future__ import annotations

import mmap
import os
import resource
from dataclasses import dataclass

RESERVED_BASE = 32
"""Descriptors kept for everything but client connections beyond those counted below: log
files, DNS, the metrics listener's clients, a console session, a reconnecting Redis."""


def raise_descriptor_limit() -> tuple[int, int]:
    """Raise the soft RLIMIT_NOFILE to the hard one; return (before, after).

    An unlimited hard limit is read as the kernel's `fs.nr_open` (the most one process may
    have), and a refusal leaves the soft limit as it was.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard
    if hard == resource.RLIM_INFINITY:
        target = _nr_open()
    if target > soft:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError):
            return soft, soft
        return soft, target
    return soft, soft


def _nr_open() -> int:
    try:
        with open("/proc/sys/fs/nr_open") as f:
            return int(f.read())
    except (OSError, ValueError):
        return 1_048_576


def open_descriptors() -> int:
    """Descriptors this process has open now (0 where /proc is missing: no baseline)."""
    try:
        return len(os.listdir("/proc/self/fd")) - 1  # minus the one listdir itself opened
    except OSError:
        return 0


@dataclass(frozen=True)
class Budget:
    """How one process's descriptor limit is shared out."""

    limit: int
    """The soft RLIMIT_NOFILE in force."""
    baseline: int
    """Descriptors open before any client connects (listening sockets, event loop, files)."""
    reserved: int
    """Kept for the process's own outgoing connections (Redis, webhooks) and for spare."""
    overflow: int
    """Connections accepted beyond capacity only to be told 4100 and closed."""

    @classmethod
    def compute(
        cls, limit: int, baseline: int, webhook_concurrency: int = 0, redis_connections: int = 0
    ) -> Budget:
        """`redis_connections`: the most the process may hold to Redis (the Redis adapter's
        `RedisLink.most_connections()`; 0 without Redis)."""
        reserved = RESERVED_BASE + redis_connections + webhook_concurrency
        overflow = max(8, min(256, limit // 100))
        return cls(limit, baseline, reserved, overflow)

    @property
    def capacity(self) -> int:
        """Client connections (WebSocket or HTTP) this process holds."""
        return max(1, self.limit - self.baseline - self.reserved - self.overflow)

    def describe(self, workers: int) -> str:
        per_host = ""
        if workers > 1:
            per_host = f"; {workers} workers: {workers * self.capacity:,} per host"
        return (
            f"descriptors: limit {self.limit:,} per process, capacity {self.capacity:,} "
            f"connections per process{per_host} (kept back: {self.baseline} open at start, "
            f"{self.reserved} for Redis, webhooks and spare, {self.overflow} to answer 4100)"
        )


class Board:
    """One byte per worker in shared memory: 1 while that worker is full, else 0.

    The supervisor creates it (`create`) and passes its descriptor to the workers, which
    `attach`; a worker writes only its own byte. Bytes are read without locks: a stale read
    costs one pause of at most one re-check interval, never a lost connection.
    """

    __slots__ = ("_map", "fd", "index", "size")

    def __init__(self, fd: int, size: int, index: int) -> None:
        self.fd = fd
        self.size = size
        self.index = index
        self._map = mmap.mmap(fd, size)

    @classmethod
    def create(cls, workers: int) -> Board:
        fd = os.memfd_create("pyserver-capacity", 0)  # inheritable: not MFD_CLOEXEC
        os.ftruncate(fd, workers)
        return cls(fd, workers, -1)

    @classmethod
    def attach(cls, fd: int, index: int) -> Board:
        size = os.fstat(fd).st_size
        if not 0 <= index < size:
            raise ValueError(f"worker index {index} outside a board of {size}")
        return cls(fd, size, index)

    def set_full(self, full: bool) -> None:
        if self.index >= 0:
            self._map[self.index] = 1 if full else 0

    def clear(self, index: int) -> None:
        """Mark worker `index` as not full (the supervisor, when it starts that worker)."""
        self._map[index] = 0

    def others_have_room(self) -> bool:
        data = self._map[: self.size]
        return any(data[i] == 0 for i in range(self.size) if i != self.index)

    def close(self) -> None:
        self._map.close()


class Admission:
    """Open connections against a `Budget`; see the module docstring for the rules."""

    __slots__ = (
        "_overflow_margin",
        "_paused_at",
        "board",
        "capacity",
        "high_water",
        "open",
        "overflow",
        "resume",
    )

    def __init__(self, capacity: int, overflow: int, board: Board | None = None) -> None:
        self.capacity = capacity
        self.overflow = overflow
        self.board = board
        self.open = 0
        """Connections made (connection_made seen) and not lost yet."""
        self.resume = max(1, min(256, capacity // 20))
        """How far below the limit it stopped at the count must fall before accepting again."""
        self._overflow_margin = max(1, min(self.resume, overflow // 2))
        self._paused_at: int | None = None
        """The limit accepting stopped at, while it is stopped."""
        self.high_water = 0
        """The most connections open at once so far."""

    @classmethod
    def for_budget(cls, budget: Budget, board: Board | None = None) -> Admission:
        return cls(budget.capacity, budget.overflow, board)

    def others_have_room(self) -> bool:
        return self.board is not None and self.board.others_have_room()

    def budget(self, pending: int = 0) -> int:
        """How many connections may be accepted now; `pending` were accepted and are not
        made yet. 0 means: stop accepting and ask again when a connection closes."""
        count = self.open + pending
        limit = self.capacity if self.others_have_room() else self.capacity + self.overflow
        if self._paused_at is not None:
            if limit > self._paused_at:  # no other worker has room any more: overflow band
                self._paused_at = None
            else:
                self._paused_at = limit
                # In the overflow band, connections leave as soon as they read their 4100:
                # resume within the band, or those waiting in the queue would time out.
                margin = self.resume if limit == self.capacity else self._overflow_margin
                if count > max(0, limit - margin):
                    return 0
                self._paused_at = None
        if count >= limit:
            self._paused_at = limit
            return 0
        return limit - count

    @property
    def paused(self) -> bool:
        return self._paused_at is not None

    def opened(self) -> bool:
        """Count a new connection; True if it is admitted, False if it is over capacity and
        must be closed politely (4100)."""
        self.open += 1
        if self.open > self.high_water:
            self.high_water = self.open
        if self.open == self.capacity and self.board is not None:
            self.board.set_full(True)
        return self.open <= self.capacity

    def closed(self) -> None:
        self.open -= 1
        if self.open == self.capacity - 1 and self.board is not None:
            self.board.set_full(False)
