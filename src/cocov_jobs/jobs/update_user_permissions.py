"""``update_user_permissions`` — placeholder until issue 3 lands (signature fixed, body pending)."""

from __future__ import annotations

from cocov_jobs.jobs.context import JobContext
from cocov_jobs.queue import job


@job()
async def update_user_permissions(ctx: JobContext, user_id: int) -> None:
    """Not implemented yet (issue 3)."""
    raise NotImplementedError("update_user_permissions is not implemented yet")
