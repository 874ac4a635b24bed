"""Job history: one row per finished run in ``cocov_jobs_runs``, kept for
``COCOV_HISTORY_RETENTION_DAYS`` (``prune_history`` deletes older rows).

A row keeps the job's id, name and arguments, who enqueued it, the attempt, the worker
(``host:pid``), when the job was enqueued, when this run was due, started and finished, its
outcome and its error:

* ``succeeded``; ``failed`` (held as failed: a permanent error or the last attempt);
* ``retried`` (a counted failure, the job runs again after its backoff); ``deferred`` (put back
  without using an attempt: a rate limit or a busy lock); ``interrupted`` (the worker shut down
  during the run; the job runs again at once);
* ``canceled`` (``jobs cancel`` reached the running job).

Writing costs no statement of its own: the worker records a run's end in PgQueuer's tables
anyway (finishes batched through ``log_jobs``, re-queues through ``retry_job``), and
:func:`recording_runs` prefixes that ``WITH …`` statement with the INSERT of the runs it ends,
passed as arrays (:func:`run_parameters`). So a run is in the history exactly when its end is
recorded. Running jobs are not in the history (they are in the queue); a run cut short by a
killed worker leaves no row, the run that follows does.

Who enqueued a job is read from where the engine records it at enqueue time,
``cocov_jobs_job_origins`` (:func:`~cocov_jobs.engine.queue.enqueued_by`), joined on the job
id: one record per job, shared by the queue's pages and the history. An argument whose JSON is
longer than :data:`MAX_ARGUMENT_BYTES` (a webhook's whole payload) is kept as ``"<N bytes>"``;
an error is masked like every stored error (:class:`cocov_jobs.logs.Redactor`).

Lists are newest first by ``(finished_at, id)`` and paged by keyset on the run id: each filter
(job, outcome, time range, an argument value) has an index ending with that order
(migration 0008), so a page costs the same at a million runs as at a hundred.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from pgqueuer.models import Job

from cocov_jobs.services import Services

#: Outcomes of a run (module docstring), in the order the filters offer them.
OUTCOMES = ("succeeded", "failed", "retried", "deferred", "interrupted", "canceled")
#: Outcomes counted as failures in the metrics: the run raised an error.
FAILURES = ("failed", "retried")
#: PgQueuer's final statuses (``log_jobs``) → outcome.
FINAL_OUTCOMES = {
    "successful": "succeeded",
    "failed": "failed",
    "exception": "failed",
    "canceled": "canceled",
}
#: Longest argument (its JSON, in bytes) kept as is in a run row.
MAX_ARGUMENT_BYTES = 1024
#: Runs per page of a list.
PAGE_SIZE = 50
#: Most runs shown for one job (the newest; deferrals can repeat many times).
JOB_RUNS_LIMIT = 200
#: SQL list of :data:`FAILURES`.
_FAILURES_SQL = ", ".join(f"'{outcome}'" for outcome in FAILURES)
#: Metrics windows: name → span.
WINDOWS = {"hour": timedelta(hours=1), "day": timedelta(days=1), "week": timedelta(days=7)}

# Writing ---------------------------------------------------------------------------------------


def history_arguments(payload: bytes, values: dict[str, Any]) -> str:
    """The JSON a run keeps of a job's arguments ``values`` (decoded from ``payload``): each
    argument longer than :data:`MAX_ARGUMENT_BYTES` as ``"<N bytes>"``. A small payload is kept
    as it is, without encoding it again (the common case, on the hot path)."""
    if len(payload) <= MAX_ARGUMENT_BYTES:
        return payload.decode()
    kept: dict[str, Any] = {}
    for name, value in values.items():
        size = len(json.dumps(value).encode())
        kept[name] = value if size <= MAX_ARGUMENT_BYTES else f"<{size} bytes>"
    return json.dumps(kept)


def error_text(exc: BaseException) -> str:
    """How a run's error is recorded: ``ExceptionType: message``."""
    return f"{type(exc).__name__}: {exc}"


def storable(text: str) -> str:
    """``text`` PostgreSQL can store (``text`` and ``jsonb`` refuse NUL): each NUL, raw or as a
    JSON escape, becomes U+FFFD. Applied to everything a run's end writes (arguments, error,
    PgQueuer's traceback record): one refused value would fail the whole batch of finishes."""
    return text.replace("\x00", "\ufffd").replace("\\u0000", "\\ufffd")


def _now() -> datetime:
    return datetime.now(UTC)


@dataclass
class Run:
    """One run of ``job`` on this worker, filled in as it goes, written when it ends."""

    job: Job
    worker: str
    #: The arguments as kept (:func:`history_arguments`).
    arguments: str = "{}"
    started_at: datetime = field(default_factory=_now)
    finished_at: datetime | None = None
    #: Set for runs that put the job back (``retried``, ``deferred``, ``interrupted``).
    outcome: str | None = None
    error: str | None = None

    def finish(self, outcome: str | None = None, error: str | None = None) -> None:
        self.finished_at = _now()
        self.outcome = outcome
        self.error = error

    @property
    def counted(self) -> bool:
        """Whether putting the job back uses an attempt (only ``retried`` does)."""
        return self.outcome not in ("deferred", "interrupted")

    def row(self, outcome: str, mask: Callable[[str], str]) -> tuple[Any, ...]:
        """The run's column values (in :data:`_COLUMNS` order), ended with ``outcome``; its error
        goes through ``mask`` (the secrets redactor)."""
        job = self.job
        return (
            int(job.id),
            job.entrypoint,
            storable(self.arguments),
            job.attempts + 1,
            self.worker,
            job.created,
            max(job.created, job.execute_after),
            self.started_at,
            self.finished_at or _now(),
            outcome,
            storable(mask(self.error)) if self.error is not None else None,
        )


_COLUMNS = (
    ("job_id", "bigint"),
    ("job", "text"),
    ("arguments", "jsonb"),
    ("attempt", "int"),
    ("worker", "text"),
    ("enqueued_at", "timestamptz"),
    ("due_at", "timestamptz"),
    ("started_at", "timestamptz"),
    ("finished_at", "timestamptz"),
    ("outcome", "text"),
    ("error", "text"),
)


def recording_runs(statement: str) -> str:
    """PgQueuer's ``WITH …`` ``statement`` that also inserts runs, given as the parameters that
    follow its own (:func:`run_parameters`): one statement, one round trip, one transaction."""
    head, with_, rest = statement.lstrip().partition("WITH ")
    if head or not with_:
        raise ValueError("expected a statement that starts with WITH")
    first = max((int(n) for n in re.findall(r"\$(\d+)", statement)), default=0) + 1
    names = ", ".join(name for name, _ in _COLUMNS)
    arrays = ", ".join(f"${first + i}::{kind}[]" for i, (_, kind) in enumerate(_COLUMNS))
    return (
        f"WITH cocov_jobs_history AS (INSERT INTO cocov_jobs_runs ({names})"
        f" SELECT * FROM unnest({arrays})), {rest}"
    )


def run_parameters(rows: list[tuple[Any, ...]]) -> list[list[Any]]:
    """The parameters :func:`recording_runs` adds: one array per column."""
    return [list(column) for column in zip(*rows, strict=True)] if rows else [[]] * len(_COLUMNS)


# Reading ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RunRow:
    """A recorded run."""

    id: int
    job_id: int
    job: str
    arguments: dict[str, Any]
    enqueued_by: str | None
    attempt: int
    worker: str | None
    enqueued_at: datetime
    due_at: datetime
    started_at: datetime
    finished_at: datetime
    outcome: str
    error: str | None

    @property
    def duration(self) -> float:
        """Seconds the run took."""
        return (self.finished_at - self.started_at).total_seconds()

    @property
    def wait(self) -> float:
        """Seconds from due to started (queue wait)."""
        return max(0.0, (self.started_at - self.due_at).total_seconds())

    def as_json(self) -> dict[str, Any]:
        return {
            "run": self.id,
            "id": self.job_id,
            "job": self.job,
            "arguments": self.arguments,
            "enqueued_by": self.enqueued_by,
            "attempt": self.attempt,
            "worker": self.worker,
            "started_at": self.started_at.isoformat(),
            "finished_at": self.finished_at.isoformat(),
            "duration": round(self.duration, 6),
            "wait": round(self.wait, 6),
            "outcome": self.outcome,
            "error": self.error,
        }


@dataclass(frozen=True)
class RunFilter:
    """Which runs a list shows; every field narrows it (``None``: no condition)."""

    #: Task name.
    job: str | None = None
    outcome: str | None = None
    #: Finished at or after / before.
    since: datetime | None = None
    until: datetime | None = None
    #: ``value`` (any argument equals it) or ``name=value`` (that argument equals it); numbers
    #: match their JSON number and string forms (``42`` matches ``42`` and ``"42"``).
    argument: str | None = None

    def __post_init__(self) -> None:
        if self.outcome is not None and self.outcome not in OUTCOMES:
            raise ValueError(f"unknown outcome {self.outcome!r}; one of {', '.join(OUTCOMES)}")


_ARGUMENT_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
#: Integers a JSON number in an argument can hold (our arguments are PostgreSQL bigints).
_BIGINT = 2**63


def argument_path(argument: str) -> str:
    """The jsonpath of :attr:`RunFilter.argument` (the GIN index on ``arguments`` serves it)."""
    name, sep, value = argument.partition("=")
    if not (sep and _ARGUMENT_NAME.fullmatch(name.strip())):
        name, value = "", argument
    value = value.strip()
    accessor = f"$.{json.dumps(name.strip())}" if name else "$.*"
    alternatives = [f"@ == {json.dumps(value)}"]
    if re.fullmatch(r"-?\d{1,19}", value) and -_BIGINT <= int(value) < _BIGINT:
        alternatives.append(f"@ == {int(value)}")
    return f"{accessor} ? ({' || '.join(alternatives)})"


#: The runs with who enqueued their job (``enqueued_by``, NULL when not recorded).
_RUNS = "cocov_jobs_runs r LEFT JOIN cocov_jobs_job_origins o ON o.job_id = r.job_id"
_RUN_COLUMNS = """r.id, r.job_id, r.job, r.arguments, o.enqueued_by, r.attempt, r.worker,
    r.enqueued_at, r.due_at, r.started_at, r.finished_at, r.outcome, r.error"""

_AFTER_CURSOR = """(r.finished_at, r.id) < (
    SELECT c.finished_at, c.id FROM cocov_jobs_runs c WHERE c.id = ${n})"""


def _conditions(runs: RunFilter, before: int | None) -> tuple[list[str], list[Any]]:
    """SQL conditions on ``cocov_jobs_runs r`` and their parameters ($1, $2, …)."""
    conditions: list[str] = []
    params: list[Any] = []

    def add(sql: str, value: Any) -> None:
        params.append(value)
        conditions.append(sql.format(n=len(params)))

    if runs.job is not None:
        add("r.job = ${n}", runs.job)
    if runs.outcome is not None:
        add("r.outcome = ${n}", runs.outcome)
    if runs.since is not None:
        add("r.finished_at >= ${n}", runs.since)
    if runs.until is not None:
        add("r.finished_at < ${n}", runs.until)
    if runs.argument:
        add("r.arguments @? ${n}::jsonpath", argument_path(runs.argument))
    if before is not None:
        add(_AFTER_CURSOR, before)
    return conditions or ["TRUE"], params


def _run_row(r: Any) -> RunRow:
    arguments = r["arguments"]  # text, unless the connection decodes JSON itself
    return RunRow(**{**dict(r), "arguments": _json(arguments)})


def _json(value: Any) -> Any:
    return json.loads(value) if isinstance(value, str | bytes) else value


async def list_runs(
    services: Services,
    runs: RunFilter | None = None,
    *,
    before: int | None = None,
    limit: int = PAGE_SIZE,
) -> list[RunRow]:
    """Runs matching ``runs``, newest first, after the run ``before`` (the previous page's last)."""
    conditions, params = _conditions(runs or RunFilter(), before)
    sql = (
        f"SELECT {_RUN_COLUMNS} FROM {_RUNS} WHERE {' AND '.join(conditions)}"
        f" ORDER BY r.finished_at DESC, r.id DESC LIMIT ${len(params) + 1}"
    )
    async with services.raw_connection() as conn:
        return [_run_row(r) for r in await conn.fetch(sql, *params, limit)]


_JOB_RUNS = f"""
SELECT * FROM (
    SELECT {_RUN_COLUMNS} FROM {_RUNS} WHERE r.job_id = $1
    ORDER BY r.finished_at DESC, r.id DESC LIMIT {JOB_RUNS_LIMIT}
) r ORDER BY r.finished_at, r.id
"""


async def job_runs(services: Services, job_id: int) -> list[RunRow]:
    """The runs of one job, oldest first (the newest :data:`JOB_RUNS_LIMIT`)."""
    async with services.raw_connection() as conn:
        return [_run_row(r) for r in await conn.fetch(_JOB_RUNS, job_id)]


#: Arguments :func:`runs_by_argument` looks up, each with its expression index (migration 0005).
INDEXED_ARGUMENTS = ("repository_id", "commit_id")


async def runs_by_argument(
    services: Services, values: dict[str, list[Any]], *, limit: int = PAGE_SIZE
) -> list[RunRow]:
    """The newest runs whose argument ``name`` is one of ``values[name]``, for any name given
    (each one of :data:`INDEXED_ARGUMENTS`)."""
    unknown = set(values) - set(INDEXED_ARGUMENTS)
    if unknown:
        raise ValueError(f"no index on the argument(s) {', '.join(sorted(unknown))}")
    names = [name for name in INDEXED_ARGUMENTS if values.get(name)]
    if not names:
        return []
    matches = " OR ".join(
        f"(r.arguments -> '{name}') = ANY(${i}::jsonb[])" for i, name in enumerate(names, 1)
    )
    sql = (
        f"SELECT {_RUN_COLUMNS} FROM {_RUNS} WHERE {matches}"
        f" ORDER BY r.finished_at DESC, r.id DESC LIMIT ${len(names) + 1}"
    )
    params = [[json.dumps(v) for v in values[name]] for name in names]
    async with services.raw_connection() as conn:
        return [_run_row(r) for r in await conn.fetch(sql, *params, limit)]


# Metrics ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Figures:
    """Runs of one job over one window: counts, duration and queue wait (seconds)."""

    job: str
    window: str
    runs: int
    failures: int
    duration_p50: float
    duration_p95: float
    duration_max: float
    wait_p50: float
    wait_p95: float
    wait_max: float


def _metrics_sql() -> str:
    """One pass over the longest window's runs, in job order (the index on ``job`` covers
    them), every window's aggregates filtered from it."""
    columns = []
    for name, span in WINDOWS.items():
        inside = f"finished_at > now() - interval '{int(span.total_seconds())} seconds'"
        columns += [
            f"count(*) FILTER (WHERE {inside}) AS runs_{name}",
            f"count(*) FILTER (WHERE {inside} AND outcome IN ({_FAILURES_SQL})) AS failures_{name}",
        ]
        for measure in ("duration", "wait"):  # generated columns, in seconds
            columns += [
                f"percentile_cont(ARRAY[0.5, 0.95]) WITHIN GROUP (ORDER BY {measure})"
                f" FILTER (WHERE {inside}) AS {measure}_{name}",
                f"max({measure}) FILTER (WHERE {inside}) AS {measure}_max_{name}",
            ]
    longest = int(max(WINDOWS.values()).total_seconds())
    return (
        f"SELECT job, {', '.join(columns)} FROM cocov_jobs_runs"
        f" WHERE finished_at > now() - interval '{longest} seconds' GROUP BY job ORDER BY job"
    )


_METRICS = _metrics_sql()


async def job_metrics(services: Services) -> list[Figures]:
    """Per job and window (:data:`WINDOWS`, windows without runs left out): runs, failures,
    p50/p95/max duration and queue wait, as SQL percentiles over the runs."""
    async with services.raw_connection() as conn:
        rows = await conn.fetch(_METRICS)
    return [
        Figures(
            job=r["job"],
            window=name,
            runs=r[f"runs_{name}"],
            failures=r[f"failures_{name}"],
            duration_p50=r[f"duration_{name}"][0],
            duration_p95=r[f"duration_{name}"][1],
            duration_max=r[f"duration_max_{name}"],
            wait_p50=r[f"wait_{name}"][0],
            wait_p95=r[f"wait_{name}"][1],
            wait_max=r[f"wait_max_{name}"],
        )
        for r in rows
        for name in WINDOWS
        if r[f"runs_{name}"]
    ]


#: Runs and failures per job per hour over the last day (empty hours are left out).
_HOURLY = f"""
SELECT job, date_trunc('hour', finished_at) AS bucket,
       count(*) FILTER (WHERE outcome NOT IN ({_FAILURES_SQL})) AS processed,
       count(*) FILTER (WHERE outcome IN ({_FAILURES_SQL})) AS failed
FROM cocov_jobs_runs WHERE finished_at > date_trunc('hour', now()) - interval '23 hours'
GROUP BY 1, 2
"""


async def hourly_runs(services: Services) -> dict[str, list[dict[str, Any]]]:
    """Job → the last 24 hours, oldest first: ``bucket``, ``processed``, ``failed`` per hour."""
    async with services.raw_connection() as conn:
        rows = await conn.fetch(_HOURLY)
        now = await conn.fetchval("SELECT date_trunc('hour', now())")
    hours = [now - timedelta(hours=23 - i) for i in range(24)]
    counts = {(r["job"], r["bucket"]): r for r in rows}
    return {
        job: [
            {
                "bucket": hour,
                "processed": counts[job, hour]["processed"] if (job, hour) in counts else 0,
                "failed": counts[job, hour]["failed"] if (job, hour) in counts else 0,
            }
            for hour in hours
        ]
        for job in sorted({r["job"] for r in rows})
    }
