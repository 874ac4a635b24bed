"""``destroy_repository(repository_id)`` — docs/architecture.md §5.2, §7.4.

One transaction: lock the repository row, delete everything under it with set-based DELETEs in
foreign-key order (:data:`DELETES`: children before parents, branches before the commits their
``head_id`` points at, ``issue_ignore_rules`` after the issues that may reference them, our
coverage uploads too), delete the repository, and enqueue the follow-up jobs that run only once
this has committed:

* ``purge_repository_cache`` — the Cache service's ``purge-repository`` task, when
  ``COCOV_CACHE_SERVICE_URL`` is set;
* ``remove_repository_leftovers`` — the stored clones (``sha1(name)`` directory or S3 prefix;
  the job carries the name since the row is gone) and the repository's Redis keys.

Idempotent: a missing repository is success and enqueues nothing, so the follow-ups are
enqueued exactly once per destroyed repository. Users stay (``commits.user_id`` and
``issues.ignore_user_id`` point at them). Runs for one repository never overlap and at most
one waits.
"""

from __future__ import annotations

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from cocov_jobs.engine import queue
from cocov_jobs.engine.context import JobContext
from cocov_jobs.engine.registry import job

_LOCK_REPOSITORY = text("SELECT name FROM repositories WHERE id = :repository_id FOR UPDATE")

_OF_COMMITS = "SELECT id FROM commits WHERE repository_id = :repository_id"

#: The deletes, in foreign-key order; each takes ``:repository_id``.
DELETES = tuple(
    text(sql)
    for sql in (
        f"DELETE FROM issues WHERE commit_id IN ({_OF_COMMITS})",
        "DELETE FROM checks WHERE check_set_id IN"
        f" (SELECT id FROM check_sets WHERE commit_id IN ({_OF_COMMITS}))",
        f"DELETE FROM check_sets WHERE commit_id IN ({_OF_COMMITS})",
        "DELETE FROM coverage_files WHERE coverage_info_id IN"
        f" (SELECT id FROM coverage_infos WHERE commit_id IN ({_OF_COMMITS}))",
        f"DELETE FROM coverage_infos WHERE commit_id IN ({_OF_COMMITS})",
        "DELETE FROM coverage_histories WHERE repository_id = :repository_id",
        "DELETE FROM issue_histories WHERE repository_id = :repository_id",
        "DELETE FROM branches WHERE repository_id = :repository_id",
        "DELETE FROM commits WHERE repository_id = :repository_id",
        "DELETE FROM secrets WHERE repository_id = :repository_id",
        "DELETE FROM private_keys WHERE repository_id = :repository_id",
        "DELETE FROM repository_members WHERE repository_id = :repository_id",
        "DELETE FROM cache_artifacts WHERE repository_id = :repository_id",
        "DELETE FROM issue_ignore_rules WHERE repository_id = :repository_id",
        "DELETE FROM cocov_jobs_coverage_uploads WHERE repository_id = :repository_id",
        "DELETE FROM cocov_jobs_coverage_results WHERE repository_id = :repository_id",
        "DELETE FROM repositories WHERE id = :repository_id",
    )
)


@job(lock="destroy-repository:{repository_id}", dedupe="{repository_id}")
async def destroy_repository(ctx: JobContext, repository_id: int) -> None:
    """Delete a repository and everything under it; purge its cache and clones afterwards."""
    async with ctx.db.begin() as session:
        name = await session.scalar(_LOCK_REPOSITORY, {"repository_id": repository_id})
        if name is None:
            ctx.log.info("repository already gone", repository_id=repository_id)
            return
        for statement in DELETES:
            await session.execute(statement, {"repository_id": repository_id})
        await _enqueue_follow_ups(ctx, session, repository_id, str(name))
    ctx.log.info("repository destroyed", repository_id=repository_id, name=str(name))


async def _enqueue_follow_ups(
    ctx: JobContext, session: AsyncSession, repository_id: int, name: str
) -> None:
    if ctx.settings.cache_service_url:
        await queue.enqueue(session, "purge_repository_cache", repository_id=repository_id)
    await queue.enqueue(
        session, "remove_repository_leftovers", repository_id=repository_id, repository_name=name
    )
