"""Limiter fixtures: every store rule is tested on both stores, Redis for real."""

from __future__ import annotations

import logging
import uuid
from collections.abc import AsyncIterator, Iterator

import pytest
import pytest_asyncio
import redis.asyncio as aioredis

from gateway_service.limits import LimitStore, MemoryStore, RedisStore
from tests.support.logcheck import assert_logs_clean


@pytest_asyncio.fixture(params=["memory", "redis"])
async def store(request: pytest.FixtureRequest) -> AsyncIterator[LimitStore]:
    """A fresh store. The Redis one uses its own key prefix on the machine's Redis and deletes
    its keys afterwards (never FLUSHDB: other tests share the server)."""
    if request.param == "memory":
        yield MemoryStore()
        return
    url = request.getfixturevalue("redis_url")
    prefix = f"test:{uuid.uuid4().hex[:12]}:"
    redis_store = RedisStore.from_url(url, prefix=prefix)
    try:
        yield redis_store
    finally:
        await redis_store.aclose()
        client = aioredis.Redis.from_url(url)
        async for key in client.scan_iter(match=f"{prefix}*"):
            await client.delete(key)
        await client.aclose()


@pytest.fixture(autouse=True)
def _no_secrets_in_logs(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    caplog.set_level(logging.DEBUG)
    yield
    assert_logs_clean(caplog)
