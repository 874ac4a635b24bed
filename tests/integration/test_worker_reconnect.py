"""A worker whose PostgreSQL connections are cut (a restart of the server) keeps running jobs
without a restart of its own (issue 7, scenario 2; ``bench/faults/pg_restart.py``)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from sqlalchemy import text
from tests.helpers import job_log

from cocov_jobs import queue
from cocov_jobs.services import Services
from cocov_jobs.worker import Worker

#: Upper bound for the worker to reach a state.
WAIT = 60.0


async def until(condition: Callable[[], Awaitable[bool]]) -> None:
    async with asyncio.timeout(WAIT):
        while not await condition():  # noqa: ASYNC110 - state in the database
            await asyncio.sleep(0.05)


async def scalar(services: Services, sql: str) -> int:
    async with services.engine.connect() as conn:
        return int(await conn.scalar(text(sql)) or 0)


async def cut_worker_connections(services: Services) -> int:
    """Terminate every backend of the worker's own pool, as a server restart does."""
    return await scalar(
        services,
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
        " WHERE datname = current_database() AND application_name = 'cocov-jobs-worker'",
    )


async def test_worker_runs_jobs_after_its_connections_are_cut(services: Services) -> None:
    worker = Worker(services, concurrency=2)
    running = asyncio.create_task(worker.run())
    try:

        async def listening() -> bool:
            return bool(
                await scalar(
                    services,
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                    " AND application_name = 'cocov-jobs-worker' AND query ILIKE 'LISTEN%'",
                )
            )

        await until(listening)  # the queue manager reached its dequeue loop
        assert await cut_worker_connections(services) > 0
        async with services.sessions.begin() as session:
            job_id = await queue.enqueue(session, "update_commits_author", user_id=1)
        assert job_id is not None

        async def succeeded() -> bool:
            return any(row["status"] == "successful" for row in await job_log(services, job_id))

        await until(succeeded)
        assert not running.done()
    finally:
        worker.stop()
        await running
