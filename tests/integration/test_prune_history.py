"""``prune_history`` bounds the deliveries, Sidekiq keys, job log and job history tables, keeping
what is still useful."""

from __future__ import annotations

from sqlalchemy import text
from tests.support.helpers import drain

from cocov_jobs.engine import queue
from cocov_jobs.services import Services


async def count(services: Services, sql: str) -> int:
    async with services.engine.connect() as conn:
        return int(await conn.scalar(text(sql)) or 0)


async def test_old_deliveries_and_finished_job_logs_are_deleted(services: Services) -> None:
    async with services.sessions.begin() as session:
        await session.execute(
            text(
                "INSERT INTO cocov_jobs_webhook_deliveries (delivery_id, event, received_at)"
                " VALUES ('old', 'push', now() - interval '30 days'), ('new', 'push', now())"
            )
        )
        await session.execute(
            text(
                "INSERT INTO cocov_jobs_sidekiq_taken (key, ruby_class, taken_at)"
                " VALUES ('old', 'ProcessCommitJob', now() - interval '30 days'),"
                " ('new', 'ProcessCommitJob', now())"
            )
        )
        await session.execute(
            text(
                "INSERT INTO pgqueuer (priority, entrypoint, payload, status)"
                " VALUES (0, 'update_commits_author', '{}', 'failed')"
            )
        )
        await session.execute(
            text(
                "INSERT INTO pgqueuer_log"
                " (job_id, status, entrypoint, priority, aggregated, created)"
                " SELECT id, 'exception'::pgqueuer_status, entrypoint, 0, true,"
                "        now() - interval '30 days' FROM pgqueuer"
                " UNION ALL SELECT 999999, 'successful', 'x', 0, true, now() - interval '30 days'"
                " UNION ALL SELECT 999998, 'successful', 'x', 0, false, now() - interval '30 days'"
                " UNION ALL SELECT 999997, 'successful', 'x', 0, true, now()"
            )
        )
        await session.execute(
            text(
                "INSERT INTO cocov_jobs_runs (job_id, job, arguments, attempt, enqueued_at,"
                " due_at, started_at, finished_at, outcome)"
                " SELECT 1, 'x', '{}', 1, t, t, t, t, 'succeeded'"
                " FROM (VALUES (now() - interval '30 days'), (now() - interval '13 days'),"
                " (now() - interval '3 hours')) AS v(t)"
            )
        )
        await session.execute(
            text(
                "INSERT INTO cocov_jobs_run_hours (hour, job, runs, failures, duration_max,"
                " wait_max, duration_buckets, duration_counts, wait_buckets, wait_counts)"
                " SELECT date_trunc('hour', t), 'x', 1, 0, 0, 0, '{0}', '{1}', '{0}', '{1}'"
                " FROM (VALUES (now() - interval '30 days'), (now() - interval '13 days')) AS v(t)"
            )
        )
        await queue.enqueue(session, "prune_history")
    await drain(services)
    runs = await count(
        services,
        "SELECT count(*) FROM cocov_jobs_runs WHERE finished_at < now() - interval '1 day'",
    )
    assert runs == 1  # the 13-day-old run: within COCOV_HISTORY_RETENTION_DAYS (14)
    # Roll-ups go with the runs; the recent complete hours are rolled up (metrics stay fast
    # without a dashboard request to roll them).
    hours = "SELECT count(*) FROM cocov_jobs_run_hours"
    assert await count(services, hours + " WHERE hour < now() - interval '14 days'") == 0
    assert await count(services, hours + " WHERE hour < now() - interval '1 day'") == 1
    assert await count(services, hours + " WHERE hour > now() - interval '4 hours'") == 1
    deliveries = await count(services, "SELECT count(*) FROM cocov_jobs_webhook_deliveries")
    assert deliveries == 1
    taken = "SELECT count(*) FROM cocov_jobs_sidekiq_taken"
    assert (await count(services, taken), await count(services, taken + " WHERE key = 'new'")) == (
        1,
        1,
    )
    kept = await count(
        services, "SELECT count(*) FROM pgqueuer_log WHERE job_id IN (999997, 999998, 999999)"
    )
    assert kept == 2  # the recent one and the not yet aggregated one
    held = await count(
        services,
        "SELECT count(*) FROM pgqueuer_log l JOIN pgqueuer q ON q.id = l.job_id"
        " WHERE q.status = 'failed'",
    )
    assert held >= 1  # a failed job keeps its history
