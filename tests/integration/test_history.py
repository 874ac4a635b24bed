"""The job history on a real queue: what each run records, the filters, the metrics SQL."""

from __future__ import annotations

import asyncio
import os
import random
import socket
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import text
from tests.support.helpers import drain

from cocov_jobs import jobs as product_jobs
from cocov_jobs.engine import admin, history, queue
from cocov_jobs.engine.context import JobContext
from cocov_jobs.engine.history import RunFilter
from cocov_jobs.engine.registry import Registry, job
from cocov_jobs.engine.retry import Deferred, PermanentError
from cocov_jobs.engine.schedules import enqueue_periodic
from cocov_jobs.engine.worker import Worker
from cocov_jobs.services import Services

FAILED_ONCE: set[str] = set()
#: Set when ``_test_hold`` starts; it then waits until cancelled.
HOLD_STARTED = asyncio.Event()


@job()
async def _test_once_flaky(ctx: JobContext, key: str) -> None:
    """Fails its first run with a transient error, then succeeds."""
    if key not in FAILED_ONCE:
        FAILED_ONCE.add(key)
        raise ConnectionError(f"boom {key}")


@job()
async def _test_once_deferred(ctx: JobContext, key: str) -> None:
    if key not in FAILED_ONCE:
        FAILED_ONCE.add(key)
        raise Deferred("rate limited", delay=0.1)


@job()
async def _test_gone(ctx: JobContext, key: str) -> None:
    raise PermanentError(f"record {key} is gone")


@job()
async def _test_parent(ctx: JobContext, repository_id: int) -> None:
    async with ctx.db.begin() as session:
        await queue.enqueue(session, "_test_once_flaky", key=f"child-{repository_id}")


@job()
async def _test_big(ctx: JobContext, payload: dict[str, str]) -> None:
    """Takes a large argument."""


@job()
async def _test_nul(ctx: JobContext, text_: str) -> None:
    raise PermanentError(f"bad input {text_}")


@job()
async def _test_hold(ctx: JobContext) -> None:
    HOLD_STARTED.set()
    await asyncio.Event().wait()


@pytest.fixture
def registry() -> Registry:
    return product_jobs.registry().including(
        _test_once_flaky,
        _test_once_deferred,
        _test_gone,
        _test_parent,
        _test_big,
        _test_nul,
        _test_hold,
    )


@pytest.fixture(autouse=True)
def _reset() -> None:
    FAILED_ONCE.clear()
    HOLD_STARTED.clear()


async def _enqueue(services: Services, name: str, **args: object) -> int:
    async with services.sessions.begin() as session:
        job_id = await queue.enqueue(session, name, **args)
    assert job_id is not None
    return job_id


async def test_each_run_records_job_arguments_source_worker_times_outcome_and_error(
    services: Services,
) -> None:
    before = datetime.now(UTC)
    async with services.sessions.begin() as session, queue.enqueued_by("token:7"):
        job_id = await queue.enqueue(session, "_test_once_flaky", key="a")
    await drain(services, horizon=1)
    first, second = await history.job_runs(services, job_id or 0)
    assert (first.job, first.arguments, first.enqueued_by) == (
        "_test_once_flaky",
        {"key": "a"},
        "token:7",
    )
    assert (first.attempt, first.outcome, first.error) == (1, "retried", "ConnectionError: boom a")
    assert (second.attempt, second.outcome, second.error) == (2, "succeeded", None)
    assert second.enqueued_by == "token:7"
    assert first.worker == second.worker == f"{socket.gethostname()}:{os.getpid()}"
    assert before <= first.enqueued_at <= first.due_at <= first.started_at <= first.finished_at
    # The second run was due after the first run's backoff.
    assert second.due_at > first.finished_at and second.started_at >= second.due_at
    assert 0 <= second.duration < 5 and 0 <= second.wait < 5


async def test_deferrals_failures_and_follow_ups(services: Services) -> None:
    deferred = await _enqueue(services, "_test_once_deferred", key="d")
    gone = await _enqueue(services, "_test_gone", key="g")
    parent = await _enqueue(services, "_test_parent", repository_id=4)
    await drain(services, horizon=1)
    assert [
        (r.attempt, r.outcome, r.error) for r in await history.job_runs(services, deferred)
    ] == [
        (1, "deferred", "rate limited"),
        (1, "succeeded", None),
    ]
    (failed,) = await history.job_runs(services, gone)
    assert (failed.outcome, failed.error) == ("failed", "PermanentError: record g is gone")
    (child,) = [r for r in await history.list_runs(services) if r.arguments == {"key": "child-4"}][
        :1
    ]
    assert child.enqueued_by == f"job:{parent}"
    assert (await history.job_runs(services, parent))[0].enqueued_by is None


async def test_the_context_names_the_source_and_large_arguments_are_summarized(
    services: Services,
) -> None:
    with queue.enqueued_by("webhook:d-1"):
        job_id = await _enqueue(services, "_test_big", payload={"body": "x" * 5000})
    assert (await admin.list_jobs(services))[0].enqueued_by == "webhook:d-1"
    await drain(services, horizon=0)
    (run,) = await history.job_runs(services, job_id)
    assert run.enqueued_by == "webhook:d-1"
    assert run.arguments == {"payload": "<5012 bytes>"}


async def test_nul_characters_are_stored_as_replacement_characters(services: Services) -> None:
    job_id = await _enqueue(services, "_test_nul", text_="a\x00b")
    await drain(services, horizon=0)
    (run,) = await history.job_runs(services, job_id)
    assert run.arguments == {"text_": "a\ufffdb"}
    assert run.error == "PermanentError: bad input a\ufffdb"


async def test_the_history_never_holds_up_the_queue(services: Services) -> None:
    """Without its table (a database not upgraded yet), jobs still finish and retry."""
    async with services.engine.begin() as conn:
        await conn.execute(text("ALTER TABLE cocov_jobs_runs RENAME TO cocov_jobs_runs_away"))
    done = await _enqueue(services, "_test_once_flaky", key="q")
    await drain(services, horizon=1)
    assert await admin.list_jobs(services) == []  # retried, then finished
    async with services.engine.begin() as conn:
        await conn.execute(text("ALTER TABLE cocov_jobs_runs_away RENAME TO cocov_jobs_runs"))
    assert await history.job_runs(services, done) == []
    detail = await admin.show_job(services, done)
    assert detail is not None
    statuses = [h["status"] for h in detail.history]
    assert statuses[-1] == "successful" and "queued" in statuses[1:]  # the retry was recorded


async def test_periodic_jobs_are_enqueued_by_the_schedule(services: Services) -> None:
    await enqueue_periodic(services, "prune_history")
    (row,) = await admin.list_jobs(services)
    assert (row.job, row.enqueued_by) == ("prune_history", "schedule")


async def test_a_canceled_run_is_recorded(services: Services) -> None:
    job_id = await _enqueue(services, "_test_hold")
    worker = Worker(services, concurrency=1)
    running = asyncio.create_task(worker.run())
    await asyncio.wait_for(HOLD_STARTED.wait(), 30)
    assert await admin.cancel(services, job_id)
    async with asyncio.timeout(30):
        while not await history.job_runs(services, job_id):  # noqa: ASYNC110 - no event to await
            await asyncio.sleep(0.05)
    worker.stop()
    await asyncio.wait_for(running, 30)
    (run,) = await history.job_runs(services, job_id)
    assert run.outcome == "canceled" and run.duration >= 0


async def test_a_run_interrupted_by_shutdown_is_recorded(services: Services) -> None:
    job_id = await _enqueue(services, "_test_hold")
    worker = Worker(services, concurrency=1)
    worker.shutdown_timeout = 0.2
    running = asyncio.create_task(worker.run())
    await asyncio.wait_for(HOLD_STARTED.wait(), 30)
    worker.stop()
    await asyncio.wait_for(running, 30)
    (run,) = await history.job_runs(services, job_id)
    assert (run.outcome, run.attempt) == ("interrupted", 1)
    (row,) = await admin.list_jobs(services)
    assert row.attempts == 0  # not counted


# Filters and metrics, on rows written directly (exact times) --------------------------------

_INSERT = text(
    """
    INSERT INTO cocov_jobs_runs (job_id, job, arguments, attempt, worker, enqueued_at, due_at,
        started_at, finished_at, outcome, error)
    VALUES (:job_id, :job, CAST(:arguments AS jsonb), 1, 'h:1', :due, :due, :started,
        :finished, :outcome, NULL)
    """
)


async def _runs(services: Services, rows: list[dict[str, object]]) -> None:
    async with services.sessions.begin() as session:
        await session.execute(_INSERT, rows)


def _row(
    job_id: int,
    job: str,
    arguments: str,
    *,
    ago: float,
    took: float = 1.0,
    waited: float = 0.0,
    outcome: str = "succeeded",
) -> dict[str, object]:
    finished = datetime.now(UTC) - timedelta(seconds=ago)
    started = finished - timedelta(seconds=took)
    return {
        "job_id": job_id,
        "job": job,
        "arguments": arguments,
        "due": started - timedelta(seconds=waited),
        "started": started,
        "finished": finished,
        "outcome": outcome,
    }


async def test_filters_and_keyset_pages(services: Services) -> None:
    await _runs(
        services,
        [
            _row(1, "process_commit", '{"commit_id": 42}', ago=10),
            _row(2, "update_repo_permissions", '{"repository_id": 42}', ago=20, outcome="failed"),
            _row(3, "process_coverage", '{"repository_id": 7, "sha": "42"}', ago=30),
            _row(4, "process_commit", '{"commit_id": 5}', ago=7200, outcome="retried"),
        ],
    )

    async def ids(runs: RunFilter | None = None, **kw: object) -> list[int]:
        return [r.job_id for r in await history.list_runs(services, runs, **kw)]  # type: ignore[arg-type]

    assert await ids() == [1, 2, 3, 4]
    assert await ids(RunFilter(job="process_commit")) == [1, 4]
    assert await ids(RunFilter(outcome="failed")) == [2]
    assert await ids(RunFilter(job="process_commit", outcome="retried")) == [4]
    now = datetime.now(UTC)
    assert await ids(RunFilter(since=now - timedelta(hours=1))) == [1, 2, 3]
    assert await ids(RunFilter(until=now - timedelta(hours=1))) == [4]
    # Any argument equal to 42 (number or string), or one named argument.
    assert await ids(RunFilter(argument="42")) == [1, 2, 3]
    assert await ids(RunFilter(argument="repository_id=42")) == [2]
    assert await ids(RunFilter(argument="sha = 42")) == [3]
    assert await ids(RunFilter(argument='x"]) || true')) == []  # quoted, never SQL or jsonpath
    first = await history.list_runs(services, limit=2)
    assert [r.job_id for r in await history.list_runs(services, before=first[-1].id)] == [3, 4]
    with pytest.raises(ValueError, match="unknown outcome"):
        RunFilter(outcome="exploded")


async def test_metrics_per_job_and_window_are_sql_percentiles(services: Services) -> None:
    # process_commit: 20 runs in the last hour taking 1..20 s and waiting 0..19 s; one failed.
    recent = [
        _row(
            i,
            "process_commit",
            "{}",
            ago=60,
            took=i,
            waited=i - 1,
            outcome="failed" if i == 20 else "succeeded",
        )
        for i in range(1, 21)
    ]
    # ...and one 3 hours ago taking 100 s (day and week only); one 3 days ago (week only).
    older = [
        _row(21, "process_commit", "{}", ago=3 * 3600, took=100),
        _row(22, "process_commit", "{}", ago=3 * 86400, took=200, outcome="retried"),
        _row(23, "update_commits_author", "{}", ago=8 * 86400),  # outside every window
    ]
    await _runs(services, recent + older)
    figures = {(f.job, f.window): f for f in await history.job_metrics(services)}
    assert set(figures) == {("process_commit", w) for w in ("hour", "day", "week")}
    hour, day, week = (figures["process_commit", w] for w in ("hour", "day", "week"))
    assert (hour.runs, hour.failures, day.runs, week.runs, week.failures) == (20, 1, 21, 22, 2)
    # percentile_cont interpolates: p50 of 1..20 is 10.5, p95 is 19.05.
    assert (hour.duration_p50, hour.duration_p95, hour.duration_max) == pytest.approx(
        (10.5, 19.05, 20)
    )
    assert (hour.wait_p50, hour.wait_p95, hour.wait_max) == pytest.approx((9.5, 18.05, 19))
    assert (day.duration_max, week.duration_max) == pytest.approx((100, 200))
    charts = await history.hourly_runs(services)
    assert list(charts) == ["process_commit"]
    assert len(charts["process_commit"]) == 24
    assert sum(b["processed"] for b in charts["process_commit"]) == 20  # 19 + the 3-hour-old one
    assert sum(b["failed"] for b in charts["process_commit"]) == 1


# Hourly roll-ups: the day and week figures at a million runs -------------------------------


async def _scalar(services: Services, sql: str) -> object:
    async with services.engine.connect() as conn:
        return await conn.scalar(text(sql))


async def _exact(services: Services, job: str, span: timedelta) -> dict[str, float]:
    """The exact figures of ``job`` over the last ``span``, straight from the runs."""
    sql = text(
        f"""
        SELECT count(*) AS runs,
               count(*) FILTER (WHERE outcome IN ('failed', 'retried')) AS failures,
               percentile_cont(0.5) WITHIN GROUP (ORDER BY duration) AS duration_p50,
               percentile_cont(0.95) WITHIN GROUP (ORDER BY duration) AS duration_p95,
               max(duration) AS duration_max,
               percentile_cont(0.5) WITHIN GROUP (ORDER BY wait) AS wait_p50,
               percentile_cont(0.95) WITHIN GROUP (ORDER BY wait) AS wait_p95,
               max(wait) AS wait_max
        FROM cocov_jobs_runs
        WHERE job = :job AND finished_at > now() - interval '{int(span.total_seconds())} seconds'
        """
    )
    async with services.engine.connect() as conn:
        return dict((await conn.execute(sql, {"job": job})).mappings().one())


def _spread_runs(count: int, seed: int) -> list[dict[str, object]]:
    """``count`` runs of two jobs over the last week (none within a minute of a window's edge),
    durations and waits log-uniform from 0.1 ms to an hour, some exactly 0, 1 in 10 failed."""
    rng = random.Random(seed)
    edges = [w.total_seconds() for w in history.WINDOWS.values()]
    rows = []
    while len(rows) < count:
        ago = rng.uniform(0, 7 * 86400 - 120)
        if any(abs(ago - edge) < 60 for edge in edges):
            continue
        n = len(rows)
        rows.append(
            _row(
                n,
                ("process_commit", "process_coverage")[n % 2],
                "{}",
                ago=ago,
                took=0.0 if n % 50 == 0 else 10 ** rng.uniform(-4, 3.5),
                waited=0.0 if n % 3 == 0 else 10 ** rng.uniform(-4, 3.5),
                outcome="failed" if n % 10 == 0 else "succeeded",
            )
        )
    return rows


def _close(approximate: float, exact: float) -> bool:
    """Within the stated error of the rolled-up percentiles: 5 %, or 0.5 ms under 1 ms."""
    return abs(approximate - exact) <= max(0.05 * exact, 0.0005)


async def test_day_and_week_come_from_hourly_rollups_within_the_stated_error(
    services: Services,
) -> None:
    await _runs(services, _spread_runs(6000, seed=14))
    figures = {(f.job, f.window): f for f in await history.job_metrics(services)}
    # Only complete hours that ended before the safety margin are rolled up.
    rolled = await _scalar(services, "SELECT count(DISTINCT hour) FROM cocov_jobs_run_hours")
    assert isinstance(rolled, int) and 160 <= rolled <= 168
    newest = await _scalar(
        services,
        "SELECT max(hour) + interval '1 hour' <= now() - interval"
        f" '{int(history.ROLL_UP_MARGIN.total_seconds())} seconds' FROM cocov_jobs_run_hours",
    )
    assert newest is True
    for name in ("process_commit", "process_coverage"):
        for window, span in history.WINDOWS.items():
            exact = await _exact(services, name, span)
            got = figures[name, window]
            # Counts and maxima are exact in every window.
            assert (got.runs, got.failures) == (exact["runs"], exact["failures"]), window
            assert (got.duration_max, got.wait_max) == pytest.approx(
                (exact["duration_max"], exact["wait_max"])
            )
            for figure in ("duration_p50", "duration_p95", "wait_p50", "wait_p95"):
                if window == "hour":  # from the runs themselves: exact
                    assert getattr(got, figure) == pytest.approx(exact[figure]), (window, figure)
                else:
                    assert _close(getattr(got, figure), exact[figure]), (window, figure, got)
    # Rolled once: the next request reads the roll-ups and gives the same figures.
    rows = await _scalar(services, "SELECT count(*) FROM cocov_jobs_run_hours")
    again = {(f.job, f.window): f for f in await history.job_metrics(services)}
    assert await _scalar(services, "SELECT count(*) FROM cocov_jobs_run_hours") == rows
    assert again == figures


async def test_runs_recorded_late_near_the_hour_boundary_are_counted(services: Services) -> None:
    """A run's end can commit a little after its ``finished_at`` (a batched finish): the hours
    within the safety margin are read from the runs, never frozen in a roll-up."""
    await _runs(services, [_row(1, "process_commit", "{}", ago=5 * 3600)])
    (before,) = [f for f in await history.job_metrics(services) if f.window == "week"]
    assert before.runs == 1
    # Recorded now, finished just inside the margin (possibly in the previous hour).
    late = history.ROLL_UP_MARGIN.total_seconds() - 30
    await _runs(services, [_row(2, "process_commit", "{}", ago=late)])
    figures = {f.window: f for f in await history.job_metrics(services)}
    assert (figures["hour"].runs, figures["day"].runs, figures["week"].runs) == (1, 2, 2)
    charts = await history.hourly_runs(services)
    assert sum(b["processed"] for b in charts["process_commit"]) == 2


async def test_concurrent_requests_roll_each_hour_once(services: Services) -> None:
    await _runs(services, _spread_runs(2000, seed=27))
    results = await asyncio.gather(
        *(history.job_metrics(services) for _ in range(4)),
        history.hourly_runs(services),
    )
    first = results[0]
    assert all(r == first for r in results[1:4])
    duplicated = await _scalar(
        services,
        "SELECT count(*) FROM (SELECT hour, job FROM cocov_jobs_run_hours"
        " GROUP BY 1, 2 HAVING count(*) > 1) d",
    )
    assert duplicated == 0
    rolled_runs = await _scalar(services, "SELECT sum(runs) FROM cocov_jobs_run_hours")
    runs_in_rolled_hours = await _scalar(
        services,
        "SELECT count(*) FROM cocov_jobs_runs r WHERE EXISTS (SELECT 1 FROM cocov_jobs_run_hours"
        " h WHERE h.job = r.job AND r.finished_at >= h.hour"
        " AND r.finished_at < h.hour + interval '1 hour')",
    )
    assert rolled_runs == runs_in_rolled_hours
