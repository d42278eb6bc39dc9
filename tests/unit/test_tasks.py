"""`tasks.stop`: a long-running loop ends even when something inside it swallows the
cancellation (as a library may, turning it into a normal return)."""

from __future__ import annotations

import asyncio
import contextlib

import pytest

from pyserver import tasks


def test_stop_ends_a_loop_that_swallows_the_first_cancellation(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(tasks, "RECANCEL_AFTER", 0.05, raising=False)
    rounds = []

    async def loop_that_swallows_once() -> None:
        swallowed = False
        while True:
            rounds.append(1)
            try:
                await asyncio.sleep(0.01)
            except asyncio.CancelledError:
                if swallowed:
                    raise
                swallowed = True  # a library call that returns normally instead

    async def scenario() -> tuple[bool, float]:
        loop = asyncio.get_running_loop()
        task = loop.create_task(loop_that_swallows_once())
        await asyncio.sleep(0.03)
        started = loop.time()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(tasks.stop(task), 3)
        return task.cancelled(), loop.time() - started

    cancelled, took = asyncio.run(scenario())
    assert cancelled and took < 1.0, f"stopped in {took:.2f} s"


def test_stop_passes_on_what_the_task_failed_with() -> None:
    async def fails() -> None:
        raise ValueError("boom")

    async def scenario() -> None:
        task = asyncio.get_running_loop().create_task(fails())
        await asyncio.sleep(0)
        await tasks.stop(task)

    try:
        asyncio.run(scenario())
    except ValueError as exc:
        assert str(exc) == "boom"
    else:
        raise AssertionError("the task's error was lost")
