"""``compute_repository_commits_size(repository_id)`` — docs/architecture.md §5.1, §7.11."""

from __future__ import annotations

from sqlalchemy import func, select, update

from cocov_jobs.db.models import Commit, Repository, utc_now
from cocov_jobs.engine.context import JobContext
from cocov_jobs.engine.registry import job


@job(lock="commits-size:{repository_id}", dedupe="{repository_id}")
async def compute_repository_commits_size(ctx: JobContext, repository_id: int) -> None:
    """Set ``repositories.commits_size`` to the sum of its commits' ``clone_size``.

    Coalesced: at most one run waits per repository and runs never overlap, so the last run
    always sees every committed clone size. A missing repository is a no-op.
    """
    total = (
        select(func.coalesce(func.sum(Commit.clone_size), 0))
        .where(Commit.repository_id == repository_id)
        .scalar_subquery()
    )
    async with ctx.db.begin() as session:
        await session.execute(
            update(Repository)
            .where(Repository.id == repository_id)
            .values(commits_size=total, updated_at=utc_now())
        )
