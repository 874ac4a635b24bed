"""Job administration: the queries and actions behind ``cocov-jobs jobs …``, ``stats`` and the
dashboard (one place for both).

States
======

A row of PgQueuer's ``pgqueuer`` table is shown in one of five states:

* ``queued`` — ``status = 'queued'`` and due (``execute_after <= now()``);
* ``scheduled`` — queued, not yet due, never run (``attempts = 0``, includes deferrals);
* ``retrying`` — queued, not yet due, after a failed run (``attempts > 0``);
* ``running`` — ``status = 'picked'``;
* ``failed`` — held after a permanent error or the last attempt.

Finished jobs leave the table; their runs stay in the job history
(:mod:`~cocov_jobs.engine.history`) and their state changes in ``pgqueuer_log``.

Actions
=======

* **retry** — a failed job is put back with its attempts reset; a waiting one becomes due now.
* **cancel** — a waiting job is deleted with a ``canceled`` log row; a running one too, and its
  worker is told through PgQueuer's cancellation NOTIFY (the run is interrupted).
* **delete** — any job that is not running is deleted with a ``deleted`` log row.

Lists page by keyset on ``id`` (newest first): ``before`` is the last id of the previous page.
The ``(status, id)`` index (:data:`cocov_jobs.db.migrate.QUEUE_INDEXES`) keeps every page an
index range scan.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from pgqueuer.db import AsyncpgDriver
from pgqueuer.queries import Queries
from pgqueuer.types import JobId

from cocov_jobs.engine import queue
from cocov_jobs.engine.history import RunRow, job_runs
from cocov_jobs.services import Services

#: The states a listed job can be in (see the module docstring).
STATES = ("queued", "scheduled", "retrying", "running", "failed")
#: Jobs per page of a list.
PAGE_SIZE = 50
#: A worker heartbeat older than this many seconds does not count as alive.
WORKER_ALIVE_SECONDS = 30

_STATE = """CASE
    WHEN q.status = 'picked' THEN 'running'
    WHEN q.status = 'queued' AND q.execute_after > now() AND q.attempts > 0 THEN 'retrying'
    WHEN q.status = 'queued' AND q.execute_after > now() THEN 'scheduled'
    ELSE q.status::text END"""

_STATE_FILTER = {
    "queued": "q.status = 'queued' AND q.execute_after <= now()",
    "scheduled": "q.status = 'queued' AND q.execute_after > now() AND q.attempts = 0",
    "retrying": "q.status = 'queued' AND q.execute_after > now() AND q.attempts > 0",
    "running": "q.status = 'picked'",
    "failed": "q.status = 'failed'",
    None: "TRUE",
}

_LAST_ERROR = """(SELECT l.traceback FROM pgqueuer_log l
    WHERE l.job_id = q.id AND l.traceback IS NOT NULL ORDER BY l.created DESC LIMIT 1)"""

_LIST = f"""
SELECT q.id, q.entrypoint, q.payload, {_STATE} AS state, q.attempts, q.execute_after,
       q.created, q.updated, w.host, w.pid, {_LAST_ERROR} AS error, o.enqueued_by
FROM pgqueuer q
LEFT JOIN cocov_jobs_workers w ON q.status = 'picked' AND w.id = q.queue_manager_id::text
LEFT JOIN cocov_jobs_job_origins o ON o.job_id = q.id
WHERE {{filter}} AND ($1::text IS NULL OR q.entrypoint = $1) AND ($2::bigint IS NULL OR q.id < $2)
ORDER BY q.id DESC
LIMIT $3
"""

_HISTORY = """
SELECT status::text AS status, created, traceback FROM pgqueuer_log
WHERE job_id = $1 ORDER BY created, id
"""

_ORIGIN = "SELECT enqueued_by FROM cocov_jobs_job_origins WHERE job_id = $1"

_COUNTS = f"""
SELECT q.entrypoint, {_STATE} AS state, count(*) AS n FROM pgqueuer q GROUP BY 1, 2 ORDER BY 1, 2
"""

#: Depth by state, oldest due job's wait and live workers, in one statement (metrics scrape).
_DEPTH = f"""
SELECT
  count(*) FILTER (WHERE {_STATE_FILTER["queued"]}) AS queued,
  count(*) FILTER (WHERE {_STATE_FILTER["scheduled"]}) AS scheduled,
  count(*) FILTER (WHERE {_STATE_FILTER["retrying"]}) AS retrying,
  count(*) FILTER (WHERE {_STATE_FILTER["running"]}) AS running,
  count(*) FILTER (WHERE {_STATE_FILTER["failed"]}) AS failed,
  extract(epoch FROM now() - min(q.execute_after) FILTER (WHERE {_STATE_FILTER["queued"]}))
    AS oldest,
  (SELECT count(*) FROM cocov_jobs_workers
    WHERE heartbeat_at > now() - interval '{WORKER_ALIVE_SECONDS} seconds') AS workers
FROM pgqueuer q
"""

#: Finished runs per time bucket (every bucket of the span, empty ones as 0): processed
#: (successful) and failed (held as failed).
_HISTOGRAM = """
WITH runs AS (
    SELECT date_trunc($1::text, created) AS bucket,
           count(*) FILTER (WHERE status = 'successful') AS processed,
           count(*) FILTER (WHERE status IN ('failed', 'exception')) AS failed
    FROM pgqueuer_log WHERE created > now() - $2::interval
    GROUP BY 1
)
SELECT b.bucket, coalesce(r.processed, 0) AS processed, coalesce(r.failed, 0) AS failed
FROM generate_series(date_trunc($1::text, now() - $2::interval), now(),
                     ('1 ' || $1::text)::interval) AS b(bucket)
LEFT JOIN runs r ON r.bucket = b.bucket
ORDER BY b.bucket
"""

_WORKERS = f"""
SELECT id, host, pid, concurrency, started_at, heartbeat_at, rss_bytes, running, quiet,
       heartbeat_at > now() - interval '{WORKER_ALIVE_SECONDS} seconds' AS alive
FROM cocov_jobs_workers ORDER BY host, pid
"""

_SCHEDULES = """
SELECT id, entrypoint, expression, last_run, next_run, status::text AS status
FROM pgqueuer_schedules ORDER BY entrypoint
"""

_DUE_NOW = """
UPDATE pgqueuer SET execute_after = now(), updated = now()
WHERE id = $1 AND status = 'queued'
"""

_DELETE = """
WITH gone AS (DELETE FROM pgqueuer WHERE id = $1 AND status <> 'picked'
              RETURNING id, entrypoint, priority)
INSERT INTO pgqueuer_log (job_id, status, entrypoint, priority)
SELECT id, 'deleted', entrypoint, priority FROM gone
"""


@dataclass(frozen=True)
class JobRow:
    """A job as listed: its arguments decoded and its last error, if any."""

    id: int
    job: str
    arguments: dict[str, Any]
    state: str
    attempts: int
    execute_after: datetime
    created: datetime
    updated: datetime
    worker: str | None
    error: dict[str, Any] | None
    enqueued_by: str | None

    @property
    def error_text(self) -> str:
        """``ExceptionType: message`` of the last error, or ``""``."""
        if not self.error:
            return ""
        return f"{self.error.get('exception_type', '')}: {self.error.get('exception_message', '')}"

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "job": self.job,
            "arguments": self.arguments,
            "state": self.state,
            "attempts": self.attempts,
            "enqueued_by": self.enqueued_by,
            "error": self.error_text or None,
        }


@dataclass(frozen=True)
class JobDetail:
    """One job: its row (``None`` once finished), its runs, its whole log history and what
    enqueued it (see :mod:`cocov_jobs.engine.queue`; ``None`` when not recorded)."""

    id: int
    row: JobRow | None
    history: list[dict[str, Any]]
    runs: list[RunRow]
    enqueued_by: str | None = None

    @property
    def job(self) -> str | None:
        """The job's name (``None`` only when no run or row remains)."""
        if self.row is not None:
            return self.row.job
        return self.runs[-1].job if self.runs else None

    @property
    def arguments(self) -> dict[str, Any] | None:
        if self.row is not None:
            return self.row.arguments
        return self.runs[-1].arguments if self.runs else None

    @property
    def state(self) -> str:
        """The queue state while in the queue, else ``finished: <outcome of the last run>``
        (or the last log status of a job that never ran: ``canceled``, ``deleted``)."""
        if self.row is not None:
            return self.row.state
        if self.runs:
            return f"finished: {self.runs[-1].outcome}"
        return f"finished: {self.history[-1]['status']}" if self.history else "finished"


@dataclass(frozen=True)
class Depth:
    """Jobs by state, the oldest due job's wait (``None`` when none is due), live workers."""

    by_state: dict[str, int]
    oldest_ready_seconds: float | None
    workers_alive: int


@dataclass(frozen=True)
class Stats:
    """Counts for ``stats`` and the overview page."""

    by_job: dict[str, dict[str, int]]
    by_state: dict[str, int]
    oldest_ready_seconds: float | None
    #: Processed and failed runs per minute over the last hour (see :func:`history`).
    runs: list[dict[str, Any]]
    workers: list[dict[str, Any]]

    @property
    def processed_last_hour(self) -> int:
        return sum(int(b["processed"]) for b in self.runs)

    @property
    def failed_last_hour(self) -> int:
        return sum(int(b["failed"]) for b in self.runs)

    @property
    def workers_alive(self) -> int:
        return sum(1 for w in self.workers if w["alive"])


def _json(value: Any) -> Any:
    return json.loads(value) if isinstance(value, str | bytes) else value


def _job_row(r: Any) -> JobRow:
    return JobRow(
        id=r["id"],
        job=r["entrypoint"],
        arguments=_json(r["payload"] or b"{}"),
        state=r["state"],
        attempts=r["attempts"],
        execute_after=r["execute_after"],
        created=r["created"],
        updated=r["updated"],
        worker=f"{r['host']}:{r['pid']}" if r["host"] else None,
        error=_json(r["error"]),
        enqueued_by=r["enqueued_by"],
    )


async def list_jobs(
    services: Services,
    *,
    state: str | None = None,
    job: str | None = None,
    before: int | None = None,
    limit: int = PAGE_SIZE,
) -> list[JobRow]:
    """Jobs in ``state`` (any when ``None``) of ``job``, newest first, ids below ``before``."""
    if state not in _STATE_FILTER:
        raise ValueError(f"unknown state {state!r}; one of {', '.join(STATES)}")
    entrypoint = services.registry.resolve(job).name if job else None
    async with services.raw_connection() as conn:
        rows = await conn.fetch(
            _LIST.format(filter=_STATE_FILTER[state]), entrypoint, before, limit
        )
    return [_job_row(r) for r in rows]


async def show_job(services: Services, job_id: int) -> JobDetail | None:
    """The job, its runs and its log history; ``None`` when none of them is left."""
    async with services.raw_connection() as conn:
        rows = await conn.fetch(_LIST.format(filter="q.id = $4"), None, None, 1, job_id)
        history = [
            {**dict(h), "traceback": _json(h["traceback"])}
            for h in await conn.fetch(_HISTORY, job_id)
        ]
        origin = await conn.fetchval(_ORIGIN, job_id)
    runs = await job_runs(services, job_id)
    if not rows and not history and not runs:
        return None
    row = _job_row(rows[0]) if rows else None
    return JobDetail(id=job_id, row=row, history=history, runs=runs, enqueued_by=origin)


async def depth(services: Services) -> Depth:
    """Queue depth by state, oldest ready job age and live workers (one query)."""
    async with services.raw_connection() as conn:
        r = await conn.fetchrow(_DEPTH)
    oldest = r["oldest"]
    return Depth(
        by_state={state: r[state] for state in STATES},
        oldest_ready_seconds=float(oldest) if oldest is not None else None,
        workers_alive=r["workers"],
    )


async def _counts(services: Services) -> dict[str, dict[str, int]]:
    async with services.raw_connection() as conn:
        counts = await conn.fetch(_COUNTS)
    by_job: dict[str, dict[str, int]] = {}
    for r in counts:
        by_job.setdefault(r["entrypoint"], {})[r["state"]] = r["n"]
    return by_job


async def stats(services: Services) -> Stats:
    """Counts by job and state, oldest ready job age, last hour's runs per minute, workers.

    The four queries run concurrently, each on its own pooled connection.
    """
    by_job, now, runs, alive = await asyncio.gather(
        _counts(services),
        depth(services),
        history(services, "minute", timedelta(hours=1)),
        workers(services),
    )
    return Stats(
        by_job=by_job,
        by_state=now.by_state,
        oldest_ready_seconds=now.oldest_ready_seconds,
        runs=runs,
        workers=alive,
    )


async def history(services: Services, unit: str, span: timedelta) -> list[dict[str, Any]]:
    """Processed and failed runs per ``unit`` (``minute``/``hour``) over the last ``span``."""
    async with services.raw_connection() as conn:
        return [dict(r) for r in await conn.fetch(_HISTOGRAM, unit, span)]


async def workers(services: Services) -> list[dict[str, Any]]:
    async with services.raw_connection() as conn:
        return [dict(w) for w in await conn.fetch(_WORKERS)]


async def schedules(services: Services) -> list[dict[str, Any]]:
    """Periodic schedules with their last and next run."""
    async with services.raw_connection() as conn:
        return [dict(s) for s in await conn.fetch(_SCHEDULES)]


async def _status(conn: Any, job_id: int) -> str | None:
    value = await conn.fetchval("SELECT status::text FROM pgqueuer WHERE id = $1", job_id)
    return str(value) if value is not None else None


async def retry(services: Services, job_id: int) -> bool:
    """Failed: back in the queue, attempts reset. Waiting: due now. False when neither."""
    async with services.raw_connection() as conn:
        status = await _status(conn, job_id)
        if status == "failed":
            await Queries(AsyncpgDriver(conn)).requeue_jobs([JobId(job_id)])
            return True
        return bool(status == "queued" and await conn.execute(_DUE_NOW, job_id) == "UPDATE 1")


async def retry_all_failed(services: Services) -> int:
    """Put every failed job back in the queue; return how many."""
    async with services.raw_connection() as conn:
        ids = [r["id"] for r in await conn.fetch("SELECT id FROM pgqueuer WHERE status='failed'")]
        if ids:
            await Queries(AsyncpgDriver(conn)).requeue_jobs(ids)
    return len(ids)


async def cancel(services: Services, job_id: int) -> bool:
    """Cancel a waiting or running job (see the module docstring); False for others."""
    async with services.raw_connection() as conn:
        if await _status(conn, job_id) not in ("queued", "picked"):
            return False
        await Queries(AsyncpgDriver(conn)).mark_job_as_cancelled([JobId(job_id)])
    return True


async def delete(services: Services, job_id: int) -> bool:
    """Delete a job that is not running, with a ``deleted`` log row."""
    async with services.raw_connection() as conn:
        return bool(await conn.execute(_DELETE, job_id) == "INSERT 0 1")


async def run_now(services: Services, entrypoint: str) -> int | None:
    """Enqueue the periodic job ``entrypoint`` now (no arguments); return its id."""
    async with services.sessions.begin() as session:
        return await queue.enqueue(session, entrypoint)
