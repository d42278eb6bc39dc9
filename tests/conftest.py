"""Fixtures every test directory may use: real Redis topologies (tests/redisprocs.py)."""

from tests.redisprocs import redis_cluster, redis_sentinel, redis_single

__all__ = ["redis_cluster", "redis_sentinel", "redis_single"]
