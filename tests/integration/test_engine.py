"""The job engine against real PostgreSQL: enqueue in a transaction, retries, locks, dedupe."""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta

import asyncpg
import pytest
from pgqueuer.db import AsyncpgPoolDriver
from pgqueuer.ports.repository import EntrypointExecutionParameter
from sqlalchemy import text
from tests.support.helpers import drain, job_log, jobs

from cocov_jobs import jobs as product_jobs
from cocov_jobs.db.session import asyncpg_dsn
from cocov_jobs.engine import admin, queue
from cocov_jobs.engine.context import JobContext
from cocov_jobs.engine.registry import JobArgumentsError, Registry, UnknownJobError, job
from cocov_jobs.engine.retry import Deferred, PermanentError
from cocov_jobs.engine.schedules import enqueue_periodic
from cocov_jobs.engine.worker import Worker, _Queries, connect_locks
from cocov_jobs.services import Services
from cocov_jobs.testing.processes import until

CALLS: list[tuple[str, int]] = []
FAILURES: dict[str, int] = {}


@job()
async def _test_flaky(ctx: JobContext, key: str, failures: int) -> None:
    """Fails ``failures`` times, then succeeds."""
    CALLS.append((key, ctx.attempts))
    if FAILURES.get(key, 0) < failures:
        FAILURES[key] = FAILURES.get(key, 0) + 1
        raise ConnectionError(f"boom {key}")


@job()
async def _test_permanent(ctx: JobContext, key: str) -> None:
    CALLS.append((key, ctx.attempts))
    raise PermanentError(f"record {key} is gone")


@job()
async def _test_deferred(ctx: JobContext, key: str) -> None:
    CALLS.append((key, ctx.attempts))
    if sum(1 for k, _ in CALLS if k == key) == 1:
        raise Deferred("rate limited", delay=0.3)


@job(lock="res:{key}")
async def _test_locked(ctx: JobContext, key: str, hold: float) -> None:
    CALLS.append((key, ctx.attempts))
    await asyncio.sleep(hold)


@job(dedupe="{key}")
async def _test_deduped(ctx: JobContext, key: str) -> None:
    CALLS.append((key, ctx.attempts))


@pytest.fixture
def registry() -> Registry:
    """The product's jobs plus this module's test jobs (a registry of its own, no global)."""
    return product_jobs.registry().including(
        _test_flaky,
        _test_permanent,
        _test_deferred,
        _test_locked,
        _test_deduped,
        _test_overlap,
        _test_parent,
        _test_child,
    )


@pytest.fixture(autouse=True)
def _reset() -> None:
    CALLS.clear()
    FAILURES.clear()


async def test_rollback_leaves_no_job_and_commit_makes_one(services: Services) -> None:
    with pytest.raises(RuntimeError):
        async with services.sessions.begin() as session:
            await queue.enqueue(session, "_test_flaky", key="a", failures=0)
            raise RuntimeError("rollback")
    assert await jobs(services) == []
    async with services.sessions.begin() as session:
        job_id = await queue.enqueue(session, "_test_flaky", key="a", failures=0)
    rows = await jobs(services)
    assert [r["id"] for r in rows] == [job_id]
    assert rows[0]["args"] == {"key": "a", "failures": 0}


async def test_transient_error_is_retried_with_backoff(services: Services) -> None:
    async with services.sessions.begin() as session:
        job_id = await queue.enqueue(session, "_test_flaky", key="t", failures=2)
    await drain(services)
    assert CALLS == [("t", 0), ("t", 1), ("t", 2)]
    assert await jobs(services) == []
    statuses = [row["status"] for row in await job_log(services, job_id)]
    assert statuses.count("queued") == 3  # enqueue + two retries
    assert statuses[-1] == "successful"


async def test_attempts_are_capped(services: Services, settings: object) -> None:
    from tests.support.settings import make_settings

    services.settings = make_settings(max_attempts=3)
    async with services.sessions.begin() as session:
        await queue.enqueue(session, "_test_flaky", key="c", failures=10)
    await drain(services)
    assert [a for _, a in CALLS] == [0, 1, 2]
    (row,) = await jobs(services)
    assert row["status"] == "failed"


async def test_permanent_error_is_not_retried_and_keeps_its_reason(services: Services) -> None:
    async with services.sessions.begin() as session:
        job_id = await queue.enqueue(session, "_test_permanent", key="p")
    await drain(services)
    assert CALLS == [("p", 0)]
    (row,) = await jobs(services)
    assert row["status"] == "failed" and row["id"] == job_id
    last = (await job_log(services, job_id))[-1]
    assert last["status"] == "failed"
    assert "record p is gone" in str(last["traceback"])


async def test_deferred_job_runs_again_without_using_an_attempt(services: Services) -> None:
    async with services.sessions.begin() as session:
        await queue.enqueue(session, "_test_deferred", key="d")
    await drain(services)
    assert CALLS == [("d", 0), ("d", 0)]
    assert await jobs(services) == []


async def test_busy_lock_requeues_instead_of_blocking(services: Services) -> None:
    async with services.sessions.begin() as session:
        await queue.enqueue(session, "_test_locked", key="L", hold=0.5)
        await queue.enqueue(session, "_test_locked", key="L", hold=0.0)
    await drain(services, concurrency=4)
    assert len(CALLS) == 2
    assert await jobs(services) == []


async def test_a_canceled_locked_job_releases_its_lock_while_its_worker_runs_on(
    services: Services,
) -> None:
    async with services.sessions.begin() as session:
        job_id = await queue.enqueue(session, "_test_locked", key="C", hold=60.0)
    assert job_id is not None
    worker = Worker(services, concurrency=2)
    running = asyncio.create_task(worker.run())
    other = connect_locks(services.database_url)  # another worker's locks
    try:
        await until(lambda: ("C", 0) in CALLS)
        async with other.hold("res:C") as taken:
            assert not taken  # the running job holds it
        assert await admin.cancel(services, job_id)

        async def free() -> bool:
            async with other.hold("res:C") as taken:
                return taken

        await until(free)  # the canceled run releases it on its way out
        assert not running.done()
        assert await jobs(services) == []
    finally:
        await other.close()
        worker.stop()
        await asyncio.wait_for(running, 30)


async def test_dedupe_keeps_one_waiting_copy(services: Services) -> None:
    async with services.sessions.begin() as session:
        first = await queue.enqueue(session, "_test_deduped", key="k")
        second = await queue.enqueue(session, "_test_deduped", key="k")
        other = await queue.enqueue(session, "_test_deduped", key="other")
    assert first is not None and second is None and other is not None
    await drain(services)
    assert sorted(CALLS) == [("k", 0), ("other", 0)]


async def test_picking_a_job_releases_its_dedupe_key(services: Services) -> None:
    """Released at the pick, in PgQueuer's own statement: a request arriving once the job is
    taken queues exactly one more run (which sees everything this one will)."""
    async with services.sessions.begin() as session:
        first = await queue.enqueue(session, "_test_deduped", key="k")
    pool = await asyncpg.create_pool(asyncpg_dsn(services.database_url), min_size=1, max_size=1)
    try:
        picked = await _Queries(AsyncpgPoolDriver(pool)).dequeue(
            batch_size=1,
            entrypoints={"_test_deduped": EntrypointExecutionParameter(concurrency_limit=0)},
            queue_manager_id=uuid.uuid4(),
            global_concurrency_limit=None,
            heartbeat_timeout=timedelta(seconds=30),
        )
    finally:
        await pool.close()
    assert [job.id for job in picked] == [first]
    async with services.sessions.begin() as session:
        again = await queue.enqueue(session, "_test_deduped", key="k")
        coalesced = await queue.enqueue(session, "_test_deduped", key="k")
    assert again is not None and coalesced is None
    assert sorted((row["id"], row["status"]) for row in await jobs(services)) == [
        (first, "picked"),
        (again, "queued"),
    ]


def test_names_resolve_from_every_spelling() -> None:
    for spelling in (
        "update_commits_author",
        "update-commits-author",
        "UpdateCommitsAuthorJob",
    ):
        assert product_jobs.registry().resolve(spelling).name == "update_commits_author"
    with pytest.raises(UnknownJobError):
        product_jobs.registry().resolve("nope")


def test_arguments_are_validated() -> None:
    definition = product_jobs.registry().resolve("compute-repository-commits-size")
    assert definition.validate_positional(["42"]) == {"repository_id": 42}
    with pytest.raises(JobArgumentsError):
        definition.validate_positional(["x"])
    with pytest.raises(JobArgumentsError):
        definition.validate_positional([])
    with pytest.raises(JobArgumentsError):
        definition.validate_positional([str(2**63)])


@pytest.mark.parametrize("value", [True, "2", 2.0, 2**63, -(2**63) - 1])
def test_arguments_are_strictly_typed_and_fit_postgresql(value: object) -> None:
    """``true`` is not user 1, ``"2"`` is not 2, and an id PostgreSQL cannot hold is refused
    at enqueue (not in the worker)."""
    definition = product_jobs.registry().resolve("update-user-permissions")
    assert definition.validate({"user_id": 2}) == {"user_id": 2}
    with pytest.raises(JobArgumentsError):
        definition.validate({"user_id": value})


RUNNING: list[int] = []
PEAK: list[int] = []


@job()
async def _test_overlap(ctx: JobContext, key: str) -> None:
    RUNNING.append(1)
    PEAK.append(len(RUNNING))
    await asyncio.sleep(0.1)
    RUNNING.pop()


async def test_concurrency_one_runs_one_job_at_a_time(services: Services) -> None:
    async with services.sessions.begin() as session:
        for key in "abcd":
            await queue.enqueue(session, "_test_overlap", key=key)
    await drain(services, concurrency=1)
    assert len(PEAK) == 4 and max(PEAK) == 1


@job()
async def _test_parent(ctx: JobContext, user_id: int) -> None:
    async with ctx.db.begin() as session:
        await queue.enqueue(session, "_test_child", user_id=user_id)


@job()
async def _test_child(ctx: JobContext, user_id: int) -> None:
    """Enqueued by :func:`_test_parent`."""


async def test_each_job_records_what_enqueued_it(services: Services) -> None:
    """One place says who enqueued a job: a webhook, a parent job, the scheduler…"""
    async with services.sessions.begin() as session, queue.enqueued_by("webhook:d-1"):
        parent = await queue.enqueue(session, "_test_parent", user_id=1)
    await drain(services, horizon=0)
    await enqueue_periodic(services, "prune_history")
    async with services.engine.connect() as conn:
        origins = (
            await conn.execute(
                text(
                    "SELECT l.entrypoint, o.enqueued_by FROM cocov_jobs_job_origins o"
                    " JOIN pgqueuer_log l ON l.job_id = o.job_id AND l.status = 'queued'"
                )
            )
        ).all()
    assert dict(origins) == {
        "_test_parent": "webhook:d-1",
        "_test_child": f"job:{parent}",
        "prune_history": "schedule",
    }


async def test_a_starting_worker_forgets_workers_dead_for_over_an_hour(services: Services) -> None:
    """A killed worker leaves its row (nothing ran its shutdown); the dashboard shows it dead for
    an hour, then the next worker to start removes it, so restarts never pile rows up."""
    async with services.sessions.begin() as session:
        for worker, silent in (("dead-long", 120), ("dead-recently", 10)):
            await session.execute(
                text(
                    "INSERT INTO cocov_jobs_workers (id, host, pid, concurrency, rss_bytes,"
                    " heartbeat_at)"
                    " VALUES (:id, 'h', 1, 1, 0, now() - make_interval(mins => :silent))"
                ),
                {"id": worker, "silent": silent},
            )
    await drain(services)
    async with services.engine.connect() as conn:
        left = set((await conn.execute(text("SELECT id FROM cocov_jobs_workers"))).scalars())
    assert left == {"dead-recently"}
