"""Benchmark: the Sidekiq intake of one process, beside Sidekiq draining the same payloads.

Every run starts from ``--jobs`` (10,000) payloads pushed with ``Sidekiq::Client.push_bulk``
(batches of 1,000, timed inside Ruby) into ``queue:default`` of a private ``redis-server``:

* **ours** — Cocov's ``UpdateCommitsAuthorJob(user_id)`` (one user id each) as Rails 6.1's
  ActiveJob adapter writes it (``bench/sidekiq/intake.rb push``). ONE process (this file run as
  ``python bench/intake.py _intake``) opens the services and runs
  :meth:`~cocov_jobs.sidekiq.intake.Intake.drain` with ``--batch`` payloads per round: each
  payload claimed into its in-flight list, read and validated, its key and its
  ``update_commits_author`` job inserted in PostgreSQL (one transaction per batch, committed
  before the payloads leave Redis). Taken in per second = payloads / (ready → ``drain()``
  returned, the last in-flight list deleted), both stamped in that process.
* **sidekiq_activejob** — the same payloads drained by ``sidekiq -r bench/sidekiq/intake.rb -q
  default -c N``: ActiveJob's ``JobWrapper`` runs ``UpdateCommitsAuthorJob#perform``, which does
  nothing.
* **sidekiq_plain** — ``bench/sidekiq/bench.rb``'s no-op ``Sidekiq::Worker`` from plain
  payloads (what ``bench/engine.py`` compares the engine with): Sidekiq without ActiveJob.

Sidekiq's rate is payloads / (its ``:startup`` event → the last job's end), as in
``bench/engine.py`` (whose Sidekiq driver, private Redis and database helpers this reuses), at
concurrency 10, 20 and 40 (``--concurrency``); the best median counts. Runs are interleaved,
``--repeat`` (3) times. Our runs are checked: Redis queue and in-flight lists empty, exactly
``--jobs`` taken keys and ``update_commits_author`` jobs in PostgreSQL, each user once.

Target: ours at least Sidekiq's rate on the same payloads (``sidekiq_activejob``, its best
concurrency); ``sidekiq_plain`` is shown beside it. Figures go to stdout and
``bench/results/intake.json`` (with the machine); exit status 1 when a run fails, a missed
target only prints MISS.

Usage: ``python bench/intake.py [--jobs 10000] [--batch 500] [--repeat 3]``
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
from engine import (
    BenchError,
    SidekiqSetup,
    _cpu_seconds,
    _emit,
    _read_events,
    _version,
    ensure_sidekiq_packages,
    machine,
    private_redis,
    run_sidekiq_once,
    server_url,
    sidekiq_push,
)

from cocov_jobs.db.session import asyncpg_dsn
from cocov_jobs.sidekiq.intake import BATCH

RESULTS_PATH = Path(__file__).parent / "results" / "intake.json"
INTAKE_SCRIPT = Path(__file__).resolve().parent / "sidekiq" / "intake.rb"
THIS_SCRIPT = Path(__file__).resolve()
#: Seconds one run may take before it counts as failed.
RUN_TIMEOUT = 600.0
JOB = "update_commits_author"
ENGINES = ("ours", "sidekiq_activejob", "sidekiq_plain")


# Our process (hidden sub-command) --------------------------------------------------------------


async def _intake_main(database_url: str, redis_url: str, batch: int) -> None:
    from cocov_jobs import jobs, logs
    from cocov_jobs.config import Settings
    from cocov_jobs.services import open_services
    from cocov_jobs.sidekiq.intake import Intake

    logs.configure("console", "WARNING")
    settings = Settings(sidekiq_redis_url=redis_url)
    async with open_services(
        settings,
        registry=jobs.registry(),
        database_url=database_url,
        redis_url=redis_url,
        redis_cache_url=redis_url,
    ) as services:
        intake = Intake(services, batch=batch)
        cpu_at_ready = _cpu_seconds()
        _emit(event="ready", t=time.time())
        count = await intake.drain()
        _emit(event="done", t=time.time(), count=count, cpu_seconds=_cpu_seconds() - cpu_at_ready)


# Runs ------------------------------------------------------------------------------------------


def push_payloads(redis_url: str, jobs: int) -> float:
    """``ruby bench/sidekiq/intake.rb push JOBS`` into an empty Redis; seconds it took."""
    import redis

    with contextlib.closing(redis.Redis.from_url(redis_url)) as client:
        client.flushdb()
        env = {**os.environ, "BENCH_REDIS_URL": redis_url, "BENCH_BATCH": "1000"}
        seconds = sidekiq_push(INTAKE_SCRIPT, [str(jobs)], env)
        if int(client.llen("queue:default")) != jobs:
            raise BenchError(f"queue:default does not hold {jobs} payloads after the push")
        return seconds


async def reset(database_url: str) -> None:
    conn = await asyncpg.connect(asyncpg_dsn(database_url))
    try:
        await conn.execute("TRUNCATE pgqueuer, pgqueuer_log, cocov_jobs_sidekiq_taken")
        await conn.execute("VACUUM ANALYZE pgqueuer")
        await conn.execute("VACUUM ANALYZE cocov_jobs_sidekiq_taken")
    finally:
        await conn.close()


async def check_ours(database_url: str, redis_url: str, jobs: int) -> None:
    """Every payload taken in once: Redis empty, one key and one job per payload."""
    import redis.asyncio as aioredis

    client = aioredis.Redis.from_url(redis_url)
    try:
        left = [k for k in await client.keys("*") if k.startswith((b"queue:", b"cocov-jobs:"))]
    finally:
        await client.aclose()
    conn = await asyncpg.connect(asyncpg_dsn(database_url))
    try:
        taken = await conn.fetchval("SELECT count(*) FROM cocov_jobs_sidekiq_taken")
        inserted, users = await conn.fetchrow(
            "SELECT count(*), count(DISTINCT convert_from(payload, 'UTF8'))"
            " FROM pgqueuer WHERE entrypoint = $1",
            JOB,
        )
    finally:
        await conn.close()
    if left or (taken, inserted, users) != (jobs, jobs, jobs):
        raise BenchError(
            f"after our run: Redis keys {left}, {taken} keys, {inserted} jobs for {users} users;"
            f" expected {jobs} of each"
        )


async def run_ours(
    database_url: str, redis_url: str, jobs: int, batch: int, repetition: int
) -> dict[str, Any]:
    await reset(database_url)
    enqueue_seconds = await asyncio.to_thread(push_payloads, redis_url, jobs)
    load = os.getloadavg()[0]
    argv = [sys.executable, str(THIS_SCRIPT), "_intake"]
    argv += ["--database-url", database_url, "--redis-url", redis_url, "--batch", str(batch)]
    spawned = time.time()
    try:
        result = await asyncio.to_thread(
            subprocess.run, argv, capture_output=True, text=True, timeout=RUN_TIMEOUT
        )
    except subprocess.TimeoutExpired as exc:
        raise BenchError(f"our intake did not finish within {RUN_TIMEOUT:.0f} s") from exc
    events = _read_events(result.stdout)
    if result.returncode != 0 or "done" not in events or "ready" not in events:
        raise BenchError(f"our intake failed (exit {result.returncode}):\n{result.stderr[-3000:]}")
    await check_ours(database_url, redis_url, jobs)
    ready, done = float(events["ready"]["t"]), events["done"]
    seconds = float(done["t"]) - ready
    return {
        "engine": "ours",
        "batch": batch,
        "concurrency": None,
        "repetition": repetition,
        "jobs": jobs,
        "load_average_1min_before": round(load, 2),
        "push_seconds": round(enqueue_seconds, 4),
        "startup_seconds": round(ready - spawned, 3),
        "seconds": round(seconds, 4),
        "payloads_per_s": round(jobs / seconds, 1),
        "cpu_ms_per_payload": round(float(done["cpu_seconds"]) / jobs * 1000, 4),
    }


async def run_sidekiq(
    setup: SidekiqSetup, engine: str, concurrency: int, jobs: int, repetition: int
) -> dict[str, Any]:
    load = os.getloadavg()[0]
    if engine == "sidekiq_activejob":
        once = await asyncio.to_thread(
            run_sidekiq_once,
            setup,
            "noop",
            concurrency,
            jobs,
            script=INTAKE_SCRIPT,
            queue="default",
            push_args=[str(jobs)],
        )
    else:
        once = await asyncio.to_thread(run_sidekiq_once, setup, "noop", concurrency, jobs)
    enqueue_seconds, spawned, stamps = once
    seconds = float(stamps["last_end"]) - float(stamps["ready"])
    return {
        "engine": engine,
        "batch": None,
        "concurrency": concurrency,
        "repetition": repetition,
        "jobs": jobs,
        "load_average_1min_before": round(load, 2),
        "push_seconds": round(enqueue_seconds, 4),
        "startup_seconds": round(float(stamps["ready"]) - spawned, 3),
        "seconds": round(seconds, 4),
        "payloads_per_s": round(jobs / seconds, 1),
        "cpu_ms_per_payload": round(float(stamps["cpu_seconds"]) / jobs * 1000, 4),
    }


# Report ----------------------------------------------------------------------------------------


def best(runs: list[dict[str, Any]], engine: str) -> tuple[Any, float] | None:
    """(setting, median payloads/s) of the engine's best setting (concurrency or batch)."""
    setting = "batch" if engine == "ours" else "concurrency"
    medians: dict[Any, float] = {}
    for value in {r[setting] for r in runs if r["engine"] == engine}:
        rates = [r["payloads_per_s"] for r in runs if r["engine"] == engine and r[setting] == value]
        medians[value] = statistics.median(rates)
    return max(medians.items(), key=lambda item: item[1], default=None)


def report(runs: list[dict[str, Any]], jobs: int) -> dict[str, Any]:
    print()
    print(f"{jobs} payloads, median of the repetitions (payloads/s, cpu ms per payload):")
    for engine in ENGINES:
        setting = "batch" if engine == "ours" else "concurrency"
        for value in sorted({r[setting] for r in runs if r["engine"] == engine}):
            cell = [r for r in runs if r["engine"] == engine and r[setting] == value]
            rates = [r["payloads_per_s"] for r in cell]
            cpu = statistics.median(r["cpu_ms_per_payload"] for r in cell)
            print(
                f"  {engine:18} {setting} {value:<4} {statistics.median(rates):8.0f}/s"
                f"  ({min(rates):.0f}–{max(rates):.0f})  cpu {cpu:.3f} ms"
            )
    found = {engine: best(runs, engine) for engine in ENGINES}
    ours, same, plain = (found[engine] for engine in ENGINES)
    assert ours is not None and same is not None and plain is not None
    verdict = "PASS" if ours[1] >= same[1] else "MISS"
    print()
    print(
        f"ours {ours[1]:.0f}/s (batch {ours[0]}); Sidekiq on the same payloads {same[1]:.0f}/s"
        f" (c={same[0]}): ratio {ours[1] / same[1]:.2f}  {verdict}"
    )
    print(
        f"(Sidekiq's plain no-op jobs, without ActiveJob: {plain[1]:.0f}/s (c={plain[0]}),"
        f" ratio {ours[1] / plain[1]:.2f})"
    )
    return {
        "ours_payloads_per_s": round(ours[1], 1),
        "ours_batch": ours[0],
        "sidekiq_activejob_payloads_per_s": round(same[1], 1),
        "sidekiq_activejob_concurrency": same[0],
        "sidekiq_plain_payloads_per_s": round(plain[1], 1),
        "sidekiq_plain_concurrency": plain[0],
        "target": "at least Sidekiq's rate on the same payloads (sidekiq_activejob)",
        "ratio_ours_to_sidekiq_activejob": round(ours[1] / same[1], 3),
        "ratio_ours_to_sidekiq_plain": round(ours[1] / plain[1], 3),
        "result": verdict,
    }


# Main ------------------------------------------------------------------------------------------


def _ints(text: str) -> list[int]:
    values = [int(part) for part in text.split(",") if part.strip()]
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError("a comma-separated list of positive integers")
    return values


async def bench(args: argparse.Namespace, admin_url: str, source: str) -> int:
    from cocov_jobs.testing.databases import scratch_database

    installed = ensure_sidekiq_packages()
    if installed:
        print(f"installed: {' '.join(installed)}")
    runs: list[dict[str, Any]] = []
    started = datetime.now(UTC)
    work_dir = Path(tempfile.mkdtemp(prefix="cocov-bench-intake-"))
    try:
        async with scratch_database(admin_url, prefix="cocov_bench") as url:
            conn = await asyncpg.connect(asyncpg_dsn(url))
            try:
                pg_version = str(await conn.fetchval("SHOW server_version"))
            finally:
                await conn.close()
            info = machine(pg_version, True)
            info["activejob"] = _version(
                "ruby", "-e", 'require "active_job"; puts ActiveJob::VERSION::STRING'
            )
            print("Machine: " + ", ".join(f"{k}={v}" for k, v in info.items()), flush=True)
            with private_redis(work_dir) as redis_url:
                setup = SidekiqSetup(redis_url, url, 1, 1000, work_dir / "sidekiq.log")
                # Untimed warm-up of both: caches, first connections, page faults.
                await run_ours(url, redis_url, min(args.jobs, 1000), args.batch[0], 0)
                await run_sidekiq(setup, "sidekiq_activejob", 10, min(args.jobs, 1000), 0)
                for repetition in range(1, args.repeat + 1):
                    for batch in args.batch:
                        run = await run_ours(url, redis_url, args.jobs, batch, repetition)
                        runs.append(run)
                        print(f"  #{repetition} ours batch={batch}: {run['payloads_per_s']:.0f}/s")
                    for engine in ENGINES[1:]:
                        for concurrency in args.concurrency:
                            run = await run_sidekiq(
                                setup, engine, concurrency, args.jobs, repetition
                            )
                            runs.append(run)
                            print(
                                f"  #{repetition} {engine} c={concurrency}:"
                                f" {run['payloads_per_s']:.0f}/s",
                                flush=True,
                            )
    finally:
        shutil.rmtree(work_dir, ignore_errors=True)
    summary = report(runs, args.jobs)
    args.results.parent.mkdir(parents=True, exist_ok=True)
    document = {
        "timestamp": started.isoformat(timespec="seconds"),
        "command": " ".join(["python", "bench/intake.py", *sys.argv[1:]]),
        "machine": info,
        "database": source,
        "jobs": args.jobs,
        "repetitions": args.repeat,
        "measured": (
            "payloads/s = payloads / (ready -> done) in the one process: ours from just before"
            " Intake.drain() to its return (every payload's job committed and the payload"
            " removed from Redis); Sidekiq from its :startup event to the last job's end;"
            " medians of the repetitions, best setting by median"
        ),
        "summary": summary,
        "runs": runs,
    }
    args.results.write_text(json.dumps(document, indent=2) + "\n")
    print(f"\nwritten: {args.results}")
    return 0


def main(argv: list[str]) -> int:
    if argv[:1] == ["_intake"]:
        sub = argparse.ArgumentParser(prog="bench/intake.py _intake")
        sub.add_argument("--database-url", required=True)
        sub.add_argument("--redis-url", required=True)
        sub.add_argument("--batch", type=int, required=True)
        sub_args = sub.parse_args(argv[1:])
        asyncio.run(_intake_main(sub_args.database_url, sub_args.redis_url, sub_args.batch))
        return 0
    parser = argparse.ArgumentParser(
        prog="bench/intake.py", description="Sidekiq intake throughput beside Sidekiq."
    )
    parser.add_argument("--database-url", default=None)
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument("--batch", type=_ints, default=[BATCH], help="payloads per round")
    parser.add_argument("--concurrency", type=_ints, default=[10, 20, 40])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--results", type=Path, default=RESULTS_PATH)
    args = parser.parse_args(argv)
    try:
        with server_url(args.database_url) as (admin_url, source):
            return asyncio.run(bench(args, admin_url, source))
    except BenchError as exc:
        print(f"bench/intake.py: run failed: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
