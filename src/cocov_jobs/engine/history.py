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

The per-job metrics (:func:`job_metrics`, :func:`hourly_runs`) read hourly roll-ups,
``cocov_jobs_run_hours`` (migration 0009): per job and complete UTC hour, runs, failures, the
longest duration and wait, and log-scale histograms of both (:data:`HISTOGRAM_RATIO`). An hour
is rolled up once it ended :data:`ROLL_UP_MARGIN` ago, by the first reader after that or by
``prune_history`` (:func:`roll_up_hours`); the runs of each window's incomplete first hour and
from the first hour not rolled up are read as they are. So counts and maxima are exact, the
hour window's percentiles too (``percentile_cont`` over its runs), and the day's and week's
percentiles are within 5 % (decision 27); a view reads about a thousand roll-ups and a few
hours of runs whatever the history holds.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from pgqueuer.models import Job
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

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


#: Hours that ended longer ago than this are rolled up; newer runs are read as they are (a run's
#: end can commit a little after its ``finished_at``: a batched finish, a reconnection).
ROLL_UP_MARGIN = timedelta(minutes=10)
#: The roll-ups' histograms of durations and waits (seconds), log-scale: bucket 0 holds values
#: under :data:`HISTOGRAM_BASE`, bucket i ≥ 1 [BASE·RATIO^(i-1), BASE·RATIO^i), the last one
#: everything from about 11 days. A percentile read from them takes the geometric middle of each
#: bucket (0.5 ms for bucket 0), so it is within √RATIO - 1 < 5 % of the exact one, or 0.5 ms.
HISTOGRAM_BASE = 0.001
HISTOGRAM_RATIO = 1.1
HISTOGRAM_BUCKETS = 219
#: Windows no longer than an hour hold no rolled-up hour (their first complete hour is never
#: before the cutoff): read whole from the runs, their percentiles are exact.
EXACT_WINDOWS = tuple(name for name, span in WINDOWS.items() if span <= timedelta(hours=1))
_LONGEST = max(WINDOWS.values())


def _bucket_sql(measure: str) -> str:
    """The histogram bucket of column ``measure`` (seconds)."""
    return (
        f"CASE WHEN {measure} < {HISTOGRAM_BASE} THEN 0 ELSE least({HISTOGRAM_BUCKETS - 1},"
        f" 1 + floor(ln({measure} / {HISTOGRAM_BASE}) / ln({HISTOGRAM_RATIO}))::int) END"
    )


def bucket_value(bucket: int) -> float:
    """The value a percentile takes for a run in ``bucket``: its geometric middle."""
    if bucket == 0:
        return HISTOGRAM_BASE / 2
    return float(HISTOGRAM_BASE * HISTOGRAM_RATIO ** (bucket - 0.5))


def histogram_percentiles(
    counts: dict[int, int], quantiles: tuple[float, ...], maximum: float
) -> list[float]:
    """``percentile_cont`` of ``quantiles`` over runs counted by bucket, each run at
    :func:`bucket_value` (interpolated between ranks, as ``percentile_cont`` does), at most
    ``maximum`` (the exact longest)."""
    ranks: list[tuple[int, float]] = []  # (last rank in the bucket, its value), ascending
    total = 0
    for bucket in sorted(counts):
        if counts[bucket] > 0:
            total += counts[bucket]
            ranks.append((total - 1, bucket_value(bucket)))

    def value(rank: int) -> float:
        return next(v for last, v in ranks if last >= rank)

    result = []
    for q in quantiles:
        position = q * (total - 1)
        low = int(position)
        estimate = value(low)
        if position > low:
            estimate += (position - low) * (value(low + 1) - estimate)
        result.append(min(estimate, maximum))
    return result


def _hour(moment: datetime) -> datetime:
    """The start of ``moment``'s hour (UTC: every hour of the roll-ups is a UTC hour)."""
    return moment.astimezone(UTC).replace(minute=0, second=0, microsecond=0)


@dataclass(frozen=True)
class Bounds:
    """Where one reading's windows start, from the moment ``now`` of its roll-up."""

    now: datetime

    @property
    def cutoff(self) -> datetime:
        """The first hour not rolled up: the runs from it are read as they are."""
        return _hour(self.now - ROLL_UP_MARGIN)

    def start(self, span: timedelta) -> datetime:
        return self.now - span

    def first_hour(self, span: timedelta) -> datetime:
        """The first complete hour of the window ``span`` long."""
        return _hour(self.now - span) + timedelta(hours=1)

    def parameters(self) -> list[datetime]:
        """$1: the cutoff; then each window's start and first complete hour (:func:`_window`)."""
        return [self.cutoff] + [
            moment
            for span in WINDOWS.values()
            for moment in (self.start(span), self.first_hour(span))
        ]


def _window(name: str) -> tuple[str, str]:
    """The parameters ($n) of window ``name``'s start and first complete hour."""
    n = 2 + 2 * list(WINDOWS).index(name)
    return f"${n}::timestamptz", f"${n + 1}::timestamptz"


_ROLL_UP_LOCK = text("SELECT pg_advisory_xact_lock(hashtextextended('cocov_jobs_run_hours', 0))")
_NOW = text("SELECT now()")


#: The hours from ``:first`` to ``:cutoff`` (excluded) that have runs and no roll-up yet.
_MISSING_HOURS = text(
    """
    SELECT h FROM generate_series(CAST(:first AS timestamptz),
                                  CAST(:cutoff AS timestamptz) - interval '1 hour',
                                  interval '1 hour') AS h
    WHERE NOT EXISTS (SELECT 1 FROM cocov_jobs_run_hours x WHERE x.hour = h)
      AND EXISTS (SELECT 1 FROM cocov_jobs_runs r
                  WHERE r.finished_at >= h AND r.finished_at < h + interval '1 hour')
    """
)


def _roll_up_sql() -> str:
    """INSERT the roll-ups of the hours ``:hours``, each hour's runs read through the index on
    ``finished_at``."""

    def histogram(measure: str) -> str:
        return f"""
        SELECT hour, job, array_agg(b ORDER BY b) AS buckets, array_agg(n ORDER BY b) AS counts
        FROM (SELECT hour, job, {_bucket_sql(measure)} AS b, count(*)::int AS n
              FROM hour_runs GROUP BY 1, 2, 3) c
        GROUP BY 1, 2"""

    return f"""
    WITH hour_runs AS (
        SELECT hours.h AS hour, r.job, r.outcome, r.duration, r.wait
        FROM unnest(CAST(:hours AS timestamptz[])) AS hours(h) CROSS JOIN LATERAL (
            SELECT job, outcome, duration, wait FROM cocov_jobs_runs
            WHERE finished_at >= hours.h AND finished_at < hours.h + interval '1 hour'
        ) r
    ),
    totals AS (
        SELECT hour, job, count(*)::int AS runs,
               count(*) FILTER (WHERE outcome IN ({_FAILURES_SQL}))::int AS failures,
               max(duration) AS duration_max, max(wait) AS wait_max
        FROM hour_runs GROUP BY 1, 2
    ),
    durations AS ({histogram("duration")}),
    waits AS ({histogram("wait")})
    INSERT INTO cocov_jobs_run_hours (hour, job, runs, failures, duration_max, wait_max,
        duration_buckets, duration_counts, wait_buckets, wait_counts)
    SELECT t.hour, t.job, t.runs, t.failures, t.duration_max, t.wait_max,
           d.buckets, d.counts, w.buckets, w.counts
    FROM totals t JOIN durations d USING (hour, job) JOIN waits w USING (hour, job)
    ON CONFLICT DO NOTHING
    """


_ROLL_UP = text(_roll_up_sql())
#: The planner cannot tell how many runs an hour has, nor how many runs the readers' ranges hold:
#: its estimates can pass JIT's threshold, and compiling costs half a second (for 10 ms of work).
_NO_JIT = "SET LOCAL jit = off"


async def roll_up_hours(session: AsyncSession) -> datetime:
    """Roll up, in ``session``'s transaction, the complete hours of the longest window that
    ended :data:`ROLL_UP_MARGIN` ago and have no roll-up yet; return the moment it rolled up to
    (the transaction's ``now()``: the readers' windows end there). One transaction rolls at a
    time (an advisory lock: a concurrent one waits, then finds the hours done); a roll-up
    already there is left as it is."""
    await session.execute(_ROLL_UP_LOCK)
    now: datetime = (await session.execute(_NOW)).scalar_one()
    bounds = Bounds(now)
    hours = (
        (
            await session.execute(
                _MISSING_HOURS, {"first": bounds.first_hour(_LONGEST), "cutoff": bounds.cutoff}
            )
        )
        .scalars()
        .all()
    )
    if hours:
        await session.execute(text(_NO_JIT))
        await session.execute(_ROLL_UP, {"hours": list(hours)})
    return now


async def rolled_up(services: Services) -> Bounds:
    """Roll up the hours still missing (:func:`roll_up_hours`); the bounds to read by. A view
    that shows both readers passes the same bounds to each, so it rolls up once."""
    async with services.sessions.begin() as session:
        return Bounds(await roll_up_hours(session))


def _inside_runs(name: str) -> str:
    """Whether a run (finished ``at``) counts in window ``name`` beside its roll-ups: it is
    before the window's first complete hour, or from the cutoff ($1) on."""
    start, first_hour = _window(name)
    return f"at > {start} AND (at < {first_hour} OR at >= $1)"


def _inside_rolled(name: str) -> str:
    """Whether a roll-up (of the hour ``at``, before the cutoff) counts in window ``name``."""
    return f"at >= {_window(name)[1]}"


def _inside(name: str) -> str:
    """Whether a part (a run, or a roll-up when ``rolled``) counts in window ``name``."""
    return f"CASE WHEN rolled THEN {_inside_rolled(name)} ELSE {_inside_runs(name)} END"


def _raw_runs_sql() -> str:
    """The runs no roll-up stands for in some window: from the cutoff ($1), and each window's
    incomplete first hour."""
    edges = []
    for name in WINDOWS:
        start, first_hour = _window(name)
        edges.append(f"(finished_at > {start} AND finished_at < {first_hour})")
    return (
        "SELECT job, finished_at AS at, false AS rolled, outcome, duration, wait"
        f" FROM cocov_jobs_runs WHERE finished_at >= $1 OR {' OR '.join(edges)}"
    )


def _rolled_sql(columns: str) -> str:
    """Roll-ups the longest window reads (``rolled``, ``at``: the hour, then ``columns``)."""
    first_hour = _window(next(n for n, span in WINDOWS.items() if span == _LONGEST))[1]
    return (
        f"SELECT job, hour AS at, true AS rolled, {columns} FROM cocov_jobs_run_hours"
        f" WHERE hour >= {first_hour} AND hour < $1"
    )


def _metrics_sql() -> str:
    """Per job and window: runs, failures, maxima (runs and roll-ups), and the percentiles of
    :data:`EXACT_WINDOWS` (runs only)."""
    columns = []
    for name in WINDOWS:
        inside = _inside(name)
        columns += [
            f"coalesce(sum(runs) FILTER (WHERE {inside}), 0) AS runs_{name}",
            f"coalesce(sum(failures) FILTER (WHERE {inside}), 0) AS failures_{name}",
        ]
        for measure in ("duration", "wait"):
            columns.append(f"max({measure}_max) FILTER (WHERE {inside}) AS {measure}_max_{name}")
            if name in EXACT_WINDOWS:
                columns.append(
                    f"percentile_cont(ARRAY[0.5, 0.95]) WITHIN GROUP (ORDER BY {measure})"
                    f" FILTER (WHERE {inside}) AS {measure}_{name}"
                )
    return f"""
    WITH parts AS (
        SELECT job, at, rolled, 1 AS runs, (outcome IN ({_FAILURES_SQL}))::int AS failures,
               duration, wait, duration AS duration_max, wait AS wait_max
        FROM ({_raw_runs_sql()}) r
        UNION ALL
        {_rolled_sql("runs, failures, NULL::float8, NULL::float8, duration_max, wait_max")}
    )
    SELECT job, {", ".join(columns)} FROM parts GROUP BY job ORDER BY job
    """


def _histograms_sql() -> str:
    """Per job, measure and bucket: the runs in each window not in :data:`EXACT_WINDOWS`, from
    the runs and from the roll-ups (one row each: the reader adds them up)."""
    approximate = [name for name in WINDOWS if name not in EXACT_WINDOWS]
    branches = []
    for measure in ("duration", "wait"):
        counts = ", ".join(f"count(*) FILTER (WHERE {_inside_runs(n)}) AS {n}" for n in approximate)
        branches.append(
            f"SELECT job, '{measure}' AS measure, {_bucket_sql(measure)} AS bucket, {counts}"
            " FROM raw GROUP BY 1, 3"
        )
        sums = ", ".join(f"sum(u.n) FILTER (WHERE {_inside_rolled(n)}) AS {n}" for n in approximate)
        rolled = _rolled_sql(f"{measure}_buckets AS buckets, {measure}_counts AS counts")
        branches.append(
            f"SELECT job, '{measure}', u.bucket, {sums} FROM ({rolled}) h,"
            " unnest(h.buckets, h.counts) AS u(bucket, n) GROUP BY 1, 3"
        )
    return f"WITH raw AS ({_raw_runs_sql()}) {' UNION ALL '.join(branches)}"


_METRICS = _metrics_sql()
_HISTOGRAMS = _histograms_sql()
_QUANTILES = (0.5, 0.95)


async def job_metrics(services: Services, bounds: Bounds | None = None) -> list[Figures]:
    """Per job and window (:data:`WINDOWS`, windows without runs left out): runs, failures,
    p50/p95/max duration and queue wait. Counts and maxima are exact; percentiles are SQL's
    ``percentile_cont`` over the runs in :data:`EXACT_WINDOWS`, and read from the hourly
    roll-ups' histograms in the longer ones (:func:`histogram_percentiles`)."""
    parameters = (bounds or await rolled_up(services)).parameters()
    async with services.raw_connection() as conn, conn.transaction(isolation="repeatable_read"):
        await conn.execute(_NO_JIT)
        rows = await conn.fetch(_METRICS, *parameters)
        entries = await conn.fetch(_HISTOGRAMS, *parameters)
    histograms: dict[tuple[str, str, str], dict[int, int]] = {}
    for e in entries:
        for name in WINDOWS:
            if name not in EXACT_WINDOWS and e[name]:
                counts = histograms.setdefault((e["job"], name, e["measure"]), {})
                counts[e["bucket"]] = counts.get(e["bucket"], 0) + e[name]

    def percentiles(r: Any, name: str, measure: str) -> list[float]:
        if name in EXACT_WINDOWS:
            return list(r[f"{measure}_{name}"])
        counts = histograms[r["job"], name, measure]
        return histogram_percentiles(counts, _QUANTILES, r[f"{measure}_max_{name}"])

    figures = []
    for r in rows:
        for name in WINDOWS:
            if not r[f"runs_{name}"]:
                continue
            duration, wait = percentiles(r, name, "duration"), percentiles(r, name, "wait")
            figures.append(
                Figures(
                    job=r["job"],
                    window=name,
                    runs=r[f"runs_{name}"],
                    failures=r[f"failures_{name}"],
                    duration_p50=duration[0],
                    duration_p95=duration[1],
                    duration_max=r[f"duration_max_{name}"],
                    wait_p50=wait[0],
                    wait_p95=wait[1],
                    wait_max=r[f"wait_max_{name}"],
                )
            )
    return figures


#: Runs and failures per job per (UTC) hour from $1 (empty hours are left out): the roll-ups
#: before $2 (the cutoff), the runs from it.
_HOURLY = f"""
SELECT job, hour AS bucket, runs - failures AS processed, failures AS failed
FROM cocov_jobs_run_hours WHERE hour >= $1 AND hour < $2
UNION ALL
SELECT job, date_trunc('hour', finished_at, 'UTC'),
       count(*) FILTER (WHERE outcome NOT IN ({_FAILURES_SQL})),
       count(*) FILTER (WHERE outcome IN ({_FAILURES_SQL}))
FROM cocov_jobs_runs WHERE finished_at >= greatest($1, $2)
GROUP BY 1, 2
"""


async def hourly_runs(
    services: Services, bounds: Bounds | None = None
) -> dict[str, list[dict[str, Any]]]:
    """Job → the last 24 hours, oldest first: ``bucket``, ``processed``, ``failed`` per hour."""
    bounds = bounds or await rolled_up(services)
    hours = [_hour(bounds.now) - timedelta(hours=23 - i) for i in range(24)]
    async with services.raw_connection() as conn:
        rows = await conn.fetch(_HOURLY, hours[0], bounds.cutoff)
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
