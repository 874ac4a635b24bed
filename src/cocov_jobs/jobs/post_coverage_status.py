"""``post_coverage_status(commit_id)`` — the ``cocov/coverage`` status of recorded coverage.

Enqueued by ``process_coverage`` in the transaction that records the coverage, and retried on
its own: a GitHub failure here never touches the recorded coverage (docs/architecture.md §6.8,
§7.17). The status is ``failure`` with ``"<P>% covered (at least <min>% is required)"``
when ``commits.minimum_coverage`` is set and the percentage is below it, else ``success`` with
``"<P>% covered"`` — also for a manifest whose ``coverage`` section sets no minimum (§7.13;
Cocov posted nothing then). Nothing is posted unless the commit's coverage is
``completed`` (a newer upload being processed will post its own).
"""

from __future__ import annotations

from sqlalchemy import select

from cocov_jobs.checks import COVERAGE_CONTEXT, CommitStatus, commit_url, post_status
from cocov_jobs.clones import load_commit
from cocov_jobs.coverage import coverage_description
from cocov_jobs.db.models import Commit, CoverageInfo, CoverageStatus
from cocov_jobs.engine.context import JobContext
from cocov_jobs.engine.registry import job


@job(dedupe="{commit_id}", internal=True)
async def post_coverage_status(ctx: JobContext, commit_id: int) -> None:
    """Post the commit's ``cocov/coverage`` status from its recorded coverage."""
    async with ctx.db() as session:
        commit = await load_commit(session, commit_id)
        row = (
            await session.execute(
                select(CoverageInfo.percent_covered, Commit.minimum_coverage)
                .join(Commit, Commit.id == CoverageInfo.commit_id)
                .where(
                    CoverageInfo.commit_id == commit_id,
                    CoverageInfo.status == int(CoverageStatus.completed),
                )
            )
        ).one_or_none()
    if commit is None or row is None:
        ctx.log.info("no completed coverage: no status", commit_id=commit_id)
        return
    percent, minimum = float(row.percent_covered or 0.0), row.minimum_coverage
    status = CommitStatus(
        state="failure" if minimum is not None and percent < minimum else "success",
        context=COVERAGE_CONTEXT,
        description=coverage_description(percent, minimum),
        target_url=commit_url(ctx.settings, commit.repo_name, commit.sha, "coverage"),
    )
    await post_status(ctx.services, commit, status)
