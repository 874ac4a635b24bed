"""``process_coverage(repository_id, sha, upload_id)`` — docs/architecture.md §5.5, §7.8.

1. The upload (``cocov_jobs_coverage_uploads``) is gone, or was recorded already, or a newer
   upload for the same commit exists: nothing to do (the newer one's job records it). A
   missing repository is a no-op too; a missing commit of an existing repository fails the
   job for good (uploads are only queued for registered commits).
2. Coverage goes ``in_progress``; the commit is cloned if needed
   (:func:`~cocov_jobs.clones.ensure_cloned`, shared with ``process_commit``: one clone) and
   its manifest read. An unusable manifest fails the job for good.
3. The upload is measured with the manifest's ``exclude_paths``
   (:func:`~cocov_jobs.coverage.summarize`); files with an invalid path or data are left out,
   logged and stored in ``cocov_jobs_coverage_results.rejected``.
4. Everything is recorded in one transaction (:func:`~cocov_jobs.coverage_results.
   record_coverage`), which also enqueues ``post_coverage_status``.

Coverage is marked ``errored`` only when the job gives up; a failure that will be retried leaves
it ``in_progress``. Runs for one commit are serialized (lock on repository and sha).
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import Any, Final

from sqlalchemy import text

from cocov_jobs.clones import CommitRef, ensure_cloned, find_commit, read_manifest
from cocov_jobs.coverage import CoverageReport, summarize
from cocov_jobs.coverage_results import CoverageTarget, record_coverage, set_coverage_status
from cocov_jobs.db.models import CoverageStatus
from cocov_jobs.engine.context import JobContext
from cocov_jobs.engine.registry import job
from cocov_jobs.engine.retry import PermanentError
from cocov_jobs.manifest import InvalidManifestError, Manifest

#: Rejected files named in the job's log (all of them are stored).
MAX_LOGGED_REJECTIONS: Final = 20

_UPLOAD = text(
    """
    SELECT repository_id, sha,
           EXISTS (SELECT 1 FROM cocov_jobs_coverage_results r WHERE r.upload_id = u.id)
             AS recorded,
           EXISTS (SELECT 1 FROM cocov_jobs_coverage_uploads newer
                   WHERE newer.repository_id = u.repository_id
                     AND lower(newer.sha) = lower(u.sha) AND newer.id > u.id) AS superseded
    FROM cocov_jobs_coverage_uploads u WHERE u.id = :id
    """
)
_UPLOAD_DATA = text("SELECT data::text FROM cocov_jobs_coverage_uploads WHERE id = :id")
_REPOSITORY_EXISTS = text("SELECT EXISTS (SELECT 1 FROM repositories WHERE id = :id)")


@dataclass(frozen=True)
class _Upload:
    repository_id: int
    sha: str
    recorded: bool
    superseded: bool


@job(lock="coverage:{repository_id}:{sha}")
async def process_coverage(ctx: JobContext, repository_id: int, sha: str, upload_id: int) -> None:
    """Measure a coverage upload and record it for its commit (status posted by a follow-up)."""
    commit = await _target_commit(ctx, repository_id, sha, upload_id)
    if commit is None:
        return
    try:
        await _process(ctx, commit, upload_id)
    except Exception as exc:
        if ctx.gives_up(exc):
            async with ctx.db.begin() as session:
                await set_coverage_status(session, commit.id, CoverageStatus.errored)
        raise


async def _target_commit(
    ctx: JobContext, repository_id: int, sha: str, upload_id: int
) -> CommitRef | None:
    """The commit to record ``upload_id`` for, or None when there is nothing to do (step 1)."""
    async with ctx.db() as session:
        row = (await session.execute(_UPLOAD, {"id": upload_id})).one_or_none()
        upload = _Upload(*row) if row else None
        if upload is None or upload.recorded or upload.superseded:
            ctx.log.info("coverage upload has nothing left to record", upload_id=upload_id)
            return None
        if upload.repository_id != repository_id or upload.sha.lower() != sha.lower():
            raise PermanentError(f"upload {upload_id} is not for {sha} of {repository_id}")
        commit = await find_commit(session, repository_id, sha)
        if commit is None and await session.scalar(_REPOSITORY_EXISTS, {"id": repository_id}):
            raise PermanentError(f"commit {sha} of repository {repository_id} is not registered")
    if commit is None:
        ctx.log.info("repository not found: coverage dropped", repository_id=repository_id)
    return commit


async def _process(ctx: JobContext, commit: CommitRef, upload_id: int) -> None:
    async with ctx.db.begin() as session:
        await set_coverage_status(session, commit.id, CoverageStatus.in_progress)
    await ensure_cloned(ctx, commit)
    manifest = await _manifest(ctx, commit)
    async with ctx.db() as session:
        data = json.loads(await session.scalar(_UPLOAD_DATA, {"id": upload_id}) or "null")
    # Measuring takes ~0.1 s per million lines: off the event loop, heartbeats keep going.
    excluded = manifest.path_excluded if manifest else None
    report = await asyncio.to_thread(summarize, data, excluded=excluded)
    _log_rejected(ctx, upload_id, report)
    target = CoverageTarget(
        upload_id=upload_id,
        repository_id=commit.repository_id,
        commit_id=commit.id,
        min_percent=manifest.coverage.min_percent if manifest and manifest.coverage else None,
    )
    async with ctx.db.begin() as session:
        recorded = await record_coverage(session, target, report)
    ctx.log.info(
        "coverage recorded" if recorded else "coverage was already recorded",
        commit_id=commit.id,
        upload_id=upload_id,
        files=len(report.files),
        percent=report.totals.percent_covered,
    )


async def _manifest(ctx: JobContext, commit: CommitRef) -> Manifest | None:
    try:
        return await read_manifest(ctx.services.storage, commit)
    except InvalidManifestError as exc:
        raise PermanentError(f"invalid manifest ({exc.code}): {exc.message}") from exc


def _log_rejected(ctx: JobContext, upload_id: int, report: CoverageReport) -> None:
    if not report.rejected:
        return
    shown: list[dict[str, Any]] = [
        {"file": r.file, "reason": r.reason} for r in report.rejected[:MAX_LOGGED_REJECTIONS]
    ]
    ctx.log.warning(
        "coverage files rejected",
        upload_id=upload_id,
        rejected=len(report.rejected),
        examples=shown,
    )
