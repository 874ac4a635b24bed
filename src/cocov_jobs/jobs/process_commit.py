"""``process_commit`` — placeholder until issue 4 lands (signature fixed, body pending)."""

from __future__ import annotations

from cocov_jobs.jobs.context import JobContext
from cocov_jobs.queue import job


@job()
async def process_commit(ctx: JobContext, commit_id: int) -> None:
    """Not implemented yet (issue 4)."""
    raise NotImplementedError("process_commit is not implemented yet")
