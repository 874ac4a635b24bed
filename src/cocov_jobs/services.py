"""Long-lived resources of one process (database engine, Redis clients), opened once.

Jobs, the web app and the CLI reach PostgreSQL and Redis only through a :class:`Services`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import redis.asyncio as aioredis
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from cocov_jobs.config import Settings
from cocov_jobs.db.session import DEFAULT_MAX_OVERFLOW, create_engine, session_factory
from cocov_jobs.engine.queue import REGISTRY_KEY
from cocov_jobs.engine.registry import Registry
from cocov_jobs.github.auth import InstallationTokenProvider
from cocov_jobs.github.client import GitHubClient, installation_client, user_client
from cocov_jobs.gitstore.storage import CommitStorage, storage_from_settings


@dataclass
class Services:
    settings: Settings
    #: The jobs this program runs; its sessions carry it too (enqueue by name).
    registry: Registry
    database_url: str
    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]
    #: Primary Redis (Cocov's db0): Worker queue, Cache housekeeping, tokens, deferred coverage.
    redis: aioredis.Redis
    #: Cache Redis (Cocov's db1): organization repositories listing.
    cache_redis: aioredis.Redis
    #: Sidekiq's Redis (Cocov's db2), where Cocov's API enqueues its jobs; None: no intake.
    sidekiq_redis: aioredis.Redis | None = None
    #: URL of the primary Redis (what error messages name, password masked).
    redis_url: str = ""
    _github: GitHubClient | None = field(default=None, repr=False)
    _storage: CommitStorage | None = field(default=None, repr=False)
    _installation_tokens: InstallationTokenProvider | None = field(default=None, repr=False)

    @property
    def installation_tokens(self) -> InstallationTokenProvider:
        """The process's one installation token provider (git fetches and the client share it)."""
        if self._installation_tokens is None:
            self._installation_tokens = InstallationTokenProvider.from_settings(
                self.settings, self.redis
            )
        return self._installation_tokens

    def github(self) -> GitHubClient:
        """The process's installation client (one token provider, so one refresh at a time)."""
        if self._github is None:
            provider = self.installation_tokens
            self._github = installation_client(self.settings, self.redis, provider=provider)
        return self._github

    def user_github(self, token: str) -> GitHubClient:
        """A client acting as a user (close it after use)."""
        return user_client(self.settings, token)

    @property
    def storage(self) -> CommitStorage:
        """Where cloned commits are kept (``COCOV_GIT_SERVICE_STORAGE_MODE``)."""
        if self._storage is None:
            self._storage = storage_from_settings(self.settings)
        return self._storage

    @asynccontextmanager
    async def raw_connection(self) -> AsyncIterator[Any]:
        """The asyncpg connection under one pooled engine connection, in autocommit: for the
        read queries and single-statement actions of the admin pages (no ORM, no transaction)."""
        async with self.engine.connect() as conn:
            raw = await conn.get_raw_connection()
            yield raw.driver_connection

    async def aclose(self) -> None:
        if self._github is not None:
            await self._github.aclose()
        await self.redis.aclose()
        if self.cache_redis is not self.redis:
            await self.cache_redis.aclose()
        if self.sidekiq_redis is not None:
            await self.sidekiq_redis.aclose()
        await self.engine.dispose()


@asynccontextmanager
async def open_services(
    settings: Settings,
    *,
    registry: Registry,
    database_url: str,
    redis_url: str,
    redis_cache_url: str,
    pool_size: int = 10,
    max_overflow: int = DEFAULT_MAX_OVERFLOW,
) -> AsyncIterator[Services]:
    engine = create_engine(database_url, pool_size=pool_size, max_overflow=max_overflow)
    primary = aioredis.Redis.from_url(redis_url)
    cache = aioredis.Redis.from_url(redis_cache_url) if redis_cache_url != redis_url else primary
    services = Services(
        settings=settings,
        registry=registry,
        database_url=database_url,
        engine=engine,
        sessions=session_factory(engine, {REGISTRY_KEY: registry}),
        redis=primary,
        cache_redis=cache,
        sidekiq_redis=(
            aioredis.Redis.from_url(settings.sidekiq_redis_url)
            if settings.sidekiq_redis_url
            else None
        ),
        redis_url=redis_url,
    )
    try:
        yield services
    finally:
        await services.aclose()
