"""``process_commit(commit_id)`` — docs/architecture.md §5.4, §7.5, §7.7, §7.11.

Clone the commit into storage (:func:`~cocov_jobs.clones.ensure_cloned`), run its checks
(:func:`~cocov_jobs.checks.run_checks`), then link it to its author
(:func:`adjust_associated_user`).

* A missing commit or repository is a no-op (deleted since it was enqueued).
* Runs are serialized and coalesced per commit (lock and dedupe ``commit_id``).
* When the fetch fails for good (git refuses the token, repository or commit, or the last
  attempt failed) the commit is ``errored``, the check set ``failure`` / ``commit_fetch_failed``
  and the ``cocov`` status ``error`` "Could not fetch this commit"; the job then fails with that
  reason. Fetch failures that will be retried change nothing visible (Cocov posted the error on
  every attempt). A clone in progress in another job re-queues this one.
* Every step is idempotent, so any failure (a status post included) retries the whole job.
"""

from __future__ import annotations

from sqlalchemy import func, select, update

from cocov_jobs.checks import notify_check_fatal_failure, run_checks
from cocov_jobs.clones import CommitFetchFailed, ensure_cloned, load_commit
from cocov_jobs.db.models import Commit, UserEmail, utc_now
from cocov_jobs.engine.context import JobContext
from cocov_jobs.engine.registry import job
from cocov_jobs.services import Services


@job(lock="process-commit:{commit_id}", dedupe="{commit_id}")
async def process_commit(ctx: JobContext, commit_id: int) -> None:
    """Clone a commit, run its checks, link its author."""
    async with ctx.db() as session:
        commit = await load_commit(session, commit_id)
    if commit is None:
        ctx.log.info("commit not found: nothing to process", commit_id=commit_id)
        return
    try:
        await ensure_cloned(ctx, commit)
    except CommitFetchFailed:
        await notify_check_fatal_failure(ctx.services, commit, "commit_fetch_failed", None)
        raise
    await run_checks(ctx.services, commit, run=ctx.job_id)
    await adjust_associated_user(ctx.services, commit_id)


async def adjust_associated_user(services: Services, commit_id: int) -> None:
    """Set ``commits.user_id`` to the owner of ``author_email`` (case-insensitive).

    Without a matching ``user_emails`` row the current association is kept.
    """
    owner = (
        select(UserEmail.user_id)
        .where(func.lower(UserEmail.email) == func.lower(Commit.author_email))
        .limit(1)
        .scalar_subquery()
    )
    async with services.sessions.begin() as session:
        await session.execute(
            update(Commit)
            .where(
                Commit.id == commit_id,
                owner.is_not(None),
                Commit.user_id.is_distinct_from(owner),
            )
            .values(user_id=owner, updated_at=utc_now())
            .execution_options(synchronize_session=False)
        )
