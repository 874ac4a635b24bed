"""``compute_repository_commits_size(repository_id)`` — docs/architecture.md §5.1, §7.11."""

from __future__ import annotations

from sqlalchemy import text

from cocov_jobs.engine.context import JobContext
from cocov_jobs.engine.registry import job

_SET_SIZE = text(
    """
    UPDATE repositories
    SET commits_size = (SELECT coalesce(sum(clone_size), 0) FROM commits
                        WHERE repository_id = :repository_id),
        updated_at = timezone('utc', now())
    WHERE id = :repository_id
    """
)


@job(lock="commits-size:{repository_id}", dedupe="{repository_id}")
async def compute_repository_commits_size(ctx: JobContext, repository_id: int) -> None:
    """Set ``repositories.commits_size`` to the sum of its commits' ``clone_size``.

    Coalesced: at most one run waits per repository and runs never overlap, so the last run
    always sees every committed clone size. A missing repository is a no-op. One statement.
    """
    await ctx.execute_one(_SET_SIZE, {"repository_id": repository_id})
