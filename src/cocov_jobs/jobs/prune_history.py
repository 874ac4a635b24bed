"""``prune_history()`` — keep our bookkeeping tables bounded (periodic, daily by default)."""

from __future__ import annotations

from sqlalchemy import text

from cocov_jobs.engine import history
from cocov_jobs.engine.context import JobContext
from cocov_jobs.engine.registry import job

# Webhook deliveries only need to outlive GitHub's redelivery window (a few days).
_DELIVERIES = text(
    "DELETE FROM cocov_jobs_webhook_deliveries"
    " WHERE received_at < now() - make_interval(days => :d)"
)
# Keys of Sidekiq payloads taken in: a payload is replayed within seconds of being taken (a
# killed intake process), never weeks later.
_SIDEKIQ_TAKEN = text(
    "DELETE FROM cocov_jobs_sidekiq_taken WHERE taken_at < now() - make_interval(days => :d)"
)
# Finished jobs' log rows, once folded into pgqueuer_statistics; rows of jobs still in the
# queue (waiting, running or held as failed) are kept for their history.
_JOB_LOG = text(
    """
    DELETE FROM pgqueuer_log l
    WHERE l.aggregated AND l.created < now() - make_interval(days => :d)
      AND NOT EXISTS (SELECT 1 FROM pgqueuer q WHERE q.id = l.job_id)
    """
)

# The job history (one row per run), bounded by the same retention; runs go first, so the origins
# below see which jobs still have one.
_RUNS = text("DELETE FROM cocov_jobs_runs WHERE finished_at < now() - make_interval(days => :d)")
# The runs' hourly roll-ups (the metrics), with the runs.
_RUN_HOURS = text("DELETE FROM cocov_jobs_run_hours WHERE hour < now() - make_interval(days => :d)")
# What enqueued each job, once the job's history (log rows and runs) is gone too.
_ORIGINS = text(
    """
    DELETE FROM cocov_jobs_job_origins o
    WHERE o.created_at < now() - make_interval(days => :d)
      AND NOT EXISTS (SELECT 1 FROM pgqueuer q WHERE q.id = o.job_id)
      AND NOT EXISTS (SELECT 1 FROM pgqueuer_log l WHERE l.job_id = o.job_id)
      AND NOT EXISTS (SELECT 1 FROM cocov_jobs_runs r WHERE r.job_id = o.job_id)
    """
)


@job(lock="prune-history", dedupe="", every=lambda s: s.prune_minutes, internal=True)
async def prune_history(ctx: JobContext) -> None:
    """Delete webhook deliveries, taken Sidekiq keys, finished jobs' log rows, job runs, their
    hourly roll-ups and the jobs' origins older than the retention; then roll up the complete
    hours of the last week not rolled up yet (:func:`~cocov_jobs.engine.history.roll_up_hours`).

    ``COCOV_HISTORY_RETENTION_DAYS`` (14) days; runs every ``COCOV_PRUNE_MINUTES`` (1440).
    """
    days = ctx.settings.history_retention_days
    async with ctx.db.begin() as session:
        deliveries = (await session.execute(_DELIVERIES, {"d": days})).rowcount  # type: ignore[attr-defined]
        taken = (await session.execute(_SIDEKIQ_TAKEN, {"d": days})).rowcount  # type: ignore[attr-defined]
        logs = (await session.execute(_JOB_LOG, {"d": days})).rowcount  # type: ignore[attr-defined]
        runs = (await session.execute(_RUNS, {"d": days})).rowcount  # type: ignore[attr-defined]
        hours = (await session.execute(_RUN_HOURS, {"d": days})).rowcount  # type: ignore[attr-defined]
        origins = (await session.execute(_ORIGINS, {"d": days})).rowcount  # type: ignore[attr-defined]
    async with ctx.db.begin() as session:
        await history.roll_up_hours(session)
    ctx.log.info(
        "history pruned",
        deliveries=deliveries,
        sidekiq_keys=taken,
        job_log_rows=logs,
        runs=runs,
        run_hours=hours,
        job_origins=origins,
        days=days,
    )
