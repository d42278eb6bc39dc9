"""Kernel receive timestamps (Linux `SO_TIMESTAMPNS`), converted to the run's clock.

With `SO_TIMESTAMPNS` set on a socket, every `recvmsg` carries an `SCM_TIMESTAMPNS` control
message: the `CLOCK_REALTIME` time at which the kernel queued the data on the socket. For
TCP it is the time of the last segment that read consumed, so messages that arrived earlier
and were read together get the later time (a latency is only ever overstated, never
understated). On loopback the segment is normally queued within the sender's own `send`
call.

`bench.clock.now_ns` is `CLOCK_MONOTONIC`; `OFFSET` follows `CLOCK_REALTIME - CLOCK_MONOTONIC`,
read when this module is imported and again every `REFRESH_S` seconds while a loop uses
kernel timestamps. Both clocks are slewed alike by NTP's frequency corrections, so the offset
moves only when the wall clock is stepped, but that does happen: on the project's VM it
stayed within 20 ns for a minute, then jumped by 311 ms and went on in steps of 0.5 ms
every 100 ms (a guest clock agent catching up). So the offset is read every 10 ms, and each
timestamp is converted with the offset of its own time (`RealtimeOffset`). A step backwards
makes the wall clock ambiguous: timestamps within the step's size before it may be converted
with the newer offset.

Latency clock names, as recorded in results: `KERNEL` ("kernel-receive") and `READ` ("read",
the time the generator read the bytes).
"""

from __future__ import annotations

import asyncio
import collections
import functools
import socket
import struct
import sys
import time

from bench.clock import now_ns

KERNEL = "kernel-receive"
READ = "read"
LATENCY_CLOCKS = (KERNEL, READ)

SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)
"""Python may lack the constant; 35 is Linux's (asm-generic) value."""
SCM_TIMESTAMPNS = SO_TIMESTAMPNS
TIMESPEC = struct.Struct("@ll")
"""The kernel's `struct timespec` of SO_TIMESTAMPNS: (long seconds, long nanoseconds)."""
ANCILLARY_SIZE = socket.CMSG_SPACE(TIMESPEC.size) if hasattr(socket, "CMSG_SPACE") else 0
REFRESH_S = 0.01
"""How often the offset is read (each time about 1 µs of clock reads)."""
OFFSET_READINGS = 5
TOLERANCE_NS = 1_000
"""Offset changes up to this are reading noise (a paired reading spans about 0.1 µs)."""
HISTORY = 1_000
"""Earlier offsets kept (at least 10 s' worth of a wall clock stepped every 10 ms)."""


@functools.cache
def supported() -> bool:
    """True when TCP sockets here can carry kernel receive timestamps (Linux)."""
    if not sys.platform.startswith("linux") or not ANCILLARY_SIZE:
        return False
    if not hasattr(socket.socket, "recvmsg_into") or not hasattr(time, "CLOCK_REALTIME"):
        return False
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            enable(sock)
            return bool(sock.getsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS))
    except OSError:
        return False


def enable(sock: socket.socket) -> None:
    """Ask the kernel to timestamp what it queues on `sock` (raises OSError if it cannot)."""
    sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)


def realtime_offset() -> tuple[int, int]:
    """(`now_ns()`, `CLOCK_REALTIME - now_ns()`) from the tightest of a few paired readings."""
    realtime = getattr(time, "CLOCK_REALTIME", None)
    if realtime is None:
        return now_ns(), 0
    best_spread, best = -1, (0, 0)
    for _ in range(OFFSET_READINGS):
        before = now_ns()
        wall = time.clock_gettime_ns(realtime)
        after = now_ns()
        if best_spread < 0 or after - before < best_spread:
            middle = (before + after) // 2
            best_spread, best = after - before, (middle, wall - middle)
    return best


class RealtimeOffset:
    """`CLOCK_REALTIME - now_ns()` over time, sampled on the event loop that uses it.

    `ns` is the offset seen since `since` (on `now_ns`); `history` keeps the earlier ones,
    each with the time from which it applied, for timestamps taken before the latest change
    and read after it. A change is dated halfway between the last reading that showed the
    old offset and the first that showed the new one, so only timestamps within half a
    refresh interval of a step of the wall clock can be converted with the wrong offset.
    """

    def __init__(self) -> None:
        self.last_reading, self.ns = realtime_offset()
        self.since = 0
        self.history: collections.deque[tuple[int, int]] = collections.deque(maxlen=HISTORY)
        self.changes = 0
        self._loop: asyncio.AbstractEventLoop | None = None

    def refresh(self) -> None:
        reading, offset = realtime_offset()
        if abs(offset - self.ns) > TOLERANCE_NS:
            self.history.append((self.since, self.ns))
            self.since = (self.last_reading + reading) // 2
            self.ns = offset
            self.changes += 1
        self.last_reading = reading

    def to_run_clock(self, realtime_ns: int) -> int:
        """A CLOCK_REALTIME time as `now_ns` time, with the offset that applied then."""
        mono = realtime_ns - self.ns
        if mono >= self.since:
            return mono
        for since, offset in reversed(self.history):
            mono = realtime_ns - offset
            if mono >= since:
                return mono
        return mono

    def keep_fresh(self, loop: asyncio.AbstractEventLoop) -> None:
        """Refresh now and then every REFRESH_S seconds on `loop` (once per loop)."""
        if self._loop is loop:
            return
        self._loop = loop
        self.refresh()

        def tick() -> None:
            if self._loop is loop:
                self.refresh()
                loop.call_later(REFRESH_S, tick)

        loop.call_later(REFRESH_S, tick)


OFFSET = RealtimeOffset()


def to_run_clock(timespec: bytes) -> int:
    """An SCM_TIMESTAMPNS payload as ns on `bench.clock.now_ns`."""
    seconds, nanoseconds = TIMESPEC.unpack(timespec)
    return OFFSET.to_run_clock(int(seconds) * 1_000_000_000 + int(nanoseconds))
