"""Fault tests (``make chaos``, not ``make test``): the integration fixtures, and a Redis
of the test's own for the tests that kill or partition it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.chaos.support import PrivateRedis
from tests.integration.conftest import (  # noqa: F401
    base_settings,
    cluster_settings,
    platform,
    redis_cluster,
)


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[PrivateRedis]:
    """A redis-server on a free port, data under the test's tmp_path; stopped after."""
    redis = PrivateRedis(tmp_path / "redis")
    redis.start()
    yield redis
    redis.stop()
