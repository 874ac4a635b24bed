"""Scenario 1 of issue 7 — worker killed: SIGKILL never loses a job nor duplicates an effect.

Workload (:func:`seed`, :data:`WAVES` waves adding up to 200 jobs): ``process_commit`` for 60
commits of 20 repositories on the GitHub fake (each commit the head of its own branch, a
manifest with one check and a coverage minimum), ``process_coverage`` for 40 of them,
``compute_repository_commits_size``, ``update_repo_permissions`` (GitHub collaborators),
``request_cache_eviction`` (artifacts over ``COCOV_REPOSITORY_CACHE_MAX_SIZE``),
``update_commits_author`` and ``update_user_permissions`` (user tokens on the fake), 20 each.
A size job may coalesce into the copy ``process_commit`` already queued for the repository
(``coalesced``): that copy does the work.

Two ``cocov-jobs worker`` processes (``COCOV_HEARTBEAT_TIMEOUT`` = :data:`HEARTBEAT_TIMEOUT`)
run it. Before each of :data:`KILLS` kills a wave is enqueued; once the victim (the two
workers alternately) has picked jobs, it gets SIGKILL after a random delay and is started
again. Then the queue must drain.

The same workload also runs once with no kill, in a fresh database, Redis and storage. Shown:

* every one of the 200 jobs finished successfully (``lost`` = jobs without a successful run,
  ``failed`` = jobs held as failed);
* the final state equals the clean run's (:func:`final_state`: commits, check sets, coverage,
  ``coverage_histories`` rows, members, sizes, links, descriptors on ``cocov:checks``,
  eviction tasks) — ``duplicates`` counts extra history rows, descriptors and eviction tasks;
* ``median_recovery_s`` / ``max_recovery_s``: time from a kill to a job the victim held being
  picked again (heartbeat timeout, then a free slot behind the queued backlog);
  ``max_completion_s``: to its success (retries and busy-lock deferrals included).

Usage: ``python bench/faults/worker_kill.py [--seed N]``
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import signal
import statistics
import subprocess
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
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
)

from cocov_jobs import contracts
from cocov_jobs import jobs as product_jobs
from cocov_jobs.config import Settings
from cocov_jobs.db.session import asyncpg_dsn
from cocov_jobs.engine import queue
from cocov_jobs.services import Services, open_services
from cocov_jobs.testing import FakeGitHub
from cocov_jobs.testing.coverage import covered

#: SIGKILLs of a worker during the run.
KILLS = 20
#: Waves the workload is enqueued in (one before each kill).
WAVES = KILLS
REPOSITORIES = 20
#: Commits per repository (each the head of its own branch).
COMMITS_PER_REPO = 3
#: Coverage uploads per repository (for its first commits).
UPLOADS_PER_REPO = 2
#: Seconds without heartbeat after which a killed worker's jobs are picked again.
HEARTBEAT_TIMEOUT = 3.0
#: Job slots of each worker process.
CONCURRENCY = 4
#: Random delay range (seconds) between "the victim holds a job" and its SIGKILL.
KILL_DELAY = (0.0, 0.6)
#: Upper bound for the queue to drain after the last kill.
DRAIN_DEADLINE = 180.0
#: ``COCOV_REPOSITORY_CACHE_MAX_SIZE`` (bytes); every repository holds 3 × 60.
CACHE_QUOTA = 100
MANIFEST = (
    'version: "0.1.alpha"\ncoverage:\n  min_percent: 50\nchecks:\n  - plugin: cocov/rubocop:v1\n'
)
DEFAULT_SEED = 7

_VICTIM_PICKED = """
SELECT p.id FROM pgqueuer p JOIN cocov_jobs_workers w ON w.id = p.queue_manager_id::text
WHERE w.pid = $1 AND p.status = 'picked'
"""
_WORKER_ID = "SELECT id FROM cocov_jobs_workers WHERE pid = $1"
_ORPHANS = "SELECT id FROM pgqueuer WHERE status = 'picked' AND queue_manager_id::text = $1"
_UNFINISHED = "SELECT count(*) FROM pgqueuer WHERE status IN ('queued', 'picked')"


@dataclass
class Run:
    """One run of the workload: its stores and what happened."""

    database_url: str
    redis_url: str
    storage: Path
    job_ids: list[int] = field(default_factory=list)
    #: Enqueues skipped because a copy was already waiting (its run does the work).
    coalesced: int = 0
    #: (monotonic time of the kill, ids of the jobs the victim held)
    kills: list[tuple[float, list[int]]] = field(default_factory=list)


# Workload --------------------------------------------------------------------------------------


def prepare_fake(fake: FakeGitHub) -> None:
    """Repositories with a commit per branch, collaborators and users with tokens."""
    for r in range(REPOSITORIES):
        name = f"svc-{r}"
        fake.add_repo(name, files={".cocov.yaml": MANIFEST, "lib/a.rb": "1\n2\n3\n4\n"})
        for c in range(1, COMMITS_PER_REPO):
            fake.commit(name, {f"lib/b{c}.rb": "x\n"}, branch=f"b{c}")
        fake.add_collaborator(name, 10 + r, f"collab{r}", "write")
        fake.add_user(f"user{r}", 5000 + r)
        fake.grant(f"user{r}", name, "admin")


async def seed(database_url: str, fake: FakeGitHub) -> list[list[tuple[str, dict[str, Any]]]]:
    """Insert the rows; return the jobs to enqueue, split in :data:`WAVES` waves."""
    todo: list[tuple[str, dict[str, Any]]] = []
    conn = await asyncpg.connect(asyncpg_dsn(database_url))
    try:
        async with conn.transaction():
            for r in range(REPOSITORIES):
                name = f"svc-{r}"
                repo_id = await _insert(
                    conn,
                    "INSERT INTO repositories (name, default_branch, token, github_id, cache_size,"
                    " created_at, updated_at) VALUES ($1, 'main', $2, $3, 180, now(), now())"
                    " RETURNING id",
                    name,
                    f"crt_{name}",
                    fake.repo(name).id,
                )
                for a in range(3):
                    await _insert(
                        conn,
                        "INSERT INTO cache_artifacts (repository_id, name, name_hash, size, engine,"
                        " mime, created_at, updated_at) VALUES ($1, $2, $3, 60, 'e', 'm', now(),"
                        " now()) RETURNING id",
                        repo_id,
                        f"gems-{a}",
                        f"h{r}-{a}",
                    )
                user_id = await _insert(
                    conn,
                    "INSERT INTO users (login, github_id, github_token, admin, created_at,"
                    " updated_at) VALUES ($1, $2, $3, false, now(), now()) RETURNING id",
                    f"user{r}",
                    5000 + r,
                    fake.user(f"user{r}").token,
                )
                await _insert(
                    conn,
                    "INSERT INTO user_emails (user_id, email, created_at, updated_at)"
                    " VALUES ($1, $2, now(), now()) RETURNING id",
                    user_id,
                    f"dev{r}@example.com",
                )
                for c in range(COMMITS_PER_REPO):
                    branch = "main" if c == 0 else f"b{c}"
                    sha = fake.head(name, branch)
                    commit_id = await _insert(
                        conn,
                        "INSERT INTO commits (repository_id, sha, author_name, author_email,"
                        " message, clone_status, created_at, updated_at)"
                        " VALUES ($1, $2, 'Dev', $3, 'm', 0, now(), now()) RETURNING id",
                        repo_id,
                        sha,
                        f"DEV{r}@example.com",
                    )
                    await _insert(
                        conn,
                        "INSERT INTO branches (repository_id, name, head_id, created_at,"
                        " updated_at) VALUES ($1, $2, $3, now(), now()) RETURNING id",
                        repo_id,
                        branch,
                        commit_id,
                    )
                    todo.append(("process_commit", {"commit_id": commit_id}))
                    if c < UPLOADS_PER_REPO:
                        upload = await _insert(
                            conn,
                            "INSERT INTO cocov_jobs_coverage_uploads (repository_id, sha, data)"
                            " VALUES ($1, $2, CAST($3 AS jsonb)) RETURNING id",
                            repo_id,
                            sha,
                            json.dumps({"lib/a.rb": covered(3, 1)}),
                        )
                        args = {"repository_id": repo_id, "sha": sha, "upload_id": upload}
                        todo.append(("process_coverage", args))
                todo += [
                    ("compute_repository_commits_size", {"repository_id": repo_id}),
                    ("update_repo_permissions", {"repository_id": repo_id}),
                    ("request_cache_eviction", {"repository_id": repo_id}),
                    ("update_commits_author", {"user_id": user_id}),
                    ("update_user_permissions", {"user_id": user_id}),
                ]
    finally:
        await conn.close()
    random.shuffle(todo)
    return [todo[i::WAVES] for i in range(WAVES)]


async def _insert(conn: asyncpg.Connection, sql: str, *values: Any) -> int:
    return int(await conn.fetchval(sql, *values))


async def enqueue_wave(
    services: Services, wave: list[tuple[str, dict[str, Any]]]
) -> tuple[list[int], int]:
    """Enqueue a wave; return the new job ids and how many were coalesced into a waiting copy
    (a size job that ``process_commit`` already queued for the repository)."""
    ids = []
    async with services.sessions.begin() as session:
        for name, args in wave:
            job_id = await queue.enqueue(session, name, **args)
            if job_id is not None:
                ids.append(job_id)
    return ids, len(wave) - len(ids)


# Running ---------------------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def run_stores(server_url: str, redis_url: str, storage: Path) -> AsyncIterator[Run]:
    async with migrated_database(server_url) as url:
        client = aioredis.Redis.from_url(redis_url)
        await client.flushdb()
        await client.aclose()
        yield Run(url, redis_url, storage)


async def execute(
    run: Run, settings: Settings, fake: FakeGitHub, *, kills: int, rng: random.Random
) -> None:
    """Seed, start two workers, enqueue the waves (killing a worker after each), drain."""
    env = process_env(
        settings,
        run.database_url,
        run.redis_url,
        COCOV_HEARTBEAT_TIMEOUT=str(HEARTBEAT_TIMEOUT),
        COCOV_WORKER_CONCURRENCY=str(CONCURRENCY),
    )
    log = run.storage.parent / f"{run.storage.name}-workers.log"
    async with open_services(
        settings,
        registry=product_jobs.registry(),
        database_url=run.database_url,
        redis_url=run.redis_url,
        redis_cache_url=run.redis_url,
    ) as services:
        waves = await seed(run.database_url, fake)
        workers = [start_worker(env, log=log) for _ in range(2)]
        pool = await asyncpg.create_pool(asyncpg_dsn(run.database_url), min_size=1, max_size=2)
        try:
            for index, wave in enumerate(waves):
                ids, coalesced = await enqueue_wave(services, wave)
                run.job_ids += ids
                run.coalesced += coalesced
                if index < kills:
                    victim = index % 2
                    workers[victim] = await kill_and_restart(
                        run, pool, workers[victim], env, log, rng
                    )

            async def drained() -> bool:
                return int(await pool.fetchval(_UNFINISHED)) == 0

            await until(drained, DRAIN_DEADLINE)
        finally:
            for worker in workers:
                stop_process(worker)
            await pool.close()


async def kill_and_restart(
    run: Run,
    pool: asyncpg.Pool,
    worker: subprocess.Popen[bytes],
    env: dict[str, str],
    log: Path,
    rng: random.Random,
) -> subprocess.Popen[bytes]:
    """Once ``worker`` holds a job, SIGKILL it after a random delay; return its replacement."""

    async def holds_a_job() -> bool:
        return bool(await pool.fetch(_VICTIM_PICKED, worker.pid))

    await until(holds_a_job, WAIT)
    victim_id = await pool.fetchval(_WORKER_ID, worker.pid)
    await asyncio.sleep(rng.uniform(*KILL_DELAY))  # the random kill point is the fault itself
    worker.send_signal(signal.SIGKILL)
    killed_at = time.time()
    await asyncio.to_thread(worker.wait)
    # The jobs it held: still marked picked by the dead worker.
    held = [int(r["id"]) for r in await pool.fetch(_ORPHANS, victim_id)]
    run.kills.append((killed_at, held))
    return start_worker(env, log=log)


# Checking --------------------------------------------------------------------------------------


async def outcome(run: Run) -> dict[str, Any]:
    """Jobs without a successful run, jobs held as failed, and the longest recovery."""
    conn = await asyncpg.connect(asyncpg_dsn(run.database_url))
    try:
        done = {
            int(r["job_id"]): r["created"].timestamp()
            for r in await conn.fetch(
                "SELECT job_id, max(created) AS created FROM pgqueuer_log"
                " WHERE status = 'successful' GROUP BY job_id"
            )
        }
        failed = int(await conn.fetchval("SELECT count(*) FROM pgqueuer WHERE status = 'failed'"))
        picks = [
            (int(r["job_id"]), r["created"].timestamp())
            for r in await conn.fetch(
                "SELECT job_id, created FROM pgqueuer_log WHERE status = 'picked'"
            )
        ]
    finally:
        await conn.close()
    repicks = [
        min((t for j, t in picks if j == held_id and t > at), default=float("inf")) - at
        for at, held in run.kills
        for held_id in held
    ]
    completions = [done[j] - at for at, held in run.kills for j in held if j in done]
    return {
        "lost": sum(1 for j in run.job_ids if j not in done),
        "failed": failed,
        "median_recovery_s": round(statistics.median(repicks), 2) if repicks else 0.0,
        "max_recovery_s": round(max(repicks, default=0.0), 2),
        "max_completion_s": round(max(completions, default=0.0), 2),
        "kills_holding_jobs": sum(1 for _, held in run.kills if held),
    }


async def final_state(run: Run) -> dict[str, list[Any]]:
    """The run's effects, by natural keys (ids differ between runs), as sorted lists."""
    queries = {
        "commits": "SELECT r.name, c.sha, c.clone_status, u.login FROM commits c"
        " JOIN repositories r ON r.id = c.repository_id LEFT JOIN users u ON u.id = c.user_id",
        "check_sets": "SELECT c.sha, s.status, (SELECT count(*) FROM checks k"
        " WHERE k.check_set_id = s.id) FROM check_sets s JOIN commits c ON c.id = s.commit_id",
        "coverage": "SELECT c.sha, i.status, i.percent_covered FROM coverage_infos i"
        " JOIN commits c ON c.id = i.commit_id",
        "coverage_histories": "SELECT r.name, b.name, h.percentage FROM coverage_histories h"
        " JOIN repositories r ON r.id = h.repository_id JOIN branches b ON b.id = h.branch_id",
        "members": "SELECT r.name, m.github_member_id, m.level FROM repository_members m"
        " JOIN repositories r ON r.id = m.repository_id",
        "repositories": "SELECT name, commits_size FROM repositories",
    }
    conn = await asyncpg.connect(asyncpg_dsn(run.database_url))
    try:
        state = {k: sorted(tuple(r) for r in await conn.fetch(q)) for k, q in queries.items()}
        names = {
            int(r["id"]): r["name"] for r in await conn.fetch("SELECT id, name FROM repositories")
        }
    finally:
        await conn.close()
    client = aioredis.Redis.from_url(run.redis_url)
    try:
        descriptors = [json.loads(d) for d in await client.lrange(contracts.CHECKS_QUEUE, 0, -1)]
        tasks = [json.loads(t) for t in await client.lrange(contracts.HOUSEKEEPING_QUEUE, 0, -1)]
    finally:
        await client.aclose()
    state["descriptors"] = sorted((d["repo"], d["sha"]) for d in descriptors)
    state["eviction_tasks"] = sorted(
        (names[t["repository"]], tuple(t["objects"]))
        for t in tasks
        if t["task"] == "evict-artifact"
    )
    return state


def duplicates(state: dict[str, list[Any]]) -> int:
    """Extra copies of history rows, descriptors and eviction tasks."""
    return sum(
        count - 1
        for key in ("coverage_histories", "descriptors", "eviction_tasks")
        for count in Counter(state[key]).values()
    )


async def main(seed_value: int) -> int:
    rng = random.Random(seed_value)
    random.seed(seed_value)
    started = time.monotonic()
    with (
        scratch_dir("worker-kill") as scratch,
        private_postgres(scratch / "pg") as pg,
        private_redis(scratch / "redis") as rd,
        FakeGitHub(org="acme", tmp_dir=scratch / "github") as fake,
    ):
        prepare_fake(fake)
        states = {}
        for label, kills in (("clean", 0), ("killed", KILLS)):
            storage = scratch / f"storage-{label}"
            settings = bench_settings(fake, storage, repository_cache_max_size=CACHE_QUOTA)
            async with run_stores(pg.url, rd.url(0), storage) as run:
                await execute(run, settings, fake, kills=kills, rng=rng)
                count = len(run.job_ids) + run.coalesced
                figures = {**await outcome(run), "coalesced": run.coalesced}
                states[label] = (await final_state(run), figures, count)
    clean, killed = states["clean"][0], states["killed"][0]
    figures = states["killed"][1]
    differing = sorted(k for k in clean if clean[k] != killed[k])
    dup = duplicates(killed)
    failures = (
        figures["lost"]
        + figures["failed"]
        + dup
        + len(differing)
        + states["clean"][1]["lost"]
        + states["clean"][1]["failed"]
    )
    return summary(
        "worker_kill",
        KILLS,
        failures,
        jobs=states["killed"][2],
        coalesced=figures["coalesced"],
        kills_holding_jobs=figures["kills_holding_jobs"],
        lost=figures["lost"],
        failed=figures["failed"],
        duplicates=dup,
        differs_from_clean=",".join(differing) or "none",
        descriptors=len(killed["descriptors"]),
        histories=len(killed["coverage_histories"]),
        eviction_tasks=len(killed["eviction_tasks"]),
        median_recovery_s=figures["median_recovery_s"],
        max_recovery_s=figures["max_recovery_s"],
        max_completion_s=figures["max_completion_s"],
        seconds=round(time.monotonic() - started, 1),
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED)
    sys.exit(asyncio.run(main(parser.parse_args().seed)))
