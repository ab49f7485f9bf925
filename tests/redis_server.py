"""The real redis-server for tests: the package's launcher and a skip marker without it."""

from __future__ import annotations

import pytest

from monitor.harness.redis_server import RedisServer, redis_server_binary

__all__ = ["RedisServer", "requires_redis"]

requires_redis = pytest.mark.skipif(
    redis_server_binary() is None, reason="redis-server is not installed (scripts/setup.sh installs it)"
)
