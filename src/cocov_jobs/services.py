"""Long-lived resources of one process (database engine, Redis clients), opened once.

Jobs, the web app and the CLI reach PostgreSQL and Redis only through a :class:`Services`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import redis.asyncio as aioredis
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from cocov_jobs.config import Settings
from cocov_jobs.db.session import create_engine, session_factory


@dataclass
class Services:
    settings: Settings
    database_url: str
    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]
    #: Primary Redis (Cocov's db0): Worker queue, Cache housekeeping, tokens, deferred coverage.
    redis: aioredis.Redis
    #: Cache Redis (Cocov's db1): organization repositories listing.
    cache_redis: aioredis.Redis

    async def aclose(self) -> None:
        await self.redis.aclose()
        if self.cache_redis is not self.redis:
            await self.cache_redis.aclose()
        await self.engine.dispose()


@asynccontextmanager
async def open_services(
    settings: Settings,
    *,
    database_url: str,
    redis_url: str,
    redis_cache_url: str,
    pool_size: int = 10,
) -> AsyncIterator[Services]:
    engine = create_engine(database_url, pool_size=pool_size)
    primary = aioredis.Redis.from_url(redis_url)
    cache = aioredis.Redis.from_url(redis_cache_url) if redis_cache_url != redis_url else primary
    services = Services(
        settings=settings,
        database_url=database_url,
        engine=engine,
        sessions=session_factory(engine),
        redis=primary,
        cache_redis=cache,
    )
    try:
        yield services
    finally:
        await services.aclose()
