"""Benchmark: our job engine (PgQueuer on PostgreSQL) against Sidekiq, on no-op and real jobs.

Workloads, ``--jobs`` (10,000) jobs each:

* ``noop`` — ``bench_noop(n)`` does nothing;
* ``real`` — ``bench_real(repository_id)`` works the way our jobs do: through the worker's
  SQLAlchemy sessions (``ctx.db``), one transaction with one indexed SELECT of a
  ``repositories`` row by primary key and one UPDATE of its ``commits_size``;
* ``real_asyncpg`` — ``bench_real_asyncpg(repository_id)``: the same transaction, SELECT and
  UPDATE sent straight through asyncpg (a pool of this process, one connection per running
  job), as the Sidekiq job does it through the ``pg`` gem. The gap between ``real`` and
  ``real_asyncpg`` is what SQLAlchemy costs; the gap to ``noop`` is the database work.

Each job has its own row (``--rows`` defaults to ``--jobs``), so no job waits on a row lock.
The jobs are defined here, not in the product. For each repetition, workload and worker
concurrency (``--concurrency``, default 10, 20 and 40) the jobs are first enqueued (bulk
inserts of ``--batch`` jobs per transaction, timed: "enqueue jobs/s"), then drained by ONE
worker process: this file run as ``python bench/engine.py _worker`` (a hidden sub-command),
which imports this module (registering the bench jobs) and runs
``cocov_jobs.engine.worker.Worker(services, burst=True, concurrency=N)``.

What is measured, stamped with the wall clock inside the worker process:

* ``ready`` — just before ``Worker.run()`` is called: after Python's start-up, the imports and
  opening the services. Spawn → ready is reported apart as start-up;
* ``first_start`` / ``last_end`` — the first job's start and the N-th job's end (an in-process
  counter);
* ``exit`` — when ``Worker.run()`` returns: the burst watcher (polling every 0.1 s) saw no job
  left and the worker shut down.

**Drain jobs/s = N / (last_end − ready)**, for both engines: the figure in the tables, in the
ratios and for PASS/MISS (median of ``--repeat`` runs; the best concurrency is the one with the
best median). ``exit − ready`` (our burst exit, including the last status writes, the poll and
the shutdown) is reported beside it, with the worker process's CPU time per job
(``getrusage`` / ``CLOCK_PROCESS_CPUTIME_ID`` between ready and the last job) and the 1-minute
load average of the machine before the run (other processes compete for the same 2 cores).

``--compare sidekiq`` runs ``noop`` and ``real`` through Sidekiq in the same run, interleaved
with ours (Debian's ``ruby-sidekiq`` and ``ruby-pg``, and ``redis-server``; installed with
apt-get when missing) against a private ``redis-server`` on a free loopback port:
``bench/sidekiq/bench.rb`` defines the two jobs (the real one runs the same transaction on a
per-thread ``pg`` connection) and pushes them with ``Sidekiq::Client.push_bulk`` (timed inside
Ruby); ``sidekiq -c N`` is the one worker process. Its ``ready`` is Sidekiq's ``:startup``
event; the N-th job writes its stamps to Redis. Sidekiq's per-job log lines are turned off
(level WARN), as our worker logs nothing per job. Both ``real`` and ``real_asyncpg`` are
compared with Sidekiq's ``real``.

Database: ``--database-url``, else ``COCOV_TEST_DATABASE_URL``, else an embedded PostgreSQL in
a temporary directory. A fresh database ``cocov_bench_<random>`` is created, migrated with
``cocov_jobs.db.migrate.upgrade`` and dropped at the end. Before every run the queue's log is
truncated and ``pgqueuer`` and ``repositories`` are vacuumed, so every run starts alike.

Figures go to stdout and ``bench/results/engine.json``. Exit status 1 when a run fails (a
worker crashes, a job is lost or fails, the database is not in the expected state); missing
a target only prints MISS.

Usage: ``python bench/engine.py [--compare sidekiq] [--jobs 10000] [--concurrency 10,20,40]
[--repeat 3]``
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
from machine import machine as common_machine
from pgqueuer.db import AsyncpgDriver
from pgqueuer.queries import Queries
from sqlalchemy import select, update

from cocov_jobs.db.models import Repository, utc_now
from cocov_jobs.db.session import asyncpg_dsn
from cocov_jobs.engine.context import JobContext
from cocov_jobs.engine.registry import Registry, job
from cocov_jobs.testing.processes import free_port

#: Targets on the 2-core machine (drain jobs/s of our engine); ``real_asyncpg`` is held to the
#: real-shaped target too.
TARGETS = {"noop": 3000.0, "real": 1500.0, "real_asyncpg": 1500.0}
WORKLOADS = ("noop", "real", "real_asyncpg")
JOB_NAMES = {"noop": "bench_noop", "real": "bench_real", "real_asyncpg": "bench_real_asyncpg"}
#: Our workload → the Sidekiq workload it is compared with.
SIDEKIQ_COUNTERPART = {"noop": "noop", "real": "real", "real_asyncpg": "real"}
RESULTS_PATH = Path(__file__).parent / "results" / "engine.json"
SIDEKIQ_SCRIPT = Path(__file__).resolve().parent / "sidekiq" / "bench.rb"
#: Seconds a worker may take to drain one workload before the run counts as failed.
RUN_TIMEOUT = 600.0
#: Redis URL given to the bench worker's services: the bench jobs never use Redis and the
#: client connects lazily, so nothing needs to listen there.
UNUSED_REDIS_URL = "redis://127.0.0.1:9/0"
#: Debian package → the command it provides ("" : the Ruby library ``pg``).
SIDEKIQ_PACKAGES = {"ruby-sidekiq": "sidekiq", "redis-server": "redis-server", "ruby-pg": ""}
SELECT_SQL = "SELECT commits_size FROM repositories WHERE id = $1"
UPDATE_SQL = "UPDATE repositories SET commits_size = $2, updated_at = now() WHERE id = $1"


class BenchError(RuntimeError):
    """The run itself failed (not a missed target)."""


# The bench jobs (registered in this process and in the worker process) -------------------------


@dataclass
class _Stamps:
    """First job start, last job end and jobs completed, in this (worker) process."""

    first_start: float | None = None
    last_end: float | None = None
    count: int = 0


STAMPS = _Stamps()
_RAW_POOL: dict[str, asyncpg.Pool] = {}


def _started() -> None:
    if STAMPS.first_start is None:
        STAMPS.first_start = time.time()


def _finished() -> None:
    STAMPS.count += 1
    STAMPS.last_end = time.time()


@job()
async def bench_noop(ctx: JobContext, n: int) -> None:
    """Benchmark job: does nothing."""
    _started()
    _finished()


@job()
async def bench_real(ctx: JobContext, repository_id: int) -> None:
    """Benchmark job: one indexed SELECT and one UPDATE of a repository, through SQLAlchemy."""
    _started()
    async with ctx.db.begin() as session:
        size = (
            await session.execute(
                select(Repository.commits_size).where(Repository.id == repository_id)
            )
        ).scalar_one()
        await session.execute(
            update(Repository)
            .where(Repository.id == repository_id)
            .values(commits_size=size + 1, updated_at=utc_now())
        )
    _finished()


@job()
async def bench_real_asyncpg(ctx: JobContext, repository_id: int) -> None:
    """Benchmark job: the same SELECT and UPDATE in one transaction, straight through asyncpg."""
    _started()
    async with _RAW_POOL["pool"].acquire() as conn, conn.transaction():
        size = await conn.fetchval(SELECT_SQL, repository_id)
        if size is None:
            raise LookupError(f"repository {repository_id} not found")
        await conn.execute(UPDATE_SQL, repository_id, size + 1)
    _finished()


#: The jobs the benchmark's worker runs.
BENCH_JOBS = Registry([bench_noop, bench_real, bench_real_asyncpg])


def job_arguments(workload: str, i: int, rows: int) -> dict[str, int]:
    """Arguments of the ``i``-th job (the Sidekiq pusher uses the same mapping)."""
    return {"n": i} if workload == "noop" else {"repository_id": i % rows + 1}


# The worker process (hidden sub-command) -------------------------------------------------------


def _emit(**fields: object) -> None:
    print(json.dumps(fields), flush=True)


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def _worker_main(database_url: str, concurrency: int) -> None:
    from cocov_jobs import logs
    from cocov_jobs.config import Settings
    from cocov_jobs.engine.worker import Worker
    from cocov_jobs.services import open_services

    logs.configure("console", "WARNING")
    settings = Settings(worker_concurrency=concurrency)
    # Connections open on first use, as SQLAlchemy's pool and the Sidekiq threads do.
    _RAW_POOL["pool"] = await asyncpg.create_pool(
        asyncpg_dsn(database_url), min_size=0, max_size=concurrency
    )
    try:
        async with open_services(
            settings,
            registry=BENCH_JOBS,
            database_url=database_url,
            redis_url=UNUSED_REDIS_URL,
            redis_cache_url=UNUSED_REDIS_URL,
            pool_size=concurrency,
        ) as services:
            worker = Worker(services, concurrency=concurrency, burst=True)
            cpu_at_ready = _cpu_seconds()
            _emit(event="ready", t=time.time())
            await worker.run()
            _emit(
                event="exit",
                t=time.time(),
                first_start=STAMPS.first_start,
                last_end=STAMPS.last_end,
                count=STAMPS.count,
                cpu_seconds=_cpu_seconds() - cpu_at_ready,
            )
    finally:
        await _RAW_POOL.pop("pool").close()


# Databases --------------------------------------------------------------------------------------


@contextlib.contextmanager
def server_url(explicit: str | None) -> Iterator[tuple[str, str]]:
    """(URL of a database to connect to for CREATE DATABASE, where it comes from)."""
    url = explicit or os.environ.get("COCOV_TEST_DATABASE_URL", "")
    if url:
        yield url, "--database-url" if explicit else "COCOV_TEST_DATABASE_URL"
        return
    from cocov_jobs.embedded import EmbeddedPostgres

    data_dir = Path(tempfile.mkdtemp(prefix="cocov-bench-"))
    pg = EmbeddedPostgres(data_dir)
    try:
        pg.start()
        yield pg.url, f"embedded PostgreSQL in {data_dir}"
    finally:
        pg.stop()
        shutil.rmtree(data_dir, ignore_errors=True)


@contextlib.asynccontextmanager
async def bench_database(admin_url: str, rows: int) -> AsyncIterator[str]:
    """A fresh migrated database with ``rows`` repositories; dropped afterwards."""
    from cocov_jobs.testing.databases import scratch_database

    async with scratch_database(admin_url, prefix="cocov_bench") as url:
        conn = await asyncpg.connect(asyncpg_dsn(url))
        try:
            await conn.execute(
                "INSERT INTO repositories"
                " (id, name, default_branch, token, github_id, created_at, updated_at)"
                " SELECT g, 'bench-' || g, 'main', 'token-' || g, g, now(), now()"
                " FROM generate_series(1, $1::int) AS g",
                rows,
            )
            await conn.execute("ANALYZE repositories")
        finally:
            await conn.close()
        yield url


async def _fetchval(url: str, sql: str) -> Any:
    conn = await asyncpg.connect(asyncpg_dsn(url))
    try:
        return await conn.fetchval(sql)
    finally:
        await conn.close()


async def commits_size_total(url: str) -> int:
    return int(await _fetchval(url, "SELECT coalesce(sum(commits_size), 0) FROM repositories"))


async def reset_between_runs(url: str) -> int:
    """Empty the queue's log, vacuum; return the sum of ``commits_size`` (to check real runs)."""
    conn = await asyncpg.connect(asyncpg_dsn(url))
    try:
        left = await conn.fetchval("SELECT count(*) FROM pgqueuer")
        if left:
            raise BenchError(f"{left} job(s) left in the queue by the previous run")
        await conn.execute("TRUNCATE pgqueuer_log")
        await conn.execute("VACUUM ANALYZE pgqueuer")
        await conn.execute("VACUUM ANALYZE repositories")
    finally:
        await conn.close()
    return await commits_size_total(url)


async def check_after(url: str, workload: str, before: int, jobs: int) -> None:
    """Every job ran exactly once: queue empty, one update per real job."""
    left = await _fetchval(url, "SELECT count(*) FROM pgqueuer")
    if left:
        raise BenchError(f"{left} job(s) still in the queue after the worker stopped")
    if workload != "noop":
        applied = await commits_size_total(url) - before
        if applied != jobs:
            raise BenchError(f"{workload}: {applied} updates applied, expected {jobs}")


# One run ----------------------------------------------------------------------------------------


@dataclass
class Run:
    engine: str
    workload: str
    concurrency: int
    repetition: int
    jobs: int
    load_average: float
    enqueue_seconds: float
    startup_seconds: float
    ready_to_last_end: float
    first_start_to_last_end: float
    cpu_seconds: float
    ready_to_exit: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def drain_rate(self) -> float:
        return self.jobs / self.ready_to_last_end

    @property
    def enqueue_rate(self) -> float:
        return self.jobs / self.enqueue_seconds

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "engine": self.engine,
            "workload": self.workload,
            "concurrency": self.concurrency,
            "repetition": self.repetition,
            "jobs": self.jobs,
            "load_average_1min_before": round(self.load_average, 2),
            "enqueue_seconds": round(self.enqueue_seconds, 4),
            "enqueue_jobs_per_s": round(self.enqueue_rate, 1),
            "startup_seconds": round(self.startup_seconds, 3),
            "ready_to_last_job_end_seconds": round(self.ready_to_last_end, 4),
            "drain_jobs_per_s": round(self.drain_rate, 1),
            "first_job_start_to_last_job_end_seconds": round(self.first_start_to_last_end, 4),
            "worker_cpu_ms_per_job": round(self.cpu_seconds / self.jobs * 1000, 3),
        }
        if self.ready_to_exit is not None:
            out["ready_to_burst_exit_seconds"] = round(self.ready_to_exit, 4)
            out["ready_to_burst_exit_jobs_per_s"] = round(self.jobs / self.ready_to_exit, 1)
        out.update(self.extra)
        return out


async def enqueue_ours(url: str, workload: str, jobs: int, rows: int, batch: int) -> float:
    """Bulk-enqueue ``jobs`` bench jobs, ``batch`` per transaction; return the seconds taken."""
    definition = BENCH_JOBS.resolve(JOB_NAMES[workload])
    payloads: list[bytes | None] = [
        json.dumps(definition.validate(job_arguments(workload, i, rows))).encode()
        for i in range(jobs)
    ]
    conn = await asyncpg.connect(asyncpg_dsn(url))
    try:
        queries = Queries(AsyncpgDriver(conn))
        started = time.perf_counter()
        for offset in range(0, jobs, batch):
            chunk = payloads[offset : offset + batch]
            async with conn.transaction():
                await queries.enqueue([definition.name] * len(chunk), chunk, [0] * len(chunk))
        return time.perf_counter() - started
    finally:
        await conn.close()


def _read_events(stdout: str) -> dict[str, dict[str, Any]]:
    events: dict[str, dict[str, Any]] = {}
    for line in stdout.splitlines():
        with contextlib.suppress(ValueError):
            event = json.loads(line)
            if isinstance(event, dict) and "event" in event:
                events[str(event["event"])] = event
    return events


def run_our_worker(url: str, concurrency: int, expected: int) -> tuple[float, dict[str, Any]]:
    """Spawn the one worker process; return (spawn time, its exit event plus ``ready``)."""
    argv = [sys.executable, str(Path(__file__).resolve()), "_worker", "--database-url", url]
    argv += ["--concurrency", str(concurrency)]
    spawned = time.time()
    try:
        result = subprocess.run(argv, capture_output=True, text=True, timeout=RUN_TIMEOUT)
    except subprocess.TimeoutExpired as exc:
        raise BenchError(f"our worker did not drain the queue within {RUN_TIMEOUT:.0f} s") from exc
    events = _read_events(result.stdout)
    if result.returncode != 0 or "exit" not in events or "ready" not in events:
        raise BenchError(f"our worker failed (exit {result.returncode}):\n{result.stderr[-3000:]}")
    exit_event = events["exit"]
    if exit_event["count"] != expected:
        raise BenchError(
            f"our worker ran {exit_event['count']} jobs, expected {expected}:\n"
            + result.stderr[-3000:]
        )
    exit_event["ready"] = events["ready"]["t"]
    return spawned, exit_event


async def run_ours(
    url: str, workload: str, concurrency: int, jobs: int, rows: int, batch: int, repetition: int
) -> Run:
    before = await reset_between_runs(url)
    load = os.getloadavg()[0]
    enqueue_seconds = await enqueue_ours(url, workload, jobs, rows, batch)
    spawned, ev = await asyncio.to_thread(run_our_worker, url, concurrency, jobs)
    await check_after(url, workload, before, jobs)
    ready = float(ev["ready"])
    return Run(
        engine="ours",
        workload=workload,
        concurrency=concurrency,
        repetition=repetition,
        jobs=jobs,
        load_average=load,
        enqueue_seconds=enqueue_seconds,
        startup_seconds=ready - spawned,
        ready_to_last_end=float(ev["last_end"]) - ready,
        first_start_to_last_end=float(ev["last_end"]) - float(ev["first_start"]),
        cpu_seconds=float(ev["cpu_seconds"]),
        ready_to_exit=float(ev["t"]) - ready,
    )


# Sidekiq ----------------------------------------------------------------------------------------


def _ruby_has_pg() -> bool:
    if shutil.which("ruby") is None:
        return False
    probe = subprocess.run(["ruby", "-e", 'require "pg"'], capture_output=True, check=False)
    return probe.returncode == 0


def ensure_sidekiq_packages() -> list[str]:
    """apt-get install whichever of ruby-sidekiq, redis-server and ruby-pg is missing."""
    missing = [
        package
        for package, command in SIDEKIQ_PACKAGES.items()
        if (shutil.which(command) is None if command else not _ruby_has_pg())
    ]
    if not missing:
        return []
    print(f"installing {' '.join(missing)} with apt-get …", flush=True)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "--no-install-recommends", *missing]
    if subprocess.run(install, env=env, capture_output=True, check=False).returncode != 0:
        subprocess.run(["apt-get", "update"], env=env, capture_output=True, check=False)
        result = subprocess.run(install, env=env, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise BenchError(f"apt-get install {' '.join(missing)} failed:\n{result.stderr}")
    return missing


@contextlib.contextmanager
def private_redis(work_dir: Path) -> Iterator[str]:
    """A throw-away ``redis-server`` on a free loopback port (no persistence)."""
    import redis

    port = free_port()
    argv = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", ""]
    argv += ["--appendonly", "no", "--dir", str(work_dir)]
    argv += ["--logfile", str(work_dir / "redis.log")]
    process = subprocess.Popen(
        argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        client = redis.Redis(host="127.0.0.1", port=port)
        deadline = time.monotonic() + 30
        while True:
            with contextlib.suppress(redis.ConnectionError):
                if client.ping():
                    break
            if process.poll() is not None or time.monotonic() > deadline:
                raise BenchError(f"redis-server did not start; see {work_dir / 'redis.log'}")
            time.sleep(0.05)
        client.close()
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@dataclass
class SidekiqSetup:
    redis_url: str
    database_url: str
    rows: int
    batch: int
    log_path: Path


def sidekiq_push(script: Path, push_args: list[str], env: dict[str, str]) -> float:
    """``ruby SCRIPT push PUSH_ARGS``: the seconds the script says its pushes took."""
    push = subprocess.run(
        ["ruby", str(script), "push", *push_args],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if push.returncode != 0:
        raise BenchError(f"Sidekiq push failed:\n{push.stderr[-3000:]}")
    return float(json.loads(push.stdout.strip().splitlines()[-1])["seconds"])


def run_sidekiq_once(
    setup: SidekiqSetup,
    workload: str,
    concurrency: int,
    jobs: int,
    *,
    script: Path = SIDEKIQ_SCRIPT,
    queue: str = "bench",
    push_args: list[str] | None = None,
) -> tuple[float, float, dict[str, Any]]:
    """Push (``ruby SCRIPT push PUSH_ARGS``), then drain ``queue`` with one ``sidekiq -r
    SCRIPT`` process: (enqueue s, spawn time, stamps). ``bench/intake.py`` runs its own script."""
    import redis

    if push_args is None:
        push_args = [workload, str(jobs), str(setup.rows)]

    client = redis.Redis.from_url(setup.redis_url)
    try:
        client.flushdb()
        env = {
            **os.environ,
            "BENCH_REDIS_URL": setup.redis_url,
            "BENCH_DATABASE_URL": asyncpg_dsn(setup.database_url),
            "BENCH_EXPECTED": str(jobs),
            "BENCH_BATCH": str(setup.batch),
        }
        enqueue_seconds = sidekiq_push(script, push_args, env)
        queued = int(client.llen(f"queue:{queue}"))
        if queued != jobs:
            raise BenchError(f"Sidekiq queue holds {queued} jobs after the push, not {jobs}")
        argv = ["sidekiq", "-r", str(script), "-q", queue, "-c", str(concurrency)]
        with setup.log_path.open("ab") as log:
            spawned = time.time()
            process = subprocess.Popen(
                argv, env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
            )
            try:
                deadline = time.monotonic() + RUN_TIMEOUT
                while (marker := client.get("bench:done")) is None:
                    if process.poll() is not None:
                        raise BenchError(
                            f"sidekiq exited with {process.returncode}:\n"
                            + setup.log_path.read_text()[-3000:]
                        )
                    if time.monotonic() > deadline:
                        raise BenchError(f"Sidekiq did not drain within {RUN_TIMEOUT:.0f} s")
                    time.sleep(0.02)
                ready = client.get("bench:ready")
            finally:
                if process.poll() is None:
                    process.send_signal(signal.SIGTERM)
                    try:
                        process.wait(timeout=30)
                    except subprocess.TimeoutExpired:
                        process.kill()
                        process.wait()
        stamps: dict[str, Any] = json.loads(marker)
        if ready is None:
            raise BenchError("Sidekiq never fired its :startup event")
        stamps["ready"] = float(ready)
        if stamps["count"] != jobs or int(client.llen(f"queue:{queue}")) != 0:
            raise BenchError(f"Sidekiq ran {stamps['count']} jobs, expected {jobs}")
        failed = int(client.get("stat:failed") or 0) + int(client.zcard("retry"))
        if failed:
            raise BenchError(f"Sidekiq: {failed} job(s) failed; see {setup.log_path}")
        return enqueue_seconds, spawned, stamps
    finally:
        client.close()


async def run_sidekiq(
    setup: SidekiqSetup, workload: str, concurrency: int, jobs: int, repetition: int
) -> Run:
    before = await reset_between_runs(setup.database_url)
    load = os.getloadavg()[0]
    enqueue_seconds, spawned, st = await asyncio.to_thread(
        run_sidekiq_once, setup, workload, concurrency, jobs
    )
    await check_after(setup.database_url, workload, before, jobs)
    ready = float(st["ready"])
    return Run(
        engine="sidekiq",
        workload=workload,
        concurrency=concurrency,
        repetition=repetition,
        jobs=jobs,
        load_average=load,
        enqueue_seconds=enqueue_seconds,
        startup_seconds=ready - spawned,
        ready_to_last_end=float(st["last_end"]) - ready,
        first_start_to_last_end=float(st["last_end"]) - float(st["first_start"]),
        cpu_seconds=float(st["cpu_seconds"]),
    )


# Machine and report -----------------------------------------------------------------------------


def _version(*argv: str) -> str:
    try:
        out = subprocess.run(argv, capture_output=True, text=True, check=True, timeout=60)
    except (OSError, subprocess.SubprocessError):
        return "unavailable"
    return (out.stdout or out.stderr).strip().splitlines()[0]


def machine(pg_version: str, sidekiq: bool) -> dict[str, Any]:
    import pgqueuer
    import sqlalchemy

    info = common_machine(
        postgresql=pg_version,
        pgqueuer=getattr(pgqueuer, "__version__", "unknown"),
        sqlalchemy=sqlalchemy.__version__,
        asyncpg=asyncpg.__version__,
    )
    if sidekiq:
        info["sidekiq"] = _version("ruby", "-e", 'require "sidekiq"; puts Sidekiq::VERSION')
        info["ruby"] = _version("ruby", "-e", "puts RUBY_VERSION")
        info["ruby_pg"] = _version("ruby", "-e", 'require "pg"; puts PG::VERSION')
        info["redis_server"] = _version("redis-server", "--version").split()[2].lstrip("v=")
    return info


@dataclass
class Cell:
    """The runs of one engine, workload and concurrency (one per repetition)."""

    runs: list[Run]

    @property
    def median(self) -> float:
        return statistics.median(r.drain_rate for r in self.runs)

    @property
    def spread(self) -> str:
        rates = [r.drain_rate for r in self.runs]
        return f"{min(rates):.0f}–{max(rates):.0f}"

    def median_of(self, value: str) -> float:
        return statistics.median(float(r.as_dict()[value]) for r in self.runs)


def cells(runs: list[Run]) -> dict[tuple[str, str, int], Cell]:
    out: dict[tuple[str, str, int], Cell] = {}
    for r in runs:
        out.setdefault((r.engine, r.workload, r.concurrency), Cell([])).runs.append(r)
    return out


def best(runs: list[Run], engine: str, workload: str) -> tuple[int, Cell] | None:
    found = [(c, cell) for (e, w, c), cell in cells(runs).items() if e == engine and w == workload]
    return max(found, key=lambda item: item[1].median, default=None)


def _machine_line(info: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in info.items())


def report(runs: list[Run], info: dict[str, Any], database: str, jobs: int) -> dict[str, Any]:
    print()
    print(f"Machine: {_machine_line(info)}")
    print(f"Database: {database}")
    print()
    print(
        "Per engine/workload/concurrency, median of the repetitions (drain jobs/s = jobs /"
        " (worker ready → last job end); start-up excluded):"
    )
    print(
        f"{'engine':8} {'workload':13} {'conc':>4} {'drain/s':>8} {'(min–max)':>11}"
        f" {'to exit/s':>9} {'enqueue/s':>9} {'start-up s':>10} {'cpu ms/job':>10}"
        f" {'load':>5}"
    )
    for (engine, workload, concurrency), cell in sorted(cells(runs).items()):
        to_exit = (
            f"{cell.median_of('ready_to_burst_exit_jobs_per_s'):9.0f}"
            if engine == "ours"
            else f"{'-':>9}"
        )
        print(
            f"{engine:8} {workload:13} {concurrency:>4} {cell.median:8.0f} {cell.spread:>11}"
            f" {to_exit} {cell.median_of('enqueue_jobs_per_s'):9.0f}"
            f" {cell.median_of('startup_seconds'):10.2f}"
            f" {cell.median_of('worker_cpu_ms_per_job'):10.3f}"
            f" {cell.median_of('load_average_1min_before'):5.1f}"
        )
    print()
    print(f"Best concurrency per workload ({jobs} jobs, one worker process, median drain jobs/s):")
    print(
        f"{'workload':13} {'ours':>7} {'(c)':>4} {'Sidekiq':>8} {'(c)':>4} {'ours/Sidekiq':>12}"
        f" {'target':>7}  result"
    )
    summary: dict[str, Any] = {}
    for workload in WORKLOADS:
        ours = best(runs, "ours", workload)
        if ours is None:
            continue
        theirs = best(runs, "sidekiq", SIDEKIQ_COUNTERPART[workload])
        ours_rate = ours[1].median
        theirs_rate = theirs[1].median if theirs else None
        ratio = ours_rate / theirs_rate if theirs_rate else None
        verdict = "PASS" if ours_rate >= TARGETS[workload] else "MISS"
        print(
            f"{workload:13} {ours_rate:7.0f} {ours[0]:>4}"
            f" {(f'{theirs_rate:.0f}' if theirs_rate else '-'):>8}"
            f" {(str(theirs[0]) if theirs else '-'):>4}"
            f" {(f'{ratio:.2f}' if ratio else '-'):>12} {TARGETS[workload]:7.0f}  {verdict}"
        )
        summary[workload] = {
            "ours_drain_jobs_per_s": round(ours_rate, 1),
            "ours_concurrency": ours[0],
            "ours_enqueue_jobs_per_s": round(ours[1].median_of("enqueue_jobs_per_s"), 1),
            "ours_worker_cpu_ms_per_job": ours[1].median_of("worker_cpu_ms_per_job"),
            "sidekiq_workload": SIDEKIQ_COUNTERPART[workload] if theirs else None,
            "sidekiq_drain_jobs_per_s": round(theirs_rate, 1) if theirs_rate else None,
            "sidekiq_concurrency": theirs[0] if theirs else None,
            "sidekiq_enqueue_jobs_per_s": (
                round(theirs[1].median_of("enqueue_jobs_per_s"), 1) if theirs else None
            ),
            "sidekiq_worker_cpu_ms_per_job": (
                theirs[1].median_of("worker_cpu_ms_per_job") if theirs else None
            ),
            "ratio_ours_to_sidekiq": round(ratio, 3) if ratio else None,
            "target_jobs_per_s": TARGETS[workload],
            "result": verdict,
        }
    return summary


# Main -------------------------------------------------------------------------------------------


def _concurrencies(text: str) -> list[int]:
    values = [int(part) for part in text.split(",") if part.strip()]
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError("a comma-separated list of positive integers")
    return values


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="bench/engine.py", description="Job engine throughput, ours against Sidekiq."
    )
    parser.add_argument("--database-url", default=None)
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument("--rows", type=int, default=None, help="repositories (default: --jobs)")
    parser.add_argument("--batch", type=int, default=1000, help="jobs per enqueue transaction")
    parser.add_argument("--concurrency", type=_concurrencies, default=[10, 20, 40])
    parser.add_argument("--repeat", type=int, default=3, help="runs of each configuration")
    parser.add_argument(
        "--workloads", type=lambda t: t.split(","), default=list(WORKLOADS), help="subset"
    )
    parser.add_argument("--compare", choices=["sidekiq"], default=None)
    parser.add_argument("--no-warmup", action="store_true")
    parser.add_argument("--results", type=Path, default=RESULTS_PATH)
    args = parser.parse_args(argv)
    unknown = set(args.workloads) - set(WORKLOADS)
    if unknown:
        parser.error(f"unknown workload(s): {', '.join(sorted(unknown))}")
    return args


async def bench(args: argparse.Namespace, admin_url: str, source: str) -> int:
    jobs: int = args.jobs
    rows: int = args.rows or jobs
    compare = args.compare == "sidekiq"
    workloads = [w for w in WORKLOADS if w in args.workloads]
    if compare:
        installed = ensure_sidekiq_packages()
        if installed:
            print(f"installed: {' '.join(installed)}")
    runs: list[Run] = []
    started = datetime.now(UTC)
    async with contextlib.AsyncExitStack() as stack:
        url = await stack.enter_async_context(bench_database(admin_url, rows))
        info = machine(str(await _fetchval(url, "SHOW server_version")), compare)
        print(f"Machine: {_machine_line(info)}", flush=True)
        setup: SidekiqSetup | None = None
        if compare:
            work_dir = Path(tempfile.mkdtemp(prefix="cocov-bench-sidekiq-"))
            stack.callback(shutil.rmtree, work_dir, True)
            redis_url = stack.enter_context(private_redis(work_dir))
            setup = SidekiqSetup(redis_url, url, rows, args.batch, work_dir / "sidekiq.log")
        if not args.no_warmup:  # untimed: caches, first connections, page faults
            await run_ours(url, "real", args.concurrency[0], min(jobs, 1000), rows, args.batch, 0)
            if setup is not None:
                await run_sidekiq(setup, "real", args.concurrency[0], min(jobs, 1000), 0)
        # Interleaved, so that the load of the machine weighs on both engines alike.
        for repetition in range(1, args.repeat + 1):
            for workload in workloads:
                for concurrency in args.concurrency:
                    run = await run_ours(
                        url, workload, concurrency, jobs, rows, args.batch, repetition
                    )
                    runs.append(run)
                    line = f"  #{repetition} {workload:13} c={concurrency:<3}"
                    line += f" ours {run.drain_rate:6.0f}"
                    if setup is not None and workload in ("noop", "real"):
                        theirs = await run_sidekiq(setup, workload, concurrency, jobs, repetition)
                        runs.append(theirs)
                        line += f"  Sidekiq {theirs.drain_rate:6.0f}"
                    print(f"{line} jobs/s  (load {run.load_average:.1f})", flush=True)
    summary = report(runs, info, source, jobs)
    args.results.parent.mkdir(parents=True, exist_ok=True)
    document = {
        "timestamp": started.isoformat(timespec="seconds"),
        "command": " ".join(["python", "bench/engine.py", *sys.argv[1:]]),
        "machine": info,
        "database": source,
        "jobs": jobs,
        "rows": rows,
        "enqueue_batch": args.batch,
        "repetitions": args.repeat,
        "measured": (
            "drain jobs/s = jobs / (worker ready -> last job end), stamped in the one worker"
            " process; ready = just before Worker.run() (ours) or Sidekiq's :startup event;"
            " start-up (spawn -> ready) reported apart; medians of the repetitions, best"
            " concurrency by median; ready_to_burst_exit adds our last status writes, the"
            " 0.1 s burst poll and the shutdown"
        ),
        "targets_jobs_per_s": TARGETS,
        "summary": summary,
        "runs": [r.as_dict() for r in runs],
    }
    write_results(args.results, document)
    return 0


def write_results(path: Path, document: dict[str, Any]) -> None:
    """Write a benchmark's figures as indented JSON, and say where."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document, indent=2) + "\n")
    print(f"\nwritten: {path}")


def run_on_server(
    prog: str, database_url: str | None, bench: Callable[[str, str], Awaitable[int]]
) -> int:
    """``bench(admin_url, source)`` on the server :func:`server_url` picks; its exit status,
    or 1 with the reason on standard error when a run fails."""
    try:
        with server_url(database_url) as (admin_url, source):
            return asyncio.run(bench(admin_url, source))
    except BenchError as exc:
        print(f"{prog}: run failed: {exc}", file=sys.stderr)
        return 1


def main(argv: list[str]) -> int:
    if argv[:1] == ["_worker"]:
        worker_parser = argparse.ArgumentParser(prog="bench/engine.py _worker")
        worker_parser.add_argument("--database-url", required=True)
        worker_parser.add_argument("--concurrency", type=int, required=True)
        worker_args = worker_parser.parse_args(argv[1:])
        asyncio.run(_worker_main(worker_args.database_url, worker_args.concurrency))
        return 0
    args = parse_args(argv)
    return run_on_server(
        "bench/engine.py", args.database_url, lambda url, source: bench(args, url, source)
    )


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
