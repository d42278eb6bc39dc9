"""Fixtures of the history tests: a clock the tests move, a real redis-server, and a factory
that builds either store on them."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from pyserver.history.memory import MemoryHistoryStore
from pyserver.history.redis import RedisHistoryStore
from tests.redisproc import RedisProcess


class Clock:
    """Seconds since the Unix epoch, moved by hand (no test sleeps for a ttl)."""

    def __init__(self, now: float = 1_760_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisProcess]:
    server = RedisProcess()
    yield server
    server.stop()


@pytest.fixture
def clock() -> Clock:
    return Clock()


StoreFactory = Callable[..., Any]


@pytest.fixture(params=["memory", "redis"])
def new_store(request: pytest.FixtureRequest, clock: Clock) -> StoreFactory:
    """Builds the store under test inside the running event loop (Redis connections belong
    to one loop); each test gets its own Redis key prefix."""
    kind = str(request.param)
    prefix = f"t{uuid.uuid4().hex[:8]}"

    def build(**kw: Any) -> Any:
        if kind == "memory":
            return MemoryHistoryStore(kw.get("max_bytes", 64 * 1_048_576), clock=clock)
        server = request.getfixturevalue("redis_server")
        return RedisHistoryStore.from_url(server.url, prefix=prefix, clock=clock)

    build.kind = kind  # type: ignore[attr-defined]
    return build
