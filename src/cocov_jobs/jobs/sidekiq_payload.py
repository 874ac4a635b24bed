"""``sidekiq_payload(payload)`` — a Sidekiq payload the intake could not turn into a job.

The intake keeps such a payload as this job, held as failed with the reason
(:mod:`cocov_jobs.sidekiq.store`). Running it (``jobs retry``, the dashboard's retry) reads the
payload again: when it now makes a job — say, the coverage upload's repository exists by then —
that job is enqueued (or the upload stored); otherwise it fails again at once with the reason.
"""

from __future__ import annotations

from cocov_jobs.engine.context import JobContext
from cocov_jobs.engine.registry import job
from cocov_jobs.engine.retry import PermanentError
from cocov_jobs.sidekiq.payload import read_payload
from cocov_jobs.sidekiq.store import submit
from cocov_jobs.uploads import UploadError


@job()
async def sidekiq_payload(ctx: JobContext, payload: str) -> None:
    """Read a kept Sidekiq payload again and enqueue the job it asks for."""
    read = read_payload(payload, ctx.services.registry)
    if read.problem is not None:
        raise PermanentError(str(read.problem))
    assert read.request is not None
    try:
        async with ctx.db.begin() as session:
            await submit(session, ctx.redis, read.request)
    except UploadError as exc:
        raise PermanentError(f"ProcessCoverageJob: {exc}") from None
    ctx.log.info("kept sidekiq payload enqueued", key=read.key, ruby_class=read.ruby_class)
