"""``initialize_repository(repository_id)`` — docs/architecture.md §5.3, §7.2.

1. Nothing to do when the repository is gone or its default branch already has a head.
2. Ask GitHub for the newest commit of the default branch
   (``GET /repos/{org}/{name}/commits?sha=<default branch>&per_page=1``, installation token);
   an empty repository (no commit) is left alone.
3. In one transaction, :func:`~cocov_jobs.registration.register_head_commit`: create the commit
   or reuse the existing row, make it the head of the default branch, claim coverage uploaded
   before the commit existed (§7.1) and enqueue ``process_commit``. The repository row
   is re-read there under a share lock: if the branch got a head meanwhile (a push), nothing is
   changed; if its name or default branch changed, the job is retried to ask GitHub again.
4. After the commit, :meth:`~cocov_jobs.registration.Registration.after_commit` forgets the
   claimed Redis payload.

A malformed GitHub answer (no sha, message or author) is a permanent failure. Runs for one
repository never overlap and at most one waits.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from cocov_jobs.engine.context import JobContext
from cocov_jobs.engine.registry import job
from cocov_jobs.engine.retry import PermanentError, TransientError
from cocov_jobs.registration import HeadCommit, register_head_commit

_STATE = """
SELECT name, default_branch,
       EXISTS (SELECT 1 FROM branches
               WHERE branches.repository_id = repositories.id
                 AND branches.name = repositories.default_branch
                 AND branches.head_id IS NOT NULL) AS initialized
FROM repositories WHERE id = :repository_id
"""
_READ_STATE = text(_STATE)
# Also keeps the repository from being deleted or renamed until the registration commits.
_LOCK_STATE = text(_STATE + " FOR SHARE")


@dataclass(frozen=True)
class _State:
    name: str
    default_branch: str
    initialized: bool


def _head_commit(data: dict[str, Any], branch: str) -> HeadCommit:
    """What GitHub says about the newest commit of ``branch``, as the head to register."""
    try:
        commit = data["commit"]
        author = commit["author"]
        sha, message = str(data["sha"]), str(commit["message"])
        return HeadCommit(branch, sha, message, str(author["name"]), str(author["email"]))
    except (KeyError, TypeError) as exc:
        raise PermanentError(f"GitHub's commit listing lacks {exc}") from None


@job(lock="initialize-repository:{repository_id}", dedupe="{repository_id}")
async def initialize_repository(ctx: JobContext, repository_id: int) -> None:
    """Register the default branch's newest commit as its head and process it."""
    async with ctx.db() as session:
        before = await _state(session, repository_id)
    if before is None or before.initialized:
        ctx.log.info("nothing to initialize", repository_id=repository_id, gone=before is None)
        return
    latest = await ctx.services.github().latest_commit(
        ctx.settings.github_org_name, before.name, before.default_branch
    )
    if latest is None:
        ctx.log.info("repository has no commits yet", repository_id=repository_id)
        return
    head = _head_commit(latest, before.default_branch)
    async with ctx.db.begin() as session:
        now = await _state(session, repository_id, lock=True)
        if now is None or now.initialized:
            return
        if (now.name, now.default_branch) != (before.name, before.default_branch):
            raise TransientError("the repository was renamed or its default branch changed")
        registration = await register_head_commit(
            session, ctx.redis, repository_id=repository_id, commit=head
        )
    await registration.after_commit(ctx.redis)
    ctx.log.info(
        "repository initialized",
        repository_id=repository_id,
        sha=head.sha,
        commit_id=registration.commit_id,
        coverage_upload_id=registration.coverage_upload_id,
    )


async def _state(session: AsyncSession, repository_id: int, *, lock: bool = False) -> _State | None:
    query = _LOCK_STATE if lock else _READ_STATE
    row = (await session.execute(query, {"repository_id": repository_id})).one_or_none()
    if row is None:
        return None
    return _State(str(row.name), str(row.default_branch), bool(row.initialized))
