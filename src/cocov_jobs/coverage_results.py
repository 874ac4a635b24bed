"""Recording a measured coverage upload in Cocov's tables, once (docs/architecture.md §5.5).

:func:`record_coverage` runs in the caller's transaction and does, for upload ``U`` of commit
``C``:

1. insert ``U`` into ``cocov_jobs_coverage_results`` — when it is already there, stop: the
   upload was recorded before, and nothing below runs twice (no duplicated history);
2. delete ``C``'s ``coverage_files`` and bulk-load the new ones with ``COPY``;
3. ``coverage_infos``: ``lines_total``, ``lines_covered``, ``percent_covered`` (float),
   ``status = completed``;
4. ``commits.coverage_percent`` = the percentage truncated to an integer;
   ``commits.minimum_coverage`` = the manifest's ``min_percent`` when it sets one;
5. one ``coverage_histories`` row (float percentage) per branch headed by ``C``, and
   ``branches.coverage`` (truncated) for those branches;
6. enqueue ``post_coverage_status(C)``, so the GitHub status is posted (and retried) by its
   own job and can never undo the recorded coverage.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Final

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from cocov_jobs.coverage import CoverageReport
from cocov_jobs.db.models import CoverageStatus
from cocov_jobs.engine import queue

#: Columns of ``coverage_files`` written by ``COPY`` (``id`` comes from its sequence).
COVERAGE_FILE_COLUMNS: Final = (
    "coverage_info_id",
    "file",
    "percent_covered",
    "raw_data",
    "lines_missed",
    "lines_covered",
    "lines_total",
    "created_at",
    "updated_at",
)

_RECORD_RESULT = text(
    """
    INSERT INTO cocov_jobs_coverage_results (upload_id, repository_id, commit_id, rejected)
    VALUES (:upload_id, :repository_id, :commit_id, CAST(:rejected AS jsonb))
    ON CONFLICT (upload_id) DO NOTHING
    RETURNING upload_id
    """
)
_UPSERT_INFO = text(
    """
    INSERT INTO coverage_infos (commit_id, status, created_at, updated_at)
    VALUES (:commit_id, :status, timezone('utc', now()), timezone('utc', now()))
    ON CONFLICT (commit_id) DO UPDATE SET status = EXCLUDED.status,
                                          updated_at = EXCLUDED.updated_at
    RETURNING id
    """
)
_DELETE_FILES = text("DELETE FROM coverage_files WHERE coverage_info_id = :info_id")
_COMPLETE_INFO = text(
    """
    UPDATE coverage_infos
    SET lines_total = :lines_total, lines_covered = :lines_covered,
        percent_covered = :percent, status = :completed, updated_at = timezone('utc', now())
    WHERE id = :info_id
    """
)
_UPDATE_COMMIT = text(
    """
    UPDATE commits
    SET coverage_percent = :percent_int,
        minimum_coverage = COALESCE(CAST(:min_percent AS integer), minimum_coverage),
        updated_at = timezone('utc', now())
    WHERE id = :commit_id
    """
)
_RECORD_HISTORY = text(
    """
    INSERT INTO coverage_histories (repository_id, branch_id, percentage, created_at, updated_at)
    SELECT repository_id, id, :percent, timezone('utc', now()), timezone('utc', now())
    FROM branches WHERE repository_id = :repository_id AND head_id = :commit_id
    ORDER BY id
    """
)
_UPDATE_BRANCHES = text(
    """
    UPDATE branches SET coverage = :percent_int, updated_at = timezone('utc', now())
    WHERE repository_id = :repository_id AND head_id = :commit_id
    """
)


@dataclass(frozen=True)
class CoverageTarget:
    """Which upload is recorded for which commit, and the manifest's minimum (if any)."""

    upload_id: int
    repository_id: int
    commit_id: int
    min_percent: int | None


async def set_coverage_status(session: AsyncSession, commit_id: int, status: CoverageStatus) -> int:
    """Set (or create) the commit's ``coverage_infos`` status; return the row's id."""
    info_id = await session.scalar(_UPSERT_INFO, {"commit_id": commit_id, "status": int(status)})
    return int(info_id)


async def record_coverage(
    session: AsyncSession, target: CoverageTarget, report: CoverageReport
) -> bool:
    """Record ``report`` (module steps 1–6); False when the upload was recorded before."""
    rejected = [{"file": r.file, "reason": r.reason} for r in report.rejected]
    ids = {
        "upload_id": target.upload_id,
        "repository_id": target.repository_id,
        "commit_id": target.commit_id,
    }
    if await session.scalar(_RECORD_RESULT, {**ids, "rejected": json.dumps(rejected)}) is None:
        return False
    info_id = await set_coverage_status(session, target.commit_id, CoverageStatus.in_progress)
    await session.execute(_DELETE_FILES, {"info_id": info_id})
    await _copy_files(session, info_id, report)
    totals = report.totals
    percent = totals.percent_covered
    await session.execute(
        _COMPLETE_INFO,
        {
            "info_id": info_id,
            "lines_total": totals.lines_total,
            "lines_covered": totals.lines_covered,
            "percent": percent,
            "completed": int(CoverageStatus.completed),
        },
    )
    truncated = {**ids, "percent_int": int(percent)}
    await session.execute(_UPDATE_COMMIT, {**truncated, "min_percent": target.min_percent})
    await session.execute(_RECORD_HISTORY, {**ids, "percent": percent})
    await session.execute(_UPDATE_BRANCHES, truncated)
    await queue.enqueue(session, "post_coverage_status", commit_id=target.commit_id)
    return True


def file_records(info_id: int, report: CoverageReport) -> list[tuple[object, ...]]:
    """The ``coverage_files`` rows of ``report``, in :data:`COVERAGE_FILE_COLUMNS` order."""
    now = datetime.now(UTC).replace(tzinfo=None)
    return [
        (
            info_id,
            f.file,
            f.percent_covered,
            f.raw_data,
            f.lines_missed,
            f.lines_covered,
            f.lines_total,
            now,
            now,
        )
        for f in report.files
    ]


async def _copy_files(session: AsyncSession, info_id: int, report: CoverageReport) -> None:
    """``COPY`` the report's files on the session's own connection (inside its transaction)."""
    records = file_records(info_id, report)
    if not records:
        return
    raw = await (await session.connection()).get_raw_connection()
    await raw.driver_connection.copy_records_to_table(  # type: ignore[union-attr]
        "coverage_files", records=records, columns=COVERAGE_FILE_COLUMNS
    )
