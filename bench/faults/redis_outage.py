"""Scenario 3 of issue 7 — Redis outage: database work goes on, Redis work waits and completes.

A private PostgreSQL and a private ``redis-server``; one ``cocov-jobs worker`` and one
``cocov-jobs web``, both started while Redis is up. Then Redis is stopped, and while it is down:

* :data:`DB_JOBS` database-only jobs (``update_commits_author``, ``compute_repository_commits_
  size``) are enqueued and must all complete (``db_jobs_done_during_outage``);
* :data:`REDIS_JOBS` jobs that must push to Redis (``request_cache_eviction`` to the Cache
  service's queue, ``process_commit`` whose installation token and check descriptor live in
  Redis) are enqueued and must fail and be retried with backoff, not held as failed
  (``retries`` = attempts used while Redis was down);
* ``/system/probes/readiness`` answers 503 on every poll (``ready_while_down`` = 0).

Redis is then started again (same data). Readiness must come back to 200 and every Redis job
complete, each effect exactly once: one eviction task per repository, one descriptor per
commit (``max_recovery_s``: Redis back → last job done).

Usage: ``python bench/faults/redis_outage.py``
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections import Counter
from dataclasses import dataclass, field

import asyncpg
import httpx
import redis.asyncio as aioredis
from common import (
    WAIT,
    bench_settings,
    migrated_database,
    private_postgres,
    private_redis,
    process_env,
    scratch_dir,
    start_worker,
    stop_process,
    summary,
    until,
    web_process,
)

from cocov_jobs import contracts
from cocov_jobs import jobs as product_jobs
from cocov_jobs.db.session import asyncpg_dsn
from cocov_jobs.engine import queue
from cocov_jobs.services import open_services
from cocov_jobs.testing import FakeGitHub

#: Database-only jobs enqueued while Redis is down (one size job per repository, the rest
#: author links).
DB_JOBS = 100
#: Repositories: one ``request_cache_eviction`` and one ``process_commit`` each.
REPOSITORIES = 10
REDIS_JOBS = 2 * REPOSITORIES
#: ``COCOV_REPOSITORY_CACHE_MAX_SIZE``; every repository holds 3 × 60 bytes.
CACHE_QUOTA = 100
#: Each Redis job must have failed at least this many times before Redis comes back.
MIN_RETRIES_PER_JOB = 4
#: Seconds between two readiness polls.
PROBE_INTERVAL = 0.2
#: Upper bound for each phase (outage work, recovery).
PHASE_DEADLINE = 120.0
MANIFEST = 'version: "0.1.alpha"\nchecks:\n  - plugin: cocov/rubocop:v1\n'

_ATTEMPTS = "SELECT id, status::text, attempts FROM pgqueuer WHERE id = ANY($1::bigint[])"
_SUCCEEDED = (
    "SELECT count(DISTINCT job_id) FROM pgqueuer_log"
    " WHERE status = 'successful' AND job_id = ANY($1::bigint[])"
)


@dataclass
class Probe:
    """Readiness answers, split by whether Redis was meant to be down."""

    redis_down: bool = False
    while_down: Counter[int] = field(default_factory=Counter)
    while_up: Counter[int] = field(default_factory=Counter)
    last: int = 0


async def poll_readiness(base_url: str, probe: Probe) -> None:
    async with httpx.AsyncClient(base_url=base_url, timeout=10) as client:
        while True:
            try:
                status = (await client.get("/system/probes/readiness")).status_code
            except httpx.TransportError:
                status = 0
            (probe.while_down if probe.redis_down else probe.while_up)[status] += 1
            probe.last = status
            await asyncio.sleep(PROBE_INTERVAL)


async def seed(conn: asyncpg.Connection, fake: FakeGitHub) -> tuple[list[int], list[int]]:
    """Repositories (artifacts over quota, one commit each) and users; return the ids of the
    repositories and of their commits."""
    repos, commits = [], []
    for r in range(REPOSITORIES):
        name = f"svc-{r}"
        fake.add_repo(name, files={".cocov.yaml": MANIFEST, "a.rb": f"{r}\n"})
        repo_id = int(
            await conn.fetchval(
                "INSERT INTO repositories (name, default_branch, token, github_id, cache_size,"
                " created_at, updated_at) VALUES ($1, 'main', $2, $3, 180, now(), now())"
                " RETURNING id",
                name,
                f"crt_{name}",
                fake.repo(name).id,
            )
        )
        await conn.execute(
            "INSERT INTO cache_artifacts (repository_id, name, name_hash, size, engine, mime,"
            " created_at, updated_at) SELECT $1, 'a' || g, $2 || g, 60, 'e', 'm', now(), now()"
            " FROM generate_series(1, 3) AS g",
            repo_id,
            f"h{r}-",
        )
        commits.append(
            int(
                await conn.fetchval(
                    "INSERT INTO commits (repository_id, sha, author_name, author_email, message,"
                    " clone_status, clone_size, created_at, updated_at)"
                    " VALUES ($1, $2, 'Dev', 'dev@example.com', 'm', 0, 10, now(), now())"
                    " RETURNING id",
                    repo_id,
                    fake.head(name),
                )
            )
        )
        repos.append(repo_id)
    await conn.execute(
        "INSERT INTO users (login, github_id, github_token, admin, created_at, updated_at)"
        " SELECT 'u' || g, 700000 + g, 't', false, now(), now()"
        " FROM generate_series(1, $1::int) AS g",
        DB_JOBS - REPOSITORIES,
    )
    return repos, commits


async def main() -> int:
    started = time.monotonic()
    with (
        scratch_dir("redis-outage") as scratch,
        private_postgres(scratch / "pg") as pg,
        private_redis(scratch / "redis") as rd,
        FakeGitHub(org="acme", tmp_dir=scratch / "github") as fake,
    ):
        async with migrated_database(pg.url) as url:
            conn = await asyncpg.connect(asyncpg_dsn(url))
            try:
                repos, commits = await seed(conn, fake)
                users = [int(r["id"]) for r in await conn.fetch("SELECT id FROM users")]
                settings = bench_settings(
                    fake, scratch / "storage", repository_cache_max_size=CACHE_QUOTA
                )
                env = process_env(settings, url, rd.url(0))
                worker = start_worker(env, log=scratch / "worker.log")
                probe = Probe()
                try:
                    async with (
                        web_process(env, log=scratch / "web.log") as base_url,
                        open_services(
                            settings,
                            registry=product_jobs.registry(),
                            database_url=url,
                            redis_url=rd.url(0),
                            redis_cache_url=rd.url(0),
                        ) as services,
                    ):
                        poller = asyncio.create_task(poll_readiness(base_url, probe))

                        async def ready() -> bool:
                            return probe.last == 200

                        await until(ready, WAIT)
                        # The outage -------------------------------------------------------
                        rd.stop()
                        outage_started = time.monotonic()

                        async def not_ready() -> bool:
                            return probe.last == 503

                        await until(not_ready, WAIT)
                        probe.redis_down = True
                        async with services.sessions.begin() as session:
                            db_jobs = [
                                await queue.enqueue(session, "update_commits_author", user_id=u)
                                for u in users
                            ] + [
                                await queue.enqueue(
                                    session, "compute_repository_commits_size", repository_id=r
                                )
                                for r in repos
                            ]
                            redis_jobs = [
                                await queue.enqueue(
                                    session, "request_cache_eviction", repository_id=r
                                )
                                for r in repos
                            ] + [
                                await queue.enqueue(session, "process_commit", commit_id=c)
                                for c in commits
                            ]
                        db_ids = [j for j in db_jobs if j is not None]
                        redis_ids = [j for j in redis_jobs if j is not None]

                        async def db_work_done() -> bool:
                            return int(await conn.fetchval(_SUCCEEDED, db_ids)) == len(db_ids)

                        async def redis_work_retried() -> bool:
                            rows = await conn.fetch(_ATTEMPTS, redis_ids)
                            return len(rows) == len(redis_ids) and all(
                                r["status"] == "queued" and r["attempts"] >= MIN_RETRIES_PER_JOB
                                for r in rows
                            )

                        await until(db_work_done, PHASE_DEADLINE)
                        db_done = int(await conn.fetchval(_SUCCEEDED, db_ids))
                        await until(redis_work_retried, PHASE_DEADLINE)
                        rows = await conn.fetch(_ATTEMPTS, redis_ids)
                        retries = sum(int(r["attempts"]) for r in rows)
                        redis_done_early = int(await conn.fetchval(_SUCCEEDED, redis_ids))
                        outage = time.monotonic() - outage_started
                        # Redis is back ----------------------------------------------------
                        rd.start()
                        back = time.monotonic()
                        probe.redis_down = False

                        async def redis_work_done() -> bool:
                            done = int(await conn.fetchval(_SUCCEEDED, redis_ids))
                            return done == len(redis_ids)

                        await until(redis_work_done, PHASE_DEADLINE)
                        recovery = time.monotonic() - back
                        await until(ready, WAIT)
                        poller.cancel()
                    failed = int(
                        await conn.fetchval("SELECT count(*) FROM pgqueuer WHERE status = 'failed'")
                    )
                    worker_died = worker.poll() is not None
                finally:
                    stop_process(worker)
            finally:
                await conn.close()
            client = aioredis.Redis.from_url(rd.url(0))
            try:
                tasks = [
                    json.loads(t) for t in await client.lrange(contracts.HOUSEKEEPING_QUEUE, 0, -1)
                ]
                descriptors = [
                    json.loads(d) for d in await client.lrange(contracts.CHECKS_QUEUE, 0, -1)
                ]
            finally:
                await client.aclose()
    evictions = Counter(t["repository"] for t in tasks if t["task"] == "evict-artifact")
    pushed = Counter((d["repo"], d["sha"]) for d in descriptors)
    ready_while_down = sum(n for status, n in probe.while_down.items() if status != 503)
    wrong_effects = (
        sum(abs(n - 1) for n in evictions.values())
        + (REPOSITORIES - len(evictions))
        + sum(abs(n - 1) for n in pushed.values())
        + (REPOSITORIES - len(pushed))
    )
    failures = (
        (len(db_ids) - db_done)
        + redis_done_early
        + ready_while_down
        + wrong_effects
        + failed
        + int(worker_died)
    )
    return summary(
        "redis_outage",
        1,
        failures,
        db_jobs_done_during_outage=db_done,
        redis_jobs=len(redis_ids),
        retries=retries,
        readiness_503_polls=probe.while_down.get(503, 0),
        ready_while_down=ready_while_down,
        eviction_tasks=sum(evictions.values()),
        descriptors=sum(pushed.values()),
        failed=failed,
        outage_s=round(outage, 1),
        max_recovery_s=round(recovery, 2),
        seconds=round(time.monotonic() - started, 1),
    )


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
