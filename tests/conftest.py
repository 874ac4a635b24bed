"""Shared fixtures: real Redis and PostgreSQL (see tests/README in the project README)."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

#: Redis used by tests: COCOV_TEST_REDIS_URL, else the embedded one (set up by the session fixture).
TEST_REDIS_URL_ENV = "COCOV_TEST_REDIS_URL"


@pytest.fixture(scope="session")
def redis_url() -> str:
    return os.environ.get(TEST_REDIS_URL_ENV, "redis://127.0.0.1:6379/15")


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    """A flushed Redis database, flushed again afterwards."""
    client = aioredis.Redis.from_url(redis_url, decode_responses=False)
    await client.flushdb()
    try:
        yield client
    finally:
        await client.flushdb()
        await client.aclose()
