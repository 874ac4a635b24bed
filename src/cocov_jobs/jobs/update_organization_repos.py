"""``update_organization_repos`` — placeholder until issue 3 lands."""

from __future__ import annotations

from cocov_jobs.jobs.context import JobContext
from cocov_jobs.queue import job


@job()
async def update_organization_repos(ctx: JobContext) -> None:
    """Not implemented yet (issue 3)."""
    raise NotImplementedError("update_organization_repos is not implemented yet")
