"""Sidekiq payloads stored as our jobs, a batch per PostgreSQL transaction.

:func:`store` is step 2 of the intake (:mod:`cocov_jobs.sidekiq.intake`) and the body of
``cocov-jobs sidekiq import``. In the caller's transaction:

1. every payload's key (its ``jid``) goes into ``cocov_jobs_sidekiq_taken``. A key already
   there was taken before — a replay of a payload whose transaction committed — and its payload
   is skipped; a key twice in the batch counts once;
2. the jobs of the new payloads are inserted in one statement, due at their ``run_at`` (the
   score of the ``schedule`` or ``retry`` set) or now. ``ProcessCoverageJob`` stores its upload
   as ``POST /v1/reports`` does (:func:`~cocov_jobs.uploads.store_upload`: processing enqueued,
   or held until the commit is registered);
3. a payload that failed under Sidekiq keeps its attempts (``retry_count + 1``) and its last
   error; one of the ``dead`` set is held as failed with Sidekiq's error. A payload that cannot
   become a job (:class:`~cocov_jobs.sidekiq.payload.PayloadError`, or an upload whose
   repository is gone) is kept as a ``sidekiq_payload`` job held as failed, with its text and
   the reason: ``jobs list --state failed`` and the dashboard show it, and retrying it reads the
   payload again.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final

import redis.asyncio as aioredis
from pgqueuer.models import TracebackRecord
from pgqueuer.types import JobId
from sqlalchemy.ext.asyncio import AsyncSession

from cocov_jobs.engine import queue
from cocov_jobs.engine.queue import NewJob, enqueued_by
from cocov_jobs.registration import canonical_coverage
from cocov_jobs.sidekiq.payload import (
    INVALID_ARGUMENTS,
    CoverageUpload,
    JobRequest,
    Payload,
    PayloadError,
    Request,
)
from cocov_jobs.uploads import UploadError, store_upload

#: The job that keeps a payload which cannot become a job (see the module docstring).
KEPT_JOB: Final = "sidekiq_payload"

_TAKE = """
INSERT INTO cocov_jobs_sidekiq_taken (key, ruby_class)
SELECT key, ruby_class FROM unnest($1::text[], $2::text[]) AS t(key, ruby_class) ORDER BY key
ON CONFLICT (key) DO NOTHING
RETURNING key
"""

#: Attempts and a log row with the error for each job id; ``status`` 'queued' keeps it waiting,
#: 'failed' holds it as PgQueuer holds a job that gave up.
_ANNOTATE = """
WITH f AS (
    SELECT * FROM unnest($1::bigint[], $2::int[], $3::text[], $4::jsonb[])
        AS t(id, attempts, status, traceback)
), changed AS (
    UPDATE pgqueuer q
    SET attempts = f.attempts, status = f.status::pgqueuer_status, updated = now()
    FROM f WHERE q.id = f.id
    RETURNING q.id, q.entrypoint, q.priority
)
INSERT INTO pgqueuer_log (job_id, status, entrypoint, priority, traceback)
SELECT c.id, f.status::pgqueuer_status, c.entrypoint, c.priority, f.traceback
FROM changed c JOIN f ON f.id = c.id
"""


@dataclass(frozen=True)
class Entry:
    """A payload to store: where it was read (``queue:<name>``, ``schedule``, ``retry``,
    ``dead``), when its job is due (epoch seconds; None: now) and whether it is dead."""

    payload: Payload
    source: str
    run_at: float | None = None
    dead: bool = False


@dataclass
class Stored:
    """What :func:`store` did: payloads taken now, replays skipped, payloads kept as failed."""

    taken: list[Entry] = field(default_factory=list)
    replayed: int = 0
    kept: list[tuple[Entry, PayloadError]] = field(default_factory=list)


@dataclass
class _Note:
    """The attempts, state and error one stored job gets (step 3)."""

    job_id: int
    attempts: int
    status: str
    error_type: str
    message: str
    detail: str
    context: dict[str, Any]


async def store(session: AsyncSession, redis: aioredis.Redis, entries: list[Entry]) -> Stored:
    """Store ``entries`` in the session's open transaction (see the module docstring)."""
    result = Stored()
    first: dict[str, Entry] = {}
    for entry in entries:
        first.setdefault(entry.payload.key, entry)
    connection = await queue.asyncpg_connection(session)
    taken = {
        row["key"]
        for row in await connection.fetch(
            _TAKE, list(first), [e.payload.ruby_class for e in first.values()]
        )
    }
    result.taken = [entry for key, entry in first.items() if key in taken]
    result.replayed = len(entries) - len(result.taken)
    notes: list[_Note] = []
    jobs: list[tuple[Entry, NewJob]] = []
    # Uploads take their commit's lock: in one order, so two batches never wait on each other.
    for entry in sorted(result.taken, key=_lock_order):
        request, problem = entry.payload.request, entry.payload.problem
        if isinstance(request, CoverageUpload):
            try:
                async with session.begin_nested(), enqueued_by(_origin(entry)):
                    job_id = await _store_upload(session, redis, request)
            except UploadError as exc:
                problem = PayloadError(INVALID_ARGUMENTS, f"ProcessCoverageJob: {exc}")
            else:
                notes.extend(_failure_note(entry, job_id))
                continue
        if problem is not None:
            result.kept.append((entry, problem))
            kept = queue.session_registry(session).resolve(KEPT_JOB)
            args = kept.validate({"payload": entry.payload.text})
            jobs.append((entry, NewJob(kept, args, dedupe=False, origin=_origin(entry))))
        elif isinstance(request, JobRequest):
            jobs.append((entry, _new_job(entry, request)))
    ids = await queue.insert_jobs(session, [job for _, job in jobs])
    problems = {id(entry): problem for entry, problem in result.kept}
    for (entry, _), job_id in zip(jobs, ids, strict=True):
        if id(entry) in problems:
            notes.append(_kept_note(entry, problems[id(entry)], job_id))
        else:
            notes.extend(_failure_note(entry, job_id))
    if notes:
        await connection.execute(
            _ANNOTATE,
            [n.job_id for n in notes],
            [n.attempts for n in notes],
            [n.status for n in notes],
            [_traceback(n) for n in notes],
        )
    return result


async def submit(session: AsyncSession, redis: aioredis.Redis, request: Request) -> None:
    """Enqueue one request now, in the session's transaction (a kept payload run again)."""
    if isinstance(request, CoverageUpload):
        await _store_upload(session, redis, request)
    else:
        await queue.insert_jobs(session, [NewJob(request.definition, request.args)])


async def _store_upload(
    session: AsyncSession, redis: aioredis.Redis, upload: CoverageUpload
) -> int | None:
    stored = await store_upload(
        session,
        redis,
        repository_id=upload.repository_id,
        sha=upload.sha,
        coverage=canonical_coverage(upload.data),
    )
    return stored.job_id


def _lock_order(entry: Entry) -> tuple[int, str]:
    request = entry.payload.request
    return (request.repository_id, request.sha) if isinstance(request, CoverageUpload) else (0, "")


def _new_job(entry: Entry, request: JobRequest) -> NewJob:
    delay = entry.run_at - time.time() if entry.run_at is not None else 0.0
    # A dead job is held as failed: inserted even when a copy with its dedupe key waits.
    return NewJob(
        request.definition,
        request.args,
        delay=delay,
        dedupe=not entry.dead,
        origin=_origin(entry),
    )


def _origin(entry: Entry) -> str:
    """What a job taken in from Sidekiq is recorded as enqueued by: ``sidekiq:<jid>``."""
    return f"sidekiq:{entry.payload.key}"


def _context(entry: Entry) -> dict[str, Any]:
    return {"source": entry.source, "key": entry.payload.key, "class": entry.payload.ruby_class}


def _kept_note(entry: Entry, problem: PayloadError, job_id: int | None) -> _Note:
    assert job_id is not None  # inserted without a dedupe key
    return _Note(
        job_id,
        attempts=0,
        status="failed",
        error_type=type(problem).__name__,
        message=str(problem),
        detail=f"Sidekiq payload from {entry.source} kept: {problem.kind}",
        context={**_context(entry), "reason": problem.kind},
    )


def _failure_note(entry: Entry, job_id: int | None) -> list[_Note]:
    """Sidekiq's attempts and last error for the job of ``entry``, when it failed there."""
    failure = entry.payload.failure
    if job_id is None or (failure is None and not entry.dead):
        return []
    count = failure.retry_count + 1 if failure else 0
    first_failed = failure.failed_at if failure else None
    when = (
        f", first failed at {datetime.fromtimestamp(first_failed, UTC):%Y-%m-%d %H:%M:%S} UTC"
        if first_failed is not None
        else ""
    )
    return [
        _Note(
            job_id,
            attempts=count,
            status="failed" if entry.dead else "queued",
            error_type=failure.error_class if failure else "SidekiqDeadJob",
            message=failure.message if failure else "in Sidekiq's dead set",
            detail=f"Sidekiq {entry.source}: {count} failed run(s){when}",
            context=_context(entry),
        )
    ]


def _traceback(note: _Note) -> str:
    """The log row's error in PgQueuer's shape (what ``jobs show`` and the dashboard read)."""
    return TracebackRecord(
        job_id=JobId(note.job_id),
        timestamp=datetime.now(UTC),
        exception_type=note.error_type,
        exception_message=note.message,
        traceback=note.detail,
        additional_context=note.context,
    ).model_dump_json()
