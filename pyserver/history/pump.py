"""The replay pump: one per node, it writes rewinds and catch-ups in slices so that a burst of
them cannot hold the event loop (issue 13, docs/history.md "Cost on the hot path").

A replay is a `Job`: a cursor over frames for one subscription, ended by a tail (the held
live events, then the fan-out) that the job runs itself in its last step. The pump gives
every loop turn a budget of `SLICE_SECONDS` of replay writing. A replay submitted while
the pump is idle and the turn's budget lasts is written at once (a small rewind costs no
extra loop turn); anything left over, and every replay submitted while others wait, goes
to a queue that the pump works through one `call_soon` turn at a time, first come first
served, giving the loop back after each slice so other clients' frames are read and
written in between.

Invariants:
- Jobs run in submission order; a job's frames are written in its order (one cursor), and
  its tail runs once, in the same step as its last frame.
- A job is never stepped once `cancelled` (its subscriber left or its connection closed):
  whoever cancels it releases what it held.
- At most one turn callback is scheduled at a time; while the queue is empty and no budget
  is open, nothing is scheduled (an idle pump costs nothing).
- Frames go through the connection's ordinary `send`, so corking and the slow-consumer cap
  (`pyserver.server.flow`) apply to replay frames as to any other.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable
from typing import Protocol

SLICE_SECONDS = 0.002
"""Replay writing per loop turn. About 1.5 µs a frame: some 1,300 frames a turn, so 1,000
subscribers catching up 1,000 events each take some 750 turns instead of one."""
CHECK_EVERY = 32
"""Frames written between two reads of the clock."""


class Job(Protocol):
    """One subscription's replay, as the pump sees it."""

    @property
    def cancelled(self) -> bool: ...

    def step(self, frames: int) -> bool:
        """Write up to `frames` frames; True when the job is done (its tail ran)."""
        ...


class ReplayPump:
    """Writes queued replays a slice per loop turn (see the module docstring)."""

    __slots__ = ("_call_soon", "_deadline", "_scheduled", "clock", "queue", "slice_seconds")

    def __init__(
        self,
        slice_seconds: float = SLICE_SECONDS,
        clock: Callable[[], float] = time.perf_counter,
        call_soon: Callable[[Callable[[], None]], object] | None = None,
    ) -> None:
        self.slice_seconds = slice_seconds
        self.clock = clock
        self._call_soon = call_soon
        """How to run a callback on the next loop turn (default: the running loop's)."""
        self.queue: deque[Job] = deque()
        self._deadline: float | None = None
        """When this turn's budget ends; None while no turn is open."""
        self._scheduled = False

    def submit(self, job: Job) -> None:
        """Write `job` now if the pump is idle and this turn's budget lasts, else queue it."""
        if job.cancelled:
            return
        if not self.queue:
            if self._deadline is None:
                self._deadline = self.clock() + self.slice_seconds
                self._schedule()  # closes this turn's budget on the next one
            if self._work(job, self._deadline):
                return
        self.queue.append(job)
        self._schedule()

    @property
    def pending(self) -> int:
        """Replays waiting (for /metrics and tests)."""
        return len(self.queue)

    def _work(self, job: Job, deadline: float) -> bool:
        """Step `job` until it is done (True) or the budget is spent (False)."""
        clock = self.clock
        while clock() < deadline:
            if job.cancelled or job.step(CHECK_EVERY):
                return True
        return False

    def _schedule(self) -> None:
        if self._scheduled:
            return
        self._scheduled = True
        call_soon = self._call_soon or asyncio.get_running_loop().call_soon
        call_soon(self._turn)

    def _turn(self) -> None:
        """One loop turn of the pump: a fresh budget for the queue, oldest job first."""
        self._scheduled = False
        queue = self.queue
        if not queue:
            self._deadline = None
            return
        deadline = self._deadline = self.clock() + self.slice_seconds
        while queue:
            if not self._work(queue[0], deadline):
                break
            queue.popleft()
        # More to write, or only this turn's budget to close: either way, the next turn.
        self._schedule()
