"""A worker whose PostgreSQL connections are cut, or whose queue loop fails (a restart of the
server), keeps running jobs without a restart of its own (issue 7, scenario 2;
``bench/faults/pg_restart.py``)."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import asyncpg
import pytest
from pgqueuer.db import AsyncpgPoolDriver
from pgqueuer.models import Job, TracebackRecord
from pgqueuer.qm import QueueManager
from sqlalchemy import text
from tests.support.helpers import job_log

from cocov_jobs.db.session import asyncpg_dsn
from cocov_jobs.engine import history, queue
from cocov_jobs.engine.worker import Worker, _Queries
from cocov_jobs.services import Services
from cocov_jobs.testing.processes import until

#: Times the connections are cut (each failed loop must not leave the next one starved).
CUTS = 3


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
        for user_id in range(1, CUTS + 1):
            assert await cut_worker_connections(services) > 0
            async with services.sessions.begin() as session:
                job_id = await queue.enqueue(session, "update_commits_author", user_id=user_id)
            assert job_id is not None

            async def succeeded(job_id: int = job_id) -> bool:
                log = await job_log(services, job_id)
                return any(row["status"] == "successful" for row in log)

            await until(succeeded)
        assert not running.done()
    finally:
        worker.stop()
        await running


async def test_worker_starts_a_new_queue_loop_when_one_fails(
    services: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    """PgQueuer's loop raises when PostgreSQL goes away under load (a dequeue on a dead
    connection), leaving the jobs it held marked picked; the worker must not idle on with jobs
    queued, as it did, nor count those jobs against the capacity of its new loop."""
    run = QueueManager.run
    failures: list[QueueManager] = []
    async with services.sessions.begin() as session:
        held = [
            await queue.enqueue(session, "update_commits_author", user_id=user_id)
            for user_id in (100, 101)  # as many as the worker's slots
        ]

    async def fail_once(self: QueueManager, *args: Any, **kwargs: Any) -> None:
        if not failures:
            failures.append(self)
            async with services.engine.begin() as conn:
                await conn.execute(
                    text(
                        "UPDATE pgqueuer SET status = 'picked', queue_manager_id = :qm,"
                        " heartbeat = now() WHERE id = ANY(:ids)"
                    ),
                    {"qm": self.queue_manager_id, "ids": held},
                )
            raise asyncpg.ConnectionDoesNotExistError("connection was closed in the middle")
        await run(self, *args, **kwargs)

    monkeypatch.setattr(QueueManager, "run", fail_once)
    worker = Worker(services, concurrency=2)
    running = asyncio.create_task(worker.run())
    try:
        async with services.sessions.begin() as session:
            job_id = await queue.enqueue(session, "update_commits_author", user_id=1)
        assert job_id is not None

        async def succeeded() -> bool:
            return any(row["status"] == "successful" for row in await job_log(services, job_id))

        await until(succeeded)
        assert failures and not running.done()
    finally:
        worker.stop()
        await running


async def test_a_retry_that_cannot_be_recorded_leaves_the_job_to_be_picked_again(
    services: Services,
) -> None:
    """A job attempt that ends while PostgreSQL restarts: PgQueuer marks the job failed (held)
    when re-queueing it raises; it must stay picked instead, so its stale heartbeat gets it
    picked again, as for a killed worker."""
    async with services.sessions.begin() as session:
        job_id = await queue.enqueue(session, "update_commits_author", user_id=1)
    assert job_id is not None
    conn = await asyncpg.connect(asyncpg_dsn(services.database_url))
    try:
        row = await conn.fetchrow("SELECT * FROM pgqueuer WHERE id = $1", job_id)
    finally:
        await conn.close()
    job = Job.model_validate(dict(row))
    gone = await asyncpg.create_pool(asyncpg_dsn(services.database_url), min_size=0)
    await gone.close()  # every statement now fails, as while the server restarts
    record = TracebackRecord.from_exception(
        exc=RuntimeError("later"), job_id=job.id, additional_context={}
    )
    deferred = history.Run(job, "test:1")
    deferred.finish("deferred", "rate limited")
    for runs in ({job.id: deferred}, {}):  # a re-queue not counted, then a counted one
        queries = _Queries(AsyncpgPoolDriver(gone), runs=runs)
        await queries.retry_job(job, timedelta(seconds=1), record)
        assert runs == {}  # the run is forgotten either way
