"""The cluster tests share the integration fixtures."""

from tests.integration.conftest import uid  # noqa: F401 - re-exported fixture
