"""Scenario 8 (load): 100,000 queued jobs and 20 webhook clients on a 2-core machine — every job
runs exactly once, every accepted delivery is stored, memory stays flat.

Set-up: a private PostgreSQL and Redis, ``--jobs`` (100,000) repositories and one
``compute_repository_commits_size`` job each (real jobs: advisory lock, dedupe key, an UPDATE
with a sum over commits), bulk-enqueued before the clock starts with the job's own dedupe keys;
a GitHub fake holding one repository ``web``; ``--workers`` (2) ``cocov-jobs worker`` processes
and one ``cocov-jobs web`` process (JSON logs at INFO, kept in the scratch directory).

Load: the workers drain the queue while ``--clients`` (20) clients send signed push webhooks
for ``--duration`` seconds (300; ``--duration 60`` for a quick run), each delivery with its own
id, pushing ``web``'s head commit to one of :data:`BRANCHES` branches (the first registers the
commit and enqueues one ``process_commit``; the others move a branch head). After the clients
stop, the script waits (at most :data:`DRAIN_TIMEOUT` seconds) until every job has finished.

Printed and checked (a failure each):

* throughput: jobs/s (jobs ÷ seconds from the start to the last job's success) and
  webhooks/s; p50/p99 of the webhook latency and of the job latency (enqueued → succeeded);
* lost or duplicated jobs, from ``pgqueuer_log``: every enqueued job id must have exactly one
  ``successful`` row (lost = none, duplicated = more than one);
* every webhook answered 202 is recorded (``cocov_jobs_webhook_deliveries``); none answered 5xx;
* RSS of the web and worker processes at :data:`WARM_FRACTION` of the run (after warm-up:
  imports, pools, caches) and at the end; growth beyond :data:`MAX_RSS_GROWTH` is a failure.
  The RSS right after start-up is reported too.

Usage: ``python bench/faults/load.py [--duration 300] [--jobs 100000] [--clients 20]``
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import hmac
import json
import os
import sys
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg
import httpx
from common import (
    SECRET,
    bench_settings,
    migrated_database,
    private_postgres,
    private_redis,
    process_env,
    push_body,
    scratch_dir,
    start_worker,
    stop_process,
    summary,
    until,
    web_process,
    web_server_pid,
)
from pgqueuer.db import AsyncpgDriver
from pgqueuer.queries import Queries

from cocov_jobs import jobs as product_jobs
from cocov_jobs.db.session import asyncpg_dsn
from cocov_jobs.testing import FakeGitHub

SCENARIO = "load"
JOB = "compute_repository_commits_size"
#: Jobs inserted per transaction while seeding.
ENQUEUE_BATCH = 10_000
#: Branches the pushes spread over.
BRANCHES = 50
#: Fraction of the run after which the baseline RSS is taken (start-up effects are over).
WARM_FRACTION = 0.1
#: Largest accepted RSS growth from the baseline to the end (10 %).
MAX_RSS_GROWTH = 0.10
#: Longest wait for the queue to drain once the clients stopped, seconds.
DRAIN_TIMEOUT = 900.0
#: Seconds between two looks at the queue while draining.
DRAIN_POLL = 1.0
#: Per-request timeout of the webhook clients, seconds.
REQUEST_TIMEOUT = 60.0


def rss_bytes(pid: int) -> int:
    """Resident set size of ``pid`` (``VmRSS`` of ``/proc/<pid>/status``)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of ``pid`` so far (``/proc/<pid>/stat``)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))] if ordered else 0.0


@dataclass
class Webhooks:
    """Answers and latencies of the webhook clients."""

    latencies: list[float] = field(default_factory=list)
    answers: dict[int, int] = field(default_factory=dict)


async def seed(database_url: str, jobs: int) -> tuple[list[int], float]:
    """``jobs`` repositories and one job each; return (job ids, seconds the enqueue took)."""
    definition = product_jobs.registry().resolve(JOB)
    conn = await asyncpg.connect(asyncpg_dsn(database_url))
    try:
        ids = await conn.fetch(
            "INSERT INTO repositories (name, default_branch, token, github_id, created_at,"
            " updated_at) SELECT 'load-' || g, 'main', 'crt_load_' || g, 900000000 + g, now(),"
            " now() FROM generate_series(1, $1::int) AS g RETURNING id",
            jobs,
        )
        repository_ids = [int(row["id"]) for row in ids]
        queries = Queries(AsyncpgDriver(conn))
        job_ids: list[int] = []
        started = time.monotonic()
        for at in range(0, len(repository_ids), ENQUEUE_BATCH):
            chunk = [{"repository_id": rid} for rid in repository_ids[at : at + ENQUEUE_BATCH]]
            async with conn.transaction():
                job_ids += await queries.enqueue(
                    [definition.name] * len(chunk),
                    [json.dumps(args).encode() for args in chunk],
                    [0] * len(chunk),
                    dedupe_key=[definition.dedupe_key(args) for args in chunk],
                )
        return job_ids, time.monotonic() - started
    finally:
        await conn.close()


async def send_webhooks(
    web_url: str, github_id: int, sha: str, clients: int, until_time: float
) -> Webhooks:
    """``clients`` keep-alive clients posting signed pushes until ``until_time`` (monotonic)."""
    result = Webhooks()

    async def client_loop(number: int) -> None:
        async with httpx.AsyncClient(
            base_url=web_url, timeout=REQUEST_TIMEOUT, limits=httpx.Limits(max_connections=1)
        ) as client:
            sent = 0
            while time.monotonic() < until_time:
                branch = f"load-{(number * 7 + sent) % BRANCHES}"
                raw = json.dumps(push_body(github_id, "web", sha, branch)).encode()
                headers = {
                    "Content-Type": "application/json",
                    "X-GitHub-Event": "push",
                    "X-GitHub-Delivery": str(uuid.uuid4()),
                    "X-Hub-Signature-256": "sha256="
                    + hmac.new(SECRET.encode(), raw, hashlib.sha256).hexdigest(),
                }
                started = time.perf_counter()
                response = await client.post("/v1/github/events", content=raw, headers=headers)
                result.latencies.append(time.perf_counter() - started)
                result.answers[response.status_code] = (
                    result.answers.get(response.status_code, 0) + 1
                )
                sent += 1

    await asyncio.gather(*(client_loop(n) for n in range(clients)))
    return result


async def job_figures(database_url: str, job_ids: list[int]) -> dict[str, float]:
    """Lost and duplicated jobs, job latency percentiles and the last success time."""
    conn = await asyncpg.connect(asyncpg_dsn(database_url))
    try:
        row = await conn.fetchrow(
            """
            WITH ids AS (SELECT unnest($1::bigint[]) AS job_id),
            runs AS (
                SELECT ids.job_id,
                       count(l.id) FILTER (WHERE l.status = 'successful') AS successes,
                       min(l.created) FILTER (WHERE l.status = 'queued') AS queued_at,
                       max(l.created) FILTER (WHERE l.status = 'successful') AS done_at
                FROM ids LEFT JOIN pgqueuer_log l ON l.job_id = ids.job_id
                GROUP BY ids.job_id
            )
            SELECT count(*) FILTER (WHERE successes = 0) AS lost,
                   count(*) FILTER (WHERE successes > 1) AS duplicated,
                   percentile_cont(0.5) WITHIN GROUP (
                       ORDER BY extract(epoch FROM done_at - queued_at)) AS p50,
                   percentile_cont(0.99) WITHIN GROUP (
                       ORDER BY extract(epoch FROM done_at - queued_at)) AS p99,
                   extract(epoch FROM max(done_at) - min(queued_at)) AS span
            FROM runs
            """,
            job_ids,
        )
    finally:
        await conn.close()
    assert row is not None
    return {key: float(value or 0) for key, value in row.items()}


async def recorded_deliveries(database_url: str) -> int:
    conn = await asyncpg.connect(asyncpg_dsn(database_url))
    try:
        return int(await conn.fetchval("SELECT count(*) FROM cocov_jobs_webhook_deliveries"))
    finally:
        await conn.close()


async def queue_empty(database_url: str) -> bool:
    conn = await asyncpg.connect(asyncpg_dsn(database_url))
    try:
        waiting = await conn.fetchval("SELECT count(*) FROM pgqueuer WHERE entrypoint = $1", JOB)
    finally:
        await conn.close()
    return bool(waiting == 0)


@asynccontextmanager
async def processes(
    fake: FakeGitHub, scratch: Path, database_url: str, redis_url: str, workers: int
) -> AsyncIterator[tuple[str, dict[str, int]]]:
    """The web process and the workers; yield (web URL, {name: pid})."""
    settings = bench_settings(fake, scratch / "storage")
    env = process_env(settings, database_url, redis_url)
    started = [start_worker(env, log=scratch / f"worker-{n}.log") for n in range(workers)]
    pids = {f"worker-{n}": process.pid for n, process in enumerate(started)}
    try:
        async with web_process(env, log=scratch / "web.log") as web_url:
            web_pid = web_server_pid(web_url)
            yield web_url, {"web": web_pid, **pids}
    finally:
        for process in started:
            stop_process(process)


async def scenario(args: argparse.Namespace, scratch: Path) -> dict[str, object]:
    problems: list[str] = []
    with (
        FakeGitHub(org="acme", tmp_dir=scratch / "fake") as fake,
        private_postgres(scratch / "pg") as pg,
        private_redis(scratch / "redis") as rd,
    ):
        repo = fake.add_repo("web", files={"README.md": "load\n"})
        async with migrated_database(pg.url) as database_url:
            conn = await asyncpg.connect(asyncpg_dsn(database_url))
            try:
                await conn.execute(
                    "INSERT INTO repositories (name, default_branch, token, github_id,"
                    " created_at, updated_at) VALUES ('web', 'main', 'crt_web', $1, now(), now())",
                    repo.id,
                )
            finally:
                await conn.close()
            job_ids, enqueue_seconds = await seed(database_url, args.jobs)
            print(f"enqueued {len(job_ids)} jobs in {enqueue_seconds:.1f} s", flush=True)
            async with processes(fake, scratch, database_url, rd.url(0), args.workers) as (
                web_url,
                pids,
            ):
                boot_rss = {name: rss_bytes(pid) for name, pid in pids.items()}
                started = time.monotonic()
                ends = started + args.duration
                clients = asyncio.create_task(
                    send_webhooks(web_url, repo.id, fake.head("web"), args.clients, ends)
                )
                await asyncio.sleep(args.duration * WARM_FRACTION)
                warm_rss = {name: rss_bytes(pid) for name, pid in pids.items()}
                webhooks = await clients
                await until(lambda: queue_empty(database_url), DRAIN_TIMEOUT)
                drained = time.monotonic() - started
                end_rss = {name: rss_bytes(pid) for name, pid in pids.items()}
                cpu = {name: cpu_seconds(pid) for name, pid in pids.items()}
            figures = await job_figures(database_url, job_ids)
            recorded = await recorded_deliveries(database_url)
    accepted = webhooks.answers.get(202, 0)
    sent = sum(webhooks.answers.values())
    if figures["lost"] or figures["duplicated"]:
        problems.append(f"{figures['lost']:.0f} lost, {figures['duplicated']:.0f} duplicated")
    if recorded != accepted:
        problems.append(f"{accepted} deliveries accepted but {recorded} recorded")
    if accepted != sent:
        problems.append(f"answers {webhooks.answers}, expected only 202")
    growth = {name: end_rss[name] / warm_rss[name] - 1 for name in pids}
    problems += [
        f"{name} RSS grew {value:.0%}" for name, value in growth.items() if value > MAX_RSS_GROWTH
    ]
    for problem in problems:
        print(f"FAILED: {problem}", file=sys.stderr)
    mib = 1024 * 1024
    return {
        "problems": problems,
        "figures": {
            "jobs": len(job_ids),
            "jobs_per_s": round(len(job_ids) / max(figures["span"], 1e-9), 1),
            "job_p50_s": round(figures["p50"], 2),
            "job_p99_s": round(figures["p99"], 2),
            "lost": int(figures["lost"]),
            "duplicated": int(figures["duplicated"]),
            "webhooks": sent,
            "webhooks_per_s": round(sent / args.duration, 1),
            "webhook_p50_ms": round(percentile(webhooks.latencies, 0.5) * 1000, 1),
            "webhook_p99_ms": round(percentile(webhooks.latencies, 0.99) * 1000, 1),
            "drained_s": round(drained, 1),
            **{
                f"rss_mib.{name}": f"{boot_rss[name] // mib}/{warm_rss[name] // mib}/"
                f"{end_rss[name] // mib}"
                for name in pids
            },
            **{f"cpu_s.{name}": round(value, 1) for name, value in cpu.items()},
            "load_average_1m": round(os.getloadavg()[0], 1),
            **{f"rss_growth.{name}": f"{value:+.1%}" for name, value in growth.items()},
        },
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--duration", type=float, default=300.0, help="seconds of webhooks")
    parser.add_argument("--jobs", type=int, default=100_000)
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args(argv)
    with scratch_dir(SCENARIO) as scratch:
        result = asyncio.run(scenario(args, scratch))
    figures = result["figures"]
    problems = result["problems"]
    assert isinstance(figures, dict) and isinstance(problems, list)
    return summary(
        SCENARIO,
        trials=int(figures["jobs"]) + int(figures["webhooks"]),
        failures=len(problems),
        duration_s=args.duration,
        **figures,
    )


if __name__ == "__main__":
    sys.exit(main())
