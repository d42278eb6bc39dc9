"""Running the coroutines of app handlers: at once when the Adapter never suspends, else as
a Task whose failure is logged (never lost, never raised into the event loop).

Invariant: with a synchronous Adapter (the `local` driver) no Task is ever created, so the
hot path stays free of scheduling; a coroutine that suspends there is a bug and is reported.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Coroutine
from typing import Any

log = logging.getLogger("pyserver.tasks")

Work = Coroutine[Any, Any, None]


def run(
    work: Work,
    synchronous: bool,
    on_error: Callable[[BaseException], None] | None = None,
    on_done: Callable[[], None] | None = None,
) -> bool:
    """Run `work`; True when it already finished, False when it goes on as a Task.

    `on_error` gets any exception (default: log it); `on_done` runs after a Task finishes.
    """
    if synchronous:
        try:
            work.send(None)
        except StopIteration:
            return True
        except Exception as exc:
            (on_error or _log)(exc)
            return True
        work.close()
        _log(RuntimeError("a synchronous adapter's coroutine suspended"))
        return True
    task = asyncio.get_running_loop().create_task(work)

    def finished(done: asyncio.Task[None]) -> None:
        if not done.cancelled() and done.exception() is not None:
            (on_error or _log)(done.exception())  # type: ignore[arg-type]
        if on_done is not None:
            on_done()

    task.add_done_callback(finished)
    _tasks.add(task)
    task.add_done_callback(_tasks.discard)
    return False


_tasks: set[asyncio.Task[None]] = set()
"""Strong references, so running tasks are not garbage-collected."""


def _log(exc: BaseException) -> None:
    log.error("background work failed", exc_info=exc)


RECANCEL_AFTER = 1.0
"""Seconds `stop` waits for a cancelled Task before it cancels it again."""


async def stop(task: asyncio.Task[None] | None) -> None:
    """Cancel a long-running Task (a loop that only ends when told) and wait until it has.

    The cancellation is repeated while the Task goes on: code inside it may swallow one
    (a library that turns it into a normal return or an error the loop retries on), and
    then the loop would outlive its stop and hang the shutdown."""
    if task is None:
        return
    while not task.done():
        task.cancel()
        await asyncio.wait({task}, timeout=RECANCEL_AFTER)
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def settle(timeout: float) -> None:
    """Wait (at most `timeout` seconds) for the background Tasks started here, including
    the ones they start meanwhile: at shutdown, leaves must reach the webhooks."""
    deadline = asyncio.get_running_loop().time() + timeout
    while _tasks:
        left = deadline - asyncio.get_running_loop().time()
        if left <= 0:
            return
        await asyncio.wait(set(_tasks), timeout=left)
