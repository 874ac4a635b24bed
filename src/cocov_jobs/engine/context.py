"""One job run: what the job gets (:class:`JobContext`) and how its outcome is decided.

:func:`execute` runs one attempt: it validates the arguments; a job declared with
``lock="…"`` takes a session-level PostgreSQL advisory lock on that key, and when another run
holds it the job is deferred (:func:`~cocov_jobs.engine.retry.lock_busy`) instead of blocking a
worker slot. A failure is turned into a :class:`~cocov_jobs.engine.retry.Retry` decision by
the retry policy (:func:`~cocov_jobs.engine.retry.decide`) and raised as :class:`RetryJob`
for the worker; an exception that gives up propagates and the job is held as failed. (A job's
dedupe key was already released by the statement that picked it: ``worker._QueueBuilder``.)
"""

from __future__ import annotations

from collections.abc import Mapping
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import asyncpg
import redis.asyncio as aioredis
from pgqueuer.errors import RetryRequested
from sqlalchemy import CursorResult, Executable
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from cocov_jobs.config import Settings
from cocov_jobs.engine.locks import Locks
from cocov_jobs.engine.queue import enqueued_by
from cocov_jobs.engine.registry import JobDefinition
from cocov_jobs.engine.retry import Retry, RetryPolicy, decide, lock_busy
from cocov_jobs.services import Services


async def keep_connection_state(conn: asyncpg.Connection) -> None:
    """Pool reset of the worker's connections: nothing beyond asyncpg's own rollback.

    asyncpg's default reset sends ``pg_advisory_unlock_all(); CLOSE ALL; UNLISTEN *; RESET
    ALL`` on every release: one more round trip for each of PgQueuer's statements. Nothing
    the worker runs leaves such state behind (advisory locks are held on a connection of their
    own: :mod:`~cocov_jobs.engine.locks`).
    """


@dataclass
class JobContext:
    services: Services
    job_id: int
    name: str
    #: Times this job was already re-queued after a counted failure (0 on the first run).
    attempts: int
    #: This worker's advisory locks.
    locks: Locks
    log: Any

    @property
    def policy(self) -> RetryPolicy:
        """The retry policy the engine applies to this run."""
        return RetryPolicy.from_settings(self.settings)

    def gives_up(self, exc: BaseException) -> bool:
        """True when the engine will not run this job again after ``exc``.

        Jobs that leave a visible state behind when they give up (a commit marked ``errored``,
        coverage marked ``errored``) ask this first, so that failures that will be retried
        never show up as final ones.
        """
        return decide(exc, self.attempts, self.policy) is None

    @property
    def settings(self) -> Settings:
        return self.services.settings

    @property
    def db(self) -> async_sessionmaker[AsyncSession]:
        return self.services.sessions

    async def execute_one(
        self, statement: Executable, params: Mapping[str, object] | None = None
    ) -> CursorResult[Any]:
        """Run ``statement`` alone, in autocommit: one round trip, no BEGIN/COMMIT.

        For a job whose whole database work is one statement (a statement is atomic).
        """
        async with self.services.engine.connect() as conn:
            conn = await conn.execution_options(isolation_level="AUTOCOMMIT")
            return await conn.execute(statement, params)

    @property
    def redis(self) -> aioredis.Redis:
        return self.services.redis

    def advisory_lock(self, key: str) -> AbstractAsyncContextManager[bool]:
        """Try a session-level advisory lock on ``key``; yield whether we got it. It is released
        when the block ends or, if the worker dies, when PostgreSQL drops its connection."""
        return self.locks.hold(key)


class RetryJob(RetryRequested):
    """PgQueuer's re-queue request, carrying the policy's :class:`Retry` decision."""

    def __init__(self, decision: Retry) -> None:
        super().__init__(delay=timedelta(seconds=decision.delay), reason=decision.reason)
        self.decision = decision


async def execute(definition: JobDefinition, ctx: JobContext, args: Mapping[str, object]) -> None:
    """Run one job attempt and translate its outcome for PgQueuer (see the module docstring).

    Jobs it enqueues are recorded as enqueued by ``job:<id>``.
    """
    try:
        values = definition.validate(args)
        lock_key = definition.lock_key(values)
        with enqueued_by(f"job:{ctx.job_id}"):
            if lock_key is None:
                await definition.func(ctx, **values)
                return
            async with ctx.advisory_lock(lock_key) as acquired:
                if not acquired:
                    raise lock_busy(f"lock {lock_key} is held by another job")
                await definition.func(ctx, **values)
    except Exception as exc:
        decision = decide(exc, ctx.attempts, ctx.policy)
        if decision is None:
            raise
        raise RetryJob(decision) from exc
