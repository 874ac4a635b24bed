"""Dashboard pages with 100,000 jobs in the queue and 100,000 runs in the job history: prints
each page's answer time in milliseconds and writes them to ``bench/results/dashboard.json``.

``python bench/dashboard.py [--jobs N] [--runs M] [--repeat R]`` creates a fresh migrated
database (on ``COCOV_TEST_DATABASE_URL``, else an embedded PostgreSQL and Redis in a temporary
directory), inserts N jobs with ``generate_series`` (a fifth each queued, scheduled, retrying,
running, failed; failed and retrying ones with a log row carrying a traceback) plus two
finished log rows per job, and M finished runs over the last week
(:func:`cocov_jobs.testing.history_data.fill_history`: 50 repositories, their commits, eight
jobs, some retried, failed or deferred), then requests every page R times through the ASGI app
with a bearer service token and prints the median, worst and first time per page: the queue
pages, the finished list unfiltered, by each filter and a page further, a finished job, the
metrics (its first request rolls up the week's hours, as the first view after filling the
history does), the repositories and one repository. The target: every median under
:data:`TARGET_MS`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import statistics
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import httpx

from cocov_jobs import jobs as product_jobs
from cocov_jobs.config import Settings
from cocov_jobs.crypto import new_service_token, service_token_digest
from cocov_jobs.db.session import asyncpg_dsn
from cocov_jobs.services import open_services
from cocov_jobs.testing.databases import scratch_database, test_servers
from cocov_jobs.testing.history_data import fill_history
from cocov_jobs.web.app import create_app

#: Median page answer time the dashboard must stay under (ms).
TARGET_MS = 150.0
RESULTS_PATH = Path(__file__).parent / "results" / "dashboard.json"
STATES = ("queued", "scheduled", "retrying", "running", "failed")

_JOBS = """
INSERT INTO pgqueuer (priority, entrypoint, payload, status, attempts, execute_after, created)
SELECT 0, 'update_commits_author', convert_to('{"user_id": ' || g || '}', 'UTF8'),
       (CASE g % 5 WHEN 3 THEN 'picked' WHEN 4 THEN 'failed' ELSE 'queued' END)::pgqueuer_status,
       CASE WHEN g % 5 IN (2, 4) THEN 3 ELSE 0 END,
       CASE WHEN g % 5 IN (1, 2) THEN now() + interval '1 hour' ELSE now() END,
       now() - (g || ' seconds')::interval
FROM generate_series(1, $1::int) AS g
"""

_LOG = """
INSERT INTO pgqueuer_log (job_id, status, entrypoint, priority, traceback, created)
SELECT q.id, s.status::pgqueuer_status, q.entrypoint, 0,
       CASE WHEN s.status = 'failed' THEN jsonb_build_object(
         'exception_type', 'TransientError', 'exception_message', 'GitHub 502',
         'traceback', 'Traceback (most recent call last): ...') END,
       now() - (q.id % 3600 || ' seconds')::interval
FROM pgqueuer q CROSS JOIN (VALUES ('successful'), ('failed')) AS s(status)
"""


@contextlib.asynccontextmanager
async def database(admin_url: str, jobs: int, runs: int) -> AsyncIterator[tuple[str, str]]:
    """(URL, service token) of a fresh database holding ``jobs`` jobs and ``runs`` runs;
    dropped afterwards."""
    async with scratch_database(admin_url, prefix="cocov_bench_dashboard") as url:
        conn = await asyncpg.connect(asyncpg_dsn(url))
        token = new_service_token()
        try:
            await conn.execute(_JOBS, jobs)
            await conn.execute(_LOG)
            await fill_history(conn, runs)
            owner = await conn.fetchval(
                "INSERT INTO users (login, github_id, github_token, admin, created_at, updated_at)"
                " VALUES ('bench', 1, 'x', true, now(), now()) RETURNING id"
            )
            await conn.execute(
                "INSERT INTO service_tokens (token_hash, description, owner_id, created_at,"
                " updated_at) VALUES ($1, 'bench', $2, now(), now())",
                service_token_digest(token),
                owner,
            )
            await conn.execute("ANALYZE")
        finally:
            await conn.close()
        yield url, token


async def measure(url: str, redis_url: str, token: str, repeat: int) -> dict[str, list[float]]:
    async with open_services(
        Settings(),
        registry=product_jobs.registry(),
        database_url=url,
        redis_url=redis_url,
        redis_cache_url=redis_url,
    ) as services:
        app = create_app(services)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(
            transport=transport,
            base_url="http://bench",
            headers={"Authorization": f"bearer {token}"},
        ) as client:
            async with services.raw_connection() as conn:
                middle = await conn.fetchval(
                    "SELECT id FROM pgqueuer ORDER BY id OFFSET (SELECT count(*) / 2 FROM pgqueuer)"
                    " LIMIT 1"
                )
                run = await conn.fetchrow(
                    "SELECT id, job_id, arguments -> 'commit_id' AS commit_id FROM cocov_jobs_runs"
                    " WHERE job = 'process_commit' ORDER BY id"
                    " OFFSET (SELECT count(*) / 20 FROM cocov_jobs_runs) LIMIT 1"
                )
                repository = await conn.fetchval("SELECT id FROM repositories ORDER BY id LIMIT 1")
            day = datetime.now(UTC) - timedelta(days=1)
            pages = [
                "/dashboard",
                *(f"/dashboard/state/{s}" for s in STATES),
                *(f"/dashboard/state/{s}?before={middle}" for s in ("queued", "failed")),
                f"/dashboard/jobs/{middle}",
                "/dashboard/finished",
                f"/dashboard/finished?before={run['id']}",
                "/dashboard/finished?job=process_commit",
                "/dashboard/finished?outcome=failed",
                "/dashboard/finished?job=process_commit&outcome=failed",
                f"/dashboard/finished?since={day - timedelta(days=1):%Y-%m-%dT%H:%M}"
                f"&until={day:%Y-%m-%dT%H:%M}",
                f"/dashboard/finished?argument={run['commit_id']}",
                f"/dashboard/finished?argument=repository_id%3D{repository}",
                f"/dashboard/jobs/{run['job_id']}",
                "/dashboard/metrics",
                "/dashboard/repositories",
                f"/dashboard/repositories/{repository}",
                "/dashboard/schedules",
                "/dashboard/workers",
                "/metrics",
            ]
            times: dict[str, list[float]] = {page: [] for page in pages}
            for _ in range(repeat):
                for page in pages:
                    started = time.perf_counter()
                    answer = await client.get(page)
                    times[page].append((time.perf_counter() - started) * 1000)
                    answer.raise_for_status()
    return times


async def main(jobs: int, runs: int, repeat: int, results: Path) -> int:
    with test_servers(prefix="cocov-bench-dashboard-") as (admin_url, redis_url):
        async with database(admin_url, jobs, runs) as (url, token):
            times = await measure(url, redis_url, token, repeat)
    print(f"{jobs} jobs, {runs} runs, {repeat} requests per page (ms): median / worst / first")
    figures = {
        page: {
            "median_ms": round(statistics.median(samples), 1),
            "worst_ms": round(max(samples), 1),
            "first_ms": round(samples[0], 1),
        }
        for page, samples in times.items()
    }
    for page, figure in figures.items():
        print(
            f"  {page:62} {figure['median_ms']:7.1f} / {figure['worst_ms']:7.1f}"
            f" / {figure['first_ms']:7.1f}"
        )
    slowest = max(figure["median_ms"] for figure in figures.values())
    passed = slowest <= TARGET_MS
    verdict = "PASS" if passed else "MISS"
    print(f"slowest median {slowest:.1f} ms (target <= {TARGET_MS:.0f} ms): {verdict}")
    results.parent.mkdir(parents=True, exist_ok=True)
    document = {
        "timestamp": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": f"python bench/dashboard.py --jobs {jobs} --runs {runs} --repeat {repeat}",
        "jobs": jobs,
        "runs": runs,
        "repeat": repeat,
        "target_median_ms": TARGET_MS,
        "slowest_median_ms": slowest,
        "result": verdict,
        "pages": figures,
    }
    await asyncio.to_thread(results.write_text, json.dumps(document, indent=2) + "\n")
    print(f"written: {results}")
    return 0 if passed else 1


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--jobs", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--results", type=Path, default=RESULTS_PATH)
    options = parser.parse_args()
    raise SystemExit(asyncio.run(main(options.jobs, options.runs, options.repeat, options.results)))
