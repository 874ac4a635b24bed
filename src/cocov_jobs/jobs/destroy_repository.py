"""``destroy_repository`` — placeholder until issue 3 lands (signature fixed, body pending)."""

from __future__ import annotations

from cocov_jobs.jobs.context import JobContext
from cocov_jobs.queue import job


@job()
async def destroy_repository(ctx: JobContext, repository_id: int) -> None:
    """Not implemented yet (issue 3)."""
    raise NotImplementedError("destroy_repository is not implemented yet")
