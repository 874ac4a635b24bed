"""Scenario 2 of issue 7 — PostgreSQL restart under load: nothing accepted is lost, nothing
unstored is acknowledged, and the processes reconnect by themselves.

A private PostgreSQL cluster and Redis; one ``cocov-jobs web`` and two ``cocov-jobs worker``
processes. Load: :data:`JOBS` ``update_commits_author`` jobs enqueued up front (one per user,
so none is coalesced) and :data:`DELIVERIES` signed push deliveries from :data:`CLIENTS`
concurrent clients, each pushing one of the fake's commits to its own branch. During the load
``pg_ctl restart -m fast`` runs :data:`RESTARTS` times (after a quarter, half and three quarters
of the deliveries were answered). Every delivery is sent once.

Shown, with exit status 1 on any failure:

* every 2xx delivery is recorded (its delivery row and its branch head exist): ``lost`` = 0;
* every other answer is a 503 (``rejected``) or a refused connection — never a 500, never a 2xx
  for something not stored; ``other_errors`` counts 5xx other than 503;
* deliveries after each restart are accepted again, by the same web process: ``max_recovery_s``
  is the longest time from a restart to the next 2xx;
* all enqueued jobs and all jobs of accepted deliveries complete, by the same worker processes
  (``processed``; none ``failed``), which are still running at the end.

Usage: ``python bench/faults/pg_restart.py``
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg
import httpx
from common import (
    WAIT,
    bench_settings,
    migrated_database,
    private_postgres,
    private_redis,
    process_env,
    restart_postgres,
    scratch_dir,
    signed_push,
    start_worker,
    stop_process,
    summary,
    until,
    web_process,
)

from cocov_jobs import jobs as product_jobs
from cocov_jobs.db.session import asyncpg_dsn
from cocov_jobs.embedded import EmbeddedPostgres
from cocov_jobs.engine import queue
from cocov_jobs.services import open_services
from cocov_jobs.testing import FakeGitHub

JOBS = 1000
DELIVERIES = 500
CLIENTS = 10
RESTARTS = 3
#: Repositories (and distinct commits) the pushes spread over.
REPOSITORIES = 5
#: Deliveries per second all clients together send at most (so the load spans the restarts).
SEND_RATE = 40.0
#: Upper bound for every job to finish once the deliveries are answered.
DRAIN_DEADLINE = 180.0
#: Seconds a single delivery may take (a restart in the middle included).
REQUEST_TIMEOUT = 30.0
#: GitHub ids of the seeded users (``update_commits_author`` targets).
USER_GITHUB_ID_BASE = 900_000

#: Error lines of each process shown when the scenario fails (cut to this many characters).
LOG_LINES = 15
LOG_LINE_CHARS = 600

_UNFINISHED = "SELECT count(*) FROM pgqueuer WHERE status IN ('queued', 'picked')"


@dataclass
class Load:
    """What the clients saw."""

    answers: Counter[int] = field(default_factory=Counter)
    refused: int = 0
    accepted: list[tuple[str, str, str]] = field(default_factory=list)  # delivery, repo, branch
    answered: int = 0
    accepted_at: list[float] = field(default_factory=list)


async def seed(
    database_url: str, redis_url: str, fake: FakeGitHub
) -> tuple[dict[str, int], list[int]]:
    """Repositories known to the fake, :data:`JOBS` users and their jobs (enqueued as the
    product does); return the repositories' GitHub ids and the job ids."""
    repos = {}
    for r in range(REPOSITORIES):
        name = f"svc-{r}"
        fake.add_repo(name, files={"README.md": f"repo {r}\n"})
        repos[name] = fake.repo(name).id
    conn = await asyncpg.connect(asyncpg_dsn(database_url))
    try:
        async with conn.transaction():
            for name, github_id in repos.items():
                await conn.execute(
                    "INSERT INTO repositories (name, default_branch, token, github_id,"
                    " created_at, updated_at) VALUES ($1, 'main', $2, $3, now(), now())",
                    name,
                    f"crt_{name}",
                    github_id,
                )
            await conn.execute(
                "INSERT INTO users (login, github_id, github_token, admin, created_at, updated_at)"
                " SELECT 'u' || g, $1::int + g, 't', false, now(), now()"
                " FROM generate_series(1, $2::int) AS g",
                USER_GITHUB_ID_BASE,
                JOBS,
            )
            user_ids = [int(r["id"]) for r in await conn.fetch("SELECT id FROM users")]
    finally:
        await conn.close()
    settings = bench_settings(fake, Path("unused-storage"))
    async with (
        open_services(
            settings,
            registry=product_jobs.registry(),
            database_url=database_url,
            redis_url=redis_url,
            redis_cache_url=redis_url,
        ) as services,
        services.sessions.begin() as session,
    ):
        job_ids = [
            await queue.enqueue(session, "update_commits_author", user_id=user_id)
            for user_id in user_ids
        ]
    return repos, [j for j in job_ids if j is not None]


async def send_load(base_url: str, repos: dict[str, int], fake: FakeGitHub, load: Load) -> None:
    """:data:`DELIVERIES` pushes, each once, paced at :data:`SEND_RATE` per second."""
    names = sorted(repos)
    started = time.monotonic()
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(DELIVERIES):
        queue.put_nowait(i)

    async def client() -> None:
        async with httpx.AsyncClient(base_url=base_url, timeout=REQUEST_TIMEOUT) as http:
            while not queue.empty():
                i = queue.get_nowait()
                await asyncio.sleep(max(0.0, started + i / SEND_RATE - time.monotonic()))
                name = names[i % len(names)]
                branch, delivery = f"load-{i}", str(uuid.uuid4())
                try:
                    answer = await signed_push(
                        http, repos[name], name, fake.head(name), branch=branch, delivery=delivery
                    )
                except httpx.TransportError:
                    load.refused += 1
                else:
                    load.answers[answer.status_code] += 1
                    if answer.is_success:
                        load.accepted.append((delivery, name, branch))
                        load.accepted_at.append(time.monotonic())
                load.answered += 1

    await asyncio.gather(*(client() for _ in range(CLIENTS)))


async def restart_during(pg: EmbeddedPostgres, load: Load) -> list[float]:
    """Restart PostgreSQL at each quarter of the deliveries answered; return the times."""
    times = []
    for n in range(1, RESTARTS + 1):
        threshold = DELIVERIES * n // (RESTARTS + 1)

        async def reached(threshold: int = threshold) -> bool:
            return load.answered >= threshold

        await until(reached, WAIT)
        times.append(time.monotonic())
        await asyncio.to_thread(restart_postgres, pg)
    return times


async def verify(database_url: str, load: Load, job_ids: list[int]) -> dict[str, int]:
    conn = await asyncpg.connect(asyncpg_dsn(database_url))
    try:
        recorded = {
            r["delivery_id"]
            for r in await conn.fetch("SELECT delivery_id FROM cocov_jobs_webhook_deliveries")
        }
        heads = {
            (r["name"], r["branch"])
            for r in await conn.fetch(
                "SELECT r.name, b.name AS branch FROM branches b"
                " JOIN repositories r ON r.id = b.repository_id WHERE b.head_id IS NOT NULL"
            )
        }
        succeeded = {
            int(r["job_id"])
            for r in await conn.fetch(
                "SELECT DISTINCT job_id FROM pgqueuer_log WHERE status = 'successful'"
            )
        }
        failed = int(await conn.fetchval("SELECT count(*) FROM pgqueuer WHERE status = 'failed'"))
        commit_jobs = int(
            await conn.fetchval(
                "SELECT count(DISTINCT job_id) FROM pgqueuer_log"
                " WHERE entrypoint = 'process_commit' AND status = 'successful'"
            )
        )
    finally:
        await conn.close()
    lost_deliveries = sum(
        1 for d, name, branch in load.accepted if d not in recorded or (name, branch) not in heads
    )
    return {
        "lost": lost_deliveries + sum(1 for j in job_ids if j not in succeeded),
        "processed": sum(1 for j in job_ids if j in succeeded) + commit_jobs,
        "failed": failed,
    }


def _recovery(restarts: list[float], accepted_at: list[float]) -> tuple[float, int]:
    """Longest time from a restart to the next accepted delivery; restarts never recovered."""
    gaps, unrecovered = [], 0
    for at in restarts:
        later = [t for t in accepted_at if t > at]
        if later:
            gaps.append(min(later) - at)
        else:
            unrecovered += 1
    return max(gaps, default=0.0), unrecovered


async def main() -> int:
    started = time.monotonic()
    with (
        scratch_dir("pg-restart") as scratch,
        private_postgres(scratch / "pg") as pg,
        private_redis(scratch / "redis") as rd,
        FakeGitHub(org="acme", tmp_dir=scratch / "github") as fake,
    ):
        async with migrated_database(pg.url) as url:
            repos, job_ids = await seed(url, rd.url(0), fake)
            settings = bench_settings(fake, scratch / "storage")
            env = process_env(settings, url, rd.url(0))
            logs = scratch / "logs"
            logs.mkdir()
            workers = [start_worker(env, log=logs / f"worker{i}.log") for i in range(2)]
            load = Load()
            try:
                async with web_process(env, log=logs / "web.log") as base_url:
                    restarts = asyncio.create_task(restart_during(pg, load))
                    await send_load(base_url, repos, fake, load)
                    restart_times = await restarts
                    pool = await asyncpg.create_pool(asyncpg_dsn(url), min_size=1, max_size=1)
                    try:

                        async def drained() -> bool:
                            return int(await pool.fetchval(_UNFINISHED)) == 0

                        with contextlib.suppress(TimeoutError):  # counted as lost below
                            await until(drained, DRAIN_DEADLINE)
                    finally:
                        await pool.close()
                died = sum(1 for w in workers if w.poll() is not None)
                figures = await verify(url, load, job_ids)
            finally:
                for worker in workers:
                    stop_process(worker)
            other_errors = sum(n for code, n in load.answers.items() if code >= 500 and code != 503)
            if figures["lost"] or figures["failed"] or died or other_errors:
                _show_logs(logs)
    max_recovery, unrecovered = _recovery(restart_times, load.accepted_at)
    unexpected = sum(n for code, n in load.answers.items() if 300 <= code < 500)
    failures = figures["lost"] + figures["failed"] + other_errors + unexpected + died + unrecovered
    return summary(
        "pg_restart",
        RESTARTS,
        failures,
        jobs=len(job_ids),
        deliveries=DELIVERIES,
        accepted=len(load.accepted),
        rejected=load.answers.get(503, 0),
        refused=load.refused,
        other_errors=other_errors,
        processed=figures["processed"],
        lost=figures["lost"],
        failed=figures["failed"],
        workers_died=died,
        max_recovery_s=round(max_recovery, 2),
        answers=json.dumps(dict(sorted(load.answers.items())), separators=(",", ":")),
        seconds=round(time.monotonic() - started, 1),
    )


def _show_logs(logs: Path) -> None:
    """The last error lines of each process's log, on stderr, to diagnose a failure."""
    for path in sorted(logs.iterdir()):
        lines = path.read_text(errors="replace").splitlines()
        tail = [line[:LOG_LINE_CHARS] for line in lines if '"level": "error"' in line][-LOG_LINES:]
        print(f"--- {path.name}", *tail, sep="\n", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
