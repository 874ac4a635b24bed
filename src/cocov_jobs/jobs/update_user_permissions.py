"""``update_user_permissions(user_id)`` — docs/architecture.md §5.10, §7.9.

Mirrors the user's own view of the organization (``GET /orgs/{org}/repos`` with the user's
OAuth token, every page; each item carries that user's ``permissions``) into the
``repository_members`` rows whose ``github_member_id`` is the user's GitHub id:

* a repository GitHub lists and Cocov knows (``repositories.github_id``) gets a membership at
  :func:`~cocov_jobs.github.level_from_github` (inserted, or ``level`` changed where it
  differs); repositories Cocov does not know are ignored;
* a membership of a repository GitHub no longer lists is deleted.

The GitHub-to-local id mapping happens inside the SQL (a join on ``repositories.github_id``),
so the diff is one DELETE and one upsert in one transaction, O(n + m), whatever the sizes.

A missing user is a no-op. A rejected OAuth token (401: revoked or expired) changes nothing and
finishes the job as a permanent failure saying so; the token never appears in the reason.
Runs for one user never overlap and at most one waits.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import text

from cocov_jobs.engine.context import JobContext
from cocov_jobs.engine.registry import job
from cocov_jobs.engine.retry import PermanentError
from cocov_jobs.github import GitHubError, level_from_github

#: GitHub's answer to a revoked or expired OAuth token.
UNAUTHORIZED = 401

_USER = text("SELECT github_id, github_token FROM users WHERE id = :user_id")

_DELETE_UNLISTED = text(
    """
    DELETE FROM repository_members
    WHERE github_member_id = :member_id
      AND repository_id NOT IN (
          SELECT id FROM repositories WHERE github_id = ANY(CAST(:github_ids AS integer[]))
      )
    """
)

_UPSERT_LISTED = text(
    """
    INSERT INTO repository_members (repository_id, github_member_id, level, created_at, updated_at)
    SELECT repositories.id, :member_id, listed.level,
           timezone('utc', now()), timezone('utc', now())
    FROM unnest(CAST(:github_ids AS integer[]), CAST(:levels AS integer[]))
         AS listed(github_id, level)
    JOIN repositories ON repositories.github_id = listed.github_id
    ON CONFLICT (repository_id, github_member_id) DO UPDATE
    SET level = EXCLUDED.level, updated_at = EXCLUDED.updated_at
    WHERE repository_members.level IS DISTINCT FROM EXCLUDED.level
    """
)


@job(lock="user-members:{user_id}", dedupe="{user_id}")
async def update_user_permissions(ctx: JobContext, user_id: int) -> None:
    """Mirror the user's GitHub repository permissions into ``repository_members``."""
    async with ctx.db() as session:
        user = (await session.execute(_USER, {"user_id": user_id})).one_or_none()
    if user is None:
        ctx.log.info("user is gone; permissions not synced", user_id=user_id)
        return
    repos = await _visible_repositories(ctx, user_id, user.github_token)
    levels = repository_levels(repos)
    params = {
        "member_id": user.github_id,
        "github_ids": list(levels),
        "levels": list(levels.values()),
    }
    async with ctx.db.begin() as session:
        await session.execute(_DELETE_UNLISTED, params)
        await session.execute(_UPSERT_LISTED, params)
    ctx.log.info("user memberships synced", user_id=user_id, listed_repositories=len(levels))


async def _visible_repositories(ctx: JobContext, user_id: int, token: str) -> list[dict[str, Any]]:
    async with ctx.services.user_github(token) as github:
        try:
            return await github.list_org_repos(ctx.settings.github_org_name)
        except GitHubError as exc:
            if exc.status == UNAUTHORIZED:
                raise PermanentError(
                    f"GitHub rejected the OAuth token of user {user_id} ({UNAUTHORIZED}); "
                    "permissions left unchanged"
                ) from None
            raise


def repository_levels(repos: list[dict[str, Any]]) -> dict[int, int]:
    """GitHub repository id → the user's level; a repository listed twice keeps the last."""
    return {int(repo["id"]): level_from_github(repo.get("permissions") or {}) for repo in repos}
