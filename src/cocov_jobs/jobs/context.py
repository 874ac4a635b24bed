"""What a running job gets: the process's services plus its own identity and helpers."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import redis.asyncio as aioredis
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from cocov_jobs.config import Settings
from cocov_jobs.queue import RetryPolicy, retry_decision
from cocov_jobs.services import Services


@dataclass
class JobContext:
    services: Services
    job_id: int
    name: str
    #: Times this job was already re-queued after a counted failure (0 on the first run).
    attempts: int
    #: Pool used for session-level advisory locks (held for the whole job).
    lock_pool: asyncpg.Pool
    log: Any
    #: The worker's retry policy (what the engine will do after a failure of this run).
    policy: RetryPolicy = field(default_factory=RetryPolicy)

    def gives_up(self, exc: BaseException) -> bool:
        """True when the engine will not run this job again after ``exc``.

        Jobs that leave a visible state behind when they give up (a commit marked ``errored``,
        coverage marked ``errored``) ask this first, so that failures that will be retried
        never show up as final ones.
        """
        return retry_decision(exc, self.attempts, self.policy) is None

    @property
    def settings(self) -> Settings:
        return self.services.settings

    @property
    def db(self) -> async_sessionmaker[AsyncSession]:
        return self.services.sessions

    @property
    def redis(self) -> aioredis.Redis:
        return self.services.redis

    @asynccontextmanager
    async def advisory_lock(self, key: str) -> AsyncIterator[bool]:
        """Try a session-level advisory lock on ``key``; yield whether we got it.

        The lock lives on its own pooled connection, so it is released when the job ends or,
        if the worker dies, when PostgreSQL drops the connection.
        """
        async with self.lock_pool.acquire() as conn:
            acquired = await conn.fetchval(
                "SELECT pg_try_advisory_lock(hashtextextended($1, 0))", key
            )
            try:
                yield bool(acquired)
            finally:
                if acquired:
                    await conn.execute("SELECT pg_advisory_unlock(hashtextextended($1, 0))", key)
