"""Fixtures of the bench's end-to-end tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.bench.pyserverproc import start_pyserver


@pytest.fixture(scope="module")
def server() -> Iterator[tuple[int, int]]:
    """(port, pid) of a pyserver shared by a module's tests."""
    with start_pyserver() as running:
        yield running
