"""The outage state machine (`pyserver.cluster.recovery.Recovery`) with a stand-in rebuild: a
failover (`moved`) is handled as an outage and rebuilt at once, a nudge cuts a backoff short,
and a loss during a rebuild makes it run again."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from pyserver.cluster.recovery import Recovery


class Engine:
    """A rebuild that fails while `down`, and counts its runs."""

    def __init__(self) -> None:
        self.down = False
        self.runs = 0
        self.recovery = Recovery(
            self.rejoin,
            lambda exc: isinstance(exc, ConnectionError),
            (ConnectionError,),
            "test",
            "Engine",
            "here",
            limit=4,
        )

    async def rejoin(self) -> None:
        self.runs += 1
        if self.down:
            raise ConnectionError("still down")
        with self.recovery.rebuilding():
            await asyncio.sleep(0)


async def _until(check: Callable[[], bool], seconds: float) -> float:
    loop = asyncio.get_running_loop()
    started = loop.time()
    while not check():
        assert loop.time() - started < seconds, "timed out"
        await asyncio.sleep(0.01)
    return loop.time() - started


def test_a_failover_is_rebuilt_at_once_like_an_outage() -> None:
    async def scenario() -> None:
        engine = Engine()
        engine.recovery.healthy = True
        engine.recovery.moved("the master moved")
        assert not engine.recovery.healthy  # answers locally until rebuilt on the new one
        took = await _until(lambda: engine.recovery.healthy, 2)
        assert engine.runs == 1
        assert took < 0.2, "moved() starts the rebuild without the first backoff"
        await engine.recovery.close()

    asyncio.run(scenario())


def test_a_nudge_cuts_the_backoff_short() -> None:
    async def scenario() -> None:
        engine = Engine()
        engine.recovery.healthy = True
        engine.down = True
        engine.recovery.lost(ConnectionError("gone"))
        await _until(lambda: engine.runs >= 3, 5)  # 0.25 s, 0.5 s, 1 s: now waiting 2 s
        engine.down = False
        await asyncio.sleep(0.05)
        engine.recovery.nudge()  # the bus is subscribed again
        took = await _until(lambda: engine.recovery.healthy, 3)
        assert took < 0.3, f"the nudge did not cut the 2 s backoff ({took:.2f} s)"
        await engine.recovery.close()

    asyncio.run(scenario())


def test_a_nudge_while_healthy_does_nothing() -> None:
    async def scenario() -> None:
        engine = Engine()
        engine.recovery.healthy = True
        engine.recovery.nudge()
        await asyncio.sleep(0.3)
        assert engine.runs == 0 and engine.recovery.healthy

    asyncio.run(scenario())
