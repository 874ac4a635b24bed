"""Shared fixtures: real PostgreSQL and Redis.

``COCOV_TEST_DATABASE_URL`` / ``COCOV_TEST_REDIS_URL`` select servers (CI points them at the
machine's services); when unset, embedded ones are started under ``$TMPDIR`` for the session.
Each test gets its own database, cloned from a migrated template, and a flushed Redis db.
Shared helpers live in :mod:`tests.support` (fixtures used across tiers are registered below)
and, for what the benchmarks also use, in :mod:`cocov_jobs.testing`.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator, Iterator

import asyncpg
import pytest
import redis.asyncio as aioredis

from cocov_jobs import jobs
from cocov_jobs.config import Settings
from cocov_jobs.db.migrate import upgrade
from cocov_jobs.db.session import asyncpg_dsn, create_engine
from cocov_jobs.engine.registry import Registry
from cocov_jobs.services import Services, open_services
from cocov_jobs.testing.databases import test_servers, with_database
from tests.support.logs import JsonLogs
from tests.support.settings import make_settings

pytest_plugins = ["tests.support.s3"]


@pytest.fixture(scope="session")
def _stores() -> Iterator[dict[str, str]]:
    with test_servers() as (db_url, redis_url):
        yield {"database": db_url, "redis": redis_url}


@pytest.fixture(scope="session")
def template_database(_stores: dict[str, str]) -> Iterator[str]:
    """A database migrated once per session, cloned for every test."""
    name = f"cocov_test_tpl_{uuid.uuid4().hex[:8]}"
    admin = _stores["database"]

    async def create() -> None:
        conn = await asyncpg.connect(asyncpg_dsn(admin))
        try:
            await conn.execute(f'CREATE DATABASE "{name}"')
        finally:
            await conn.close()
        url = with_database(admin, name)
        engine = create_engine(url)
        try:
            await upgrade(engine, url)
        finally:
            await engine.dispose()

    asyncio.run(create())
    yield name
    asyncio.run(_drop(admin, name))


async def _drop(admin: str, name: str) -> None:
    conn = await asyncpg.connect(asyncpg_dsn(admin))
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


@pytest.fixture
async def database_url(_stores: dict[str, str], template_database: str) -> AsyncIterator[str]:
    """URL of a fresh database with the whole schema, dropped after the test."""
    admin = _stores["database"]
    name = f"cocov_test_{uuid.uuid4().hex[:12]}"
    conn = await asyncpg.connect(asyncpg_dsn(admin))
    try:
        await conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template_database}"')
    finally:
        await conn.close()
    yield with_database(admin, name)
    await _drop(admin, name)


@pytest.fixture(scope="session")
def redis_url(_stores: dict[str, str]) -> str:
    return _stores["redis"]


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


@pytest.fixture
def settings() -> Settings:
    return make_settings()


@pytest.fixture
def registry() -> Registry:
    """The jobs the ``services`` fixture runs (a test module may add its own)."""
    return jobs.registry()


@pytest.fixture
async def services(
    settings: Settings,
    registry: Registry,
    database_url: str,
    redis_url: str,
    redis: aioredis.Redis,
) -> AsyncIterator[Services]:
    async with open_services(
        settings,
        registry=registry,
        database_url=database_url,
        redis_url=redis_url,
        redis_cache_url=redis_url,
    ) as opened:
        yield opened


@pytest.fixture
def restore_logging() -> Iterator[None]:
    """Put the root logger's handlers and level back after a test that configures logging."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.fixture
def json_logs(capsys: pytest.CaptureFixture[str], restore_logging: None) -> JsonLogs:
    return JsonLogs(capsys)
