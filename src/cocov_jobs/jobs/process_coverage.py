"""``process_coverage`` — placeholder until issue 4 lands (signature fixed, body pending)."""

from __future__ import annotations

from cocov_jobs.jobs.context import JobContext
from cocov_jobs.queue import job


@job()
async def process_coverage(ctx: JobContext, repository_id: int, sha: str, upload_id: int) -> None:
    """Not implemented yet (issue 4)."""
    raise NotImplementedError("process_coverage is not implemented yet")
