"""Fixtures every test directory may use: real Redis topologies (tests/redisprocs.py)."""

import pytest

from tests.redisprocs import redis_cluster, redis_sentinel, redis_single, stop_shared

__all__ = ["redis_cluster", "redis_sentinel", "redis_single"]


def pytest_sessionfinish(session: pytest.Session) -> None:
    stop_shared()
