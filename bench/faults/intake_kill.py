"""Sidekiq intake killed: SIGKILL of taking-in workers never loses a payload nor doubles one;
Sidekiq OSS, killed the same way, loses the jobs it was running.

Ours: :data:`PAYLOADS` ActiveJob payloads of Cocov's ``UpdateCommitsAuthorJob`` (one user id
each, a no-op for users that do not exist), pushed with ``push_bulk`` by
``bench/sidekiq/intake.rb`` in :data:`KILLS` waves into a private Redis, taken in by two
``cocov-jobs worker`` processes (``COCOV_HEARTBEAT_TIMEOUT`` = :data:`HEARTBEAT_TIMEOUT`).
After each wave, once the victim (the two workers alternately) holds payloads in its in-flight
lists, it gets SIGKILL after a random delay and is started again. Then everything must be taken
in and run. Shown:

* ``lost`` — payloads without a taken key (never stored): ``PAYLOADS - keys``;
* ``doubled`` — jobs inserted beyond one per payload (``queued`` log rows - keys);
* ``not_run`` — jobs without a successful run;
* ``kills_in_flight`` / ``kills_after_commit`` — kills that left payloads in the victim's
  in-flight lists / of which some were already committed (a replay on recovery);
* ``median_recovery_s`` / ``max_recovery_s`` — from a kill that left payloads in flight to
  another lane moving them into its own list (heartbeat expiry, then the next look).

Sidekiq: :data:`SIDEKIQ_JOBS` of the same payloads, drained by ``sidekiq -c 10`` whose job
takes :data:`SIDEKIQ_JOB_SECONDS`; SIGKILL once some have finished. ``sidekiq_lost`` = pushed
- finished - still queued: the jobs its basic fetch had taken off the queue (BRPOP) and held only
in memory. They are nowhere any more.

Usage: ``python bench/faults/intake_kill.py [--seed N]``
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

import asyncpg
import redis.asyncio as aioredis
from common import (
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

from cocov_jobs.config import Settings
from cocov_jobs.db.session import asyncpg_dsn
from cocov_jobs.sidekiq.intake import INFLIGHT_PREFIX, PROCESSES

PAYLOADS = 10_000
KILLS = 20
HEARTBEAT_TIMEOUT = 2.0
#: Random delay range (seconds) between "the victim holds payloads" and its SIGKILL.
KILL_DELAY = (0.0, 0.2)
SIDEKIQ_JOBS = 200
SIDEKIQ_JOB_SECONDS = 0.05
DEFAULT_SEED = 7
PUSH_SCRIPT = Path(__file__).resolve().parents[1] / "sidekiq" / "intake.rb"
JOB = "update_commits_author"
#: ``COCOV_CRYPTOGRAPHIC_KEY`` of the workers (32 bytes; nothing here encrypts).
CRYPTO_KEY = "intake-kill-scenario-key-32bytes"


def push(redis_url: str, count: int, first: int) -> None:
    """``count`` ActiveJob payloads for users ``first…``, one push_bulk per 1,000."""
    subprocess.run(
        ["ruby", str(PUSH_SCRIPT), "push", str(count), str(first)],
        env={**os.environ, "BENCH_REDIS_URL": redis_url},
        capture_output=True,
        check=True,
    )


async def lane_ids(redis: aioredis.Redis, pid: int) -> list[bytes]:
    """Intake lane ids of process ``pid`` (ids are ``host:pid:random``)."""
    return [i for i in await redis.smembers(PROCESSES) if f":{pid}:" in i.decode()]


async def held(redis: aioredis.Redis, ids: list[bytes]) -> list[str]:
    """jids in the in-flight lists of ``ids``."""
    found: list[str] = []
    for lane in ids:
        found += [
            json.loads(raw)["jid"]
            for raw in await redis.lrange(INFLIGHT_PREFIX.encode() + lane, 0, -1)
        ]
    return found


async def count(conn: asyncpg.Connection, sql: str) -> int:
    return int(await conn.fetchval(sql))


async def ours(seed: int, work: Path) -> dict[str, float | int]:
    rng = random.Random(seed)
    with private_postgres(work / "pg") as pg, private_redis(work / "redis") as rd:
        redis_url = rd.url(0)
        async with migrated_database(pg.url) as database_url:
            env = process_env(
                Settings(cryptographic_key=CRYPTO_KEY),
                database_url,
                rd.url(1),
                COCOV_SIDEKIQ_REDIS_URL=redis_url,
                COCOV_HEARTBEAT_TIMEOUT=str(HEARTBEAT_TIMEOUT),
            )
            redis = aioredis.Redis.from_url(redis_url)
            conn = await asyncpg.connect(asyncpg_dsn(database_url))
            logs = work / "workers.log"
            workers = [start_worker(env, log=logs), start_worker(env, log=logs)]
            per_wave = PAYLOADS // KILLS
            kills_in_flight = kills_after_commit = 0
            recoveries: list[float] = []
            try:
                for wave in range(KILLS):
                    await asyncio.to_thread(push, redis_url, per_wave, wave * per_wave + 1)
                    victim = workers[wave % 2]

                    async def holding_or_empty(pid: int = victim.pid) -> bool:
                        ids = await lane_ids(redis, pid)
                        return bool(await held(redis, ids)) or not await redis.llen("queue:default")

                    await until(holding_or_empty)
                    await asyncio.sleep(rng.uniform(*KILL_DELAY))
                    ids = await lane_ids(redis, victim.pid)
                    victim.send_signal(signal.SIGKILL)
                    victim.wait()
                    killed_at = time.monotonic()
                    jids = await held(redis, ids)
                    if jids:
                        kills_in_flight += 1
                        taken = await conn.fetchval(
                            "SELECT count(*) FROM cocov_jobs_sidekiq_taken WHERE key = ANY($1)",
                            jids,
                        )
                        kills_after_commit += bool(taken)
                    workers[wave % 2] = start_worker(env, log=logs)
                    if jids:

                        async def recovered(gone: list[bytes] = ids) -> bool:
                            members = await redis.smembers(PROCESSES)
                            return not any(lane in members for lane in gone)

                        await until(recovered)
                        recoveries.append(time.monotonic() - killed_at)

                async def all_done() -> bool:
                    return (
                        not await redis.llen("queue:default")
                        and not await held(redis, list(await redis.smembers(PROCESSES)))
                        and await count(conn, "SELECT count(*) FROM pgqueuer") == 0
                        and await count(conn, "SELECT count(*) FROM cocov_jobs_sidekiq_taken")
                        >= PAYLOADS
                    )

                await until(all_done, within=300)
                keys = await count(conn, "SELECT count(*) FROM cocov_jobs_sidekiq_taken")
                inserted = await count(
                    conn,
                    f"SELECT count(*) FROM pgqueuer_log WHERE entrypoint = '{JOB}'"
                    " AND status = 'queued'",
                )
                succeeded = await count(
                    conn,
                    f"SELECT count(*) FROM pgqueuer_log WHERE entrypoint = '{JOB}'"
                    " AND status = 'successful'",
                )
            except TimeoutError:
                print(logs.read_text()[-4000:], file=sys.stderr)
                raise
            finally:
                for worker in workers:
                    stop_process(worker)
                await conn.close()
                await redis.aclose()
    return {
        "payloads": PAYLOADS,
        "kills": KILLS,
        "lost": PAYLOADS - keys,
        "doubled": inserted - keys,
        "not_run": keys - succeeded,
        "kills_in_flight": kills_in_flight,
        "kills_after_commit": kills_after_commit,
        "median_recovery_s": round(statistics.median(recoveries), 2) if recoveries else 0,
        "max_recovery_s": round(max(recoveries), 2) if recoveries else 0,
    }


async def sidekiq(work: Path) -> int:
    """Jobs Sidekiq OSS lost to one SIGKILL (see the module docstring)."""
    with private_redis(work / "sidekiq-redis") as rd:
        redis_url = rd.url(0)
        redis = aioredis.Redis.from_url(redis_url)
        try:
            await asyncio.to_thread(push, redis_url, SIDEKIQ_JOBS, 1)
            env = {
                **os.environ,
                "BENCH_REDIS_URL": redis_url,
                "BENCH_SLEEP": str(SIDEKIQ_JOB_SECONDS),
            }
            with (work / "sidekiq.log").open("ab") as log:
                process = await asyncio.create_subprocess_exec(
                    *("sidekiq", "-r", str(PUSH_SCRIPT), "-q", "default", "-c", "10"),
                    env=env,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                )

                async def some_finished() -> bool:
                    return int(await redis.get("bench:completed") or 0) >= SIDEKIQ_JOBS // 4

                await until(some_finished)
                process.send_signal(signal.SIGKILL)
                await process.wait()
            finished = int(await redis.get("bench:completed") or 0)
            queued = int(await redis.llen("queue:default"))
            return SIDEKIQ_JOBS - finished - queued
        finally:
            await redis.aclose()


async def main(seed: int) -> int:
    with scratch_dir("intake-kill") as work:
        figures = await ours(seed, work)
        sidekiq_lost = await sidekiq(work)
    failures = int(figures["lost"]) + int(figures["doubled"]) + int(figures["not_run"])
    if figures["kills_in_flight"] == 0:
        failures += 1  # no kill hit payloads in flight: nothing was shown
    return summary(
        "intake_kill",
        KILLS,
        failures,
        **figures,
        sidekiq_jobs=SIDEKIQ_JOBS,
        sidekiq_lost=sidekiq_lost,
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED)
    sys.exit(asyncio.run(main(parser.parse_args().seed)))
