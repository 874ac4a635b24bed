"""``update_commits_author(user_id)`` — docs/architecture.md §5.7, §7.9."""

from __future__ import annotations

from sqlalchemy import func, update

from cocov_jobs.db.models import Commit, UserEmail, utc_now
from cocov_jobs.engine.context import JobContext
from cocov_jobs.engine.registry import job


@job(dedupe="{user_id}")
async def update_commits_author(ctx: JobContext, user_id: int) -> None:
    """Link every commit (any repository) authored with one of the user's emails to the user.

    One set-based UPDATE; emails match case-insensitively. A user without emails, or a missing
    user, changes nothing.
    """
    async with ctx.db.begin() as session:
        result = await session.execute(
            update(Commit)
            .where(
                func.lower(Commit.author_email) == func.lower(UserEmail.email),
                UserEmail.user_id == user_id,
                Commit.user_id.is_distinct_from(user_id),
            )
            .values(user_id=user_id, updated_at=utc_now())
            .execution_options(synchronize_session=False)
        )
    ctx.log.info("commits linked to author", user_id=user_id, commits=result.rowcount)  # type: ignore[attr-defined]
