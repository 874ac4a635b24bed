"""``update_repo_permissions(repository_id)`` — docs/architecture.md §5.9, §7.9.

Mirrors the repository's GitHub collaborators (``GET /repositories/{github_id}/collaborators``,
installation token, every page) into ``repository_members``, one row per collaborator whether
or not they use Cocov, ``level`` = :func:`~cocov_jobs.github.level_from_github`.

The diff is two set-based statements in one transaction, whatever the sizes: a DELETE of the
members GitHub no longer lists and one upsert of every listed collaborator that inserts the new
ones and changes ``level`` (and ``updated_at``) only where it differs. Both run in
O(n + m) (n collaborators, m stored members); the statement count does not depend on them.

GitHub is read before the transaction opens, so no connection is held during HTTP. A missing
repository (before or after the listing) is a no-op; GitHub's 404 (the App cannot see the
repository) finishes the job as a permanent failure. Runs for one repository never overlap and
at most one waits.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from cocov_jobs.engine.context import JobContext
from cocov_jobs.engine.registry import job
from cocov_jobs.github import level_from_github

_GITHUB_ID = text("SELECT github_id FROM repositories WHERE id = :repository_id")

# Keeps the repository from being deleted until we commit; None when it is already gone.
_LOCK_REPOSITORY = text("SELECT id FROM repositories WHERE id = :repository_id FOR KEY SHARE")

_DELETE_UNLISTED = text(
    """
    DELETE FROM repository_members
    WHERE repository_id = :repository_id
      AND NOT (github_member_id = ANY(CAST(:member_ids AS integer[])))
    """
)

_UPSERT_LISTED = text(
    """
    INSERT INTO repository_members (repository_id, github_member_id, level, created_at, updated_at)
    SELECT :repository_id, listed.member_id, listed.level,
           timezone('utc', now()), timezone('utc', now())
    FROM unnest(CAST(:member_ids AS integer[]), CAST(:levels AS integer[]))
         AS listed(member_id, level)
    ON CONFLICT (repository_id, github_member_id) DO UPDATE
    SET level = EXCLUDED.level, updated_at = EXCLUDED.updated_at
    WHERE repository_members.level IS DISTINCT FROM EXCLUDED.level
    """
)


@job(lock="repository-members:{repository_id}", dedupe="{repository_id}")
async def update_repo_permissions(ctx: JobContext, repository_id: int) -> None:
    """Mirror the repository's GitHub collaborators into ``repository_members``."""
    async with ctx.db() as session:
        github_id = await session.scalar(_GITHUB_ID, {"repository_id": repository_id})
    if github_id is None:
        ctx.log.info("repository is gone; permissions not synced", repository_id=repository_id)
        return
    collaborators = await ctx.services.github().list_collaborators(github_id)
    levels = member_levels(collaborators)
    async with ctx.db.begin() as session:
        if not await _sync(session, repository_id, levels):
            ctx.log.info("repository deleted during the sync", repository_id=repository_id)
            return
    ctx.log.info("repository members synced", repository_id=repository_id, members=len(levels))


def member_levels(collaborators: list[dict[str, Any]]) -> dict[int, int]:
    """GitHub user id → membership level; a user listed twice keeps the last entry."""
    return {
        int(collaborator["id"]): level_from_github(collaborator.get("permissions") or {})
        for collaborator in collaborators
    }


async def _sync(session: AsyncSession, repository_id: int, levels: dict[int, int]) -> bool:
    """Apply the diff; False (nothing changed) when the repository no longer exists."""
    if await session.scalar(_LOCK_REPOSITORY, {"repository_id": repository_id}) is None:
        return False
    params = {"repository_id": repository_id, "member_ids": list(levels)}
    await session.execute(_DELETE_UNLISTED, params)
    await session.execute(_UPSERT_LISTED, {**params, "levels": list(levels.values())})
    return True
