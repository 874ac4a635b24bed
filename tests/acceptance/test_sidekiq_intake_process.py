"""``cocov-jobs worker`` processes taking in what Ruby's Sidekiq and ActiveJob clients enqueue:
``--burst`` drains the intake, SIGKILL of the taking-in worker loses and doubles nothing, two
workers share the queue, and ``cocov-jobs sidekiq import`` moves the retry and dead sets."""

from __future__ import annotations

import asyncio
import json
import random
import signal
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import httpx
import pytest
import redis.asyncio as aioredis
from sqlalchemy import text

from cocov_jobs.services import Services
from cocov_jobs.sidekiq.intake import INFLIGHT_PREFIX, PROCESSES, SCHEDULE
from cocov_jobs.testing.processes import CLI, WAIT, cli_env, free_port, until
from tests.support.helpers import insert
from tests.support.sidekiq import enqueue_ruby

#: ``COCOV_HEARTBEAT_TIMEOUT`` of the workers: a killed one's payloads are recovered after it.
HEARTBEAT_TIMEOUT = "2"
#: Class and job of the payloads counted here: a no-op for users that do not exist.
CLASS, JOB = "UpdateCommitsAuthorJob", "update_commits_author"

Start = Callable[..., subprocess.Popen[str]]


async def soon(condition: Callable[[], Awaitable[bool]]) -> None:
    """:func:`until`, looking every 2 ms: to catch a worker in the middle of a round."""
    async with asyncio.timeout(WAIT):
        while not await condition():  # noqa: ASYNC110 - another process, no event to await
            await asyncio.sleep(0.002)


@pytest.fixture
async def start(database_url: str, redis_url: str, tmp_path: Path) -> AsyncIterator[Start]:
    """Start ``cocov-jobs worker ARGS`` taking in the test Redis, its log in ``tmp_path``;
    killed at the end if still running."""
    started: list[subprocess.Popen[str]] = []

    def run(*args: str, **env: str) -> subprocess.Popen[str]:
        log = (tmp_path / f"worker-{len(started)}.log").open("w")
        process = subprocess.Popen(
            [*CLI, "worker", *args],
            env=cli_env(
                COCOV_DATABASE_URL=database_url,
                COCOV_REDIS_URL=redis_url,
                COCOV_REDIS_CACHE_URL=redis_url,
                COCOV_SIDEKIQ_REDIS_URL=redis_url,
                COCOV_HEARTBEAT_TIMEOUT=HEARTBEAT_TIMEOUT,
                COCOV_LOG_FORMAT="json",
                **{"COCOV_SIDEKIQ_PROBE_PORT": "0", **env},
            ),
            stdout=subprocess.DEVNULL,
            stderr=log,
            text=True,
        )
        log.close()
        started.append(process)
        return process

    yield run
    for process in started:
        if process.poll() is None:
            process.kill()
        process.wait(timeout=WAIT)


async def stop(services: Services, worker: subprocess.Popen[str]) -> None:
    """SIGTERM ``worker`` and expect a clean exit; when it hangs, show what PostgreSQL waits on."""
    worker.send_signal(signal.SIGTERM)
    try:
        assert worker.wait(timeout=WAIT) == 0
    except subprocess.TimeoutExpired:
        async with services.engine.connect() as conn:
            activity = (
                await conn.execute(
                    text(
                        "SELECT pid, state, wait_event_type, wait_event, left(query, 80)"
                        " FROM pg_stat_activity WHERE datname = current_database()"
                    )
                )
            ).all()
        raise AssertionError(f"worker {worker.pid} ignored SIGTERM; backends: {activity}") from None


def bulk(first: int, count: int) -> list[dict[str, object]]:
    """One ``push_bulk`` of ``count`` payloads for users ``first …``."""
    return [{"class": CLASS, "bulk": [[user] for user in range(first, first + count)]}]


async def scalar(services: Services, sql: str) -> int:
    async with services.engine.connect() as conn:
        return int(await conn.scalar(text(sql)) or 0)


async def taken_keys(services: Services) -> set[str]:
    async with services.engine.connect() as conn:
        return set(await conn.scalars(text("SELECT key FROM cocov_jobs_sidekiq_taken")))


async def in_flight(redis: aioredis.Redis, pid: int | None = None) -> int:
    """Payloads in the in-flight lists of the registered intake processes (of ``pid`` only,
    when given: intake ids are ``host:pid:random``)."""
    ids = [i for i in await redis.smembers(PROCESSES) if pid is None or f":{pid}:" in i.decode()]
    return sum([await redis.llen(INFLIGHT_PREFIX.encode() + i) for i in ids])


async def held_payloads(redis: aioredis.Redis, pid: int) -> set[str]:
    """jids in the in-flight lists of the intake of process ``pid``."""
    ids = [i for i in await redis.smembers(PROCESSES) if f":{pid}:" in i.decode()]
    return {
        json.loads(raw)["jid"]
        for i in ids
        for raw in await redis.lrange(INFLIGHT_PREFIX.encode() + i, 0, -1)
    }


async def all_done(services: Services, redis: aioredis.Redis, count: int) -> bool:
    """Every payload taken in and every job run: queue, in-flight lists and job table empty."""
    return (
        await redis.llen("queue:default") == 0
        and await in_flight(redis) == 0
        and await scalar(services, "SELECT count(*) FROM cocov_jobs_sidekiq_taken") == count
        and await scalar(services, "SELECT count(*) FROM pgqueuer") == 0
    )


async def assert_each_once(services: Services, jids: list[str]) -> None:
    """Each payload became exactly one job, which ran once (no lost, no doubled insert)."""
    assert len(set(jids)) == len(jids)
    assert await taken_keys(services) == set(jids)
    inserted = await scalar(
        services,
        f"SELECT count(*) FROM pgqueuer_log WHERE entrypoint = '{JOB}' AND status = 'queued'",
    )
    succeeded = await scalar(
        services,
        f"SELECT count(*) FROM pgqueuer_log WHERE entrypoint = '{JOB}' AND status = 'successful'",
    )
    assert (inserted, succeeded) == (len(jids), len(jids))


async def test_worker_burst_takes_in_then_runs(
    services: Services,
    redis: aioredis.Redis,
    redis_url: str,
    cli: Callable[..., subprocess.CompletedProcess[str]],
) -> None:
    repository = await insert(
        services, "repositories", name="api", default_branch="main", token="crt", github_id=1
    )
    await insert(
        services,
        "commits",
        repository_id=repository,
        sha="a" * 40,
        author_name="A",
        author_email="a@x",
        message="m",
        clone_status=2,
        clone_size=321,
    )
    await enqueue_ruby(
        redis_url,
        [
            {"class": "ComputeRepositoryCommitsSizeJob", "args": [repository]},
            {"class": "ProcessCommitJob", "args": [99], "wait": 3600},
        ],
    )
    cli("worker", "--burst", COCOV_SIDEKIQ_REDIS_URL=redis_url)
    size = await scalar(services, f"SELECT commits_size FROM repositories WHERE id = {repository}")
    assert size == 321
    assert await redis.llen("queue:default") == 0
    assert await redis.exists(SCHEDULE) == 0
    waiting = await scalar(
        services,
        "SELECT count(*) FROM pgqueuer WHERE entrypoint = 'process_commit'"
        " AND execute_after > now() + interval '3500 seconds'",
    )
    assert waiting == 1


@pytest.mark.slow
async def test_sigkill_of_the_taking_in_worker_loses_no_payload_and_doubles_none(
    services: Services, redis: aioredis.Redis, redis_url: str, start: Start
) -> None:
    """1,000 payloads in 8 waves; each wave's worker is killed once it holds payloads in flight
    (after a delay of up to 20 ms, so that the kill lands mid-round), and a new one is started.
    A kill between the commit and the removal from Redis is shown by
    ``tests/integration/test_sidekiq_intake.py::test_a_payload_replayed_after_its_commit_inserts_nothing``
    and ``bench/faults/intake_kill.py``."""
    rng = random.Random(11)
    waves, per_wave = 8, 125
    jids: list[str] = []
    held_at_kill: list[tuple[int, int]] = []  # (payloads in flight, of which already taken)
    worker = start()
    for wave in range(waves):
        jids += await enqueue_ruby(redis_url, bulk(wave * per_wave + 1, per_wave))

        async def holding_or_empty(pid: int = worker.pid) -> bool:
            held = await in_flight(redis, pid)
            return held > 0 or await redis.llen("queue:default") == 0

        await soon(holding_or_empty)
        await asyncio.sleep(rng.uniform(0, 0.02))
        worker.send_signal(signal.SIGKILL)
        worker.wait(timeout=WAIT)
        held = await held_payloads(redis, worker.pid)
        held_at_kill.append((len(held), len(held & await taken_keys(services))))
        worker = start()
    await until(lambda: all_done(services, redis, len(jids)))
    await stop(services, worker)
    print("payloads in flight at each kill (held, of which committed):", held_at_kill)
    caught = sum(1 for held, _ in held_at_kill if held)
    assert caught >= waves // 2, f"only {caught} of {waves} kills hit payloads in flight"
    await assert_each_once(services, jids)
    assert await redis.smembers(PROCESSES) == set()


@pytest.mark.slow
async def test_two_workers_take_in_2000_payloads_each_once(
    services: Services, redis: aioredis.Redis, redis_url: str, start: Start
) -> None:
    ports = [free_port(), free_port()]
    workers = [start(COCOV_SIDEKIQ_PROBE_PORT=str(port)) for port in ports]
    async with httpx.AsyncClient() as client:

        async def both_ready() -> bool:
            try:
                answers = [
                    await client.get(f"http://127.0.0.1:{p}/system/probes/readiness") for p in ports
                ]
            except httpx.TransportError:
                return False
            return all(a.status_code == 200 for a in answers)

        await until(both_ready)
        jids: list[str] = []
        for chunk in range(8):
            jids += await enqueue_ruby(redis_url, bulk(chunk * 250 + 1, 250))
        await until(lambda: all_done(services, redis, len(jids)))
        taken = []
        for port in ports:
            scrape = (await client.get(f"http://127.0.0.1:{port}/metrics")).text
            line = f'cocov_jobs_sidekiq_taken_total{{ruby_class="{CLASS}"}}'
            taken.append(
                next((float(x.split()[-1]) for x in scrape.splitlines() if x.startswith(line)), 0)
            )
    for worker in workers:
        await stop(services, worker)
    assert sum(taken) == 2000
    assert min(taken) > 0, f"one worker took everything: {taken}"
    await assert_each_once(services, jids)


async def test_sidekiq_import_command_moves_retry_and_dead(
    services: Services,
    redis: aioredis.Redis,
    redis_url: str,
    cli: Callable[..., subprocess.CompletedProcess[str]],
) -> None:
    retried, dead = await enqueue_ruby(
        redis_url,
        [
            {"class": "ProcessCommitJob", "args": [5], "fail": "retry", "error": "boom"},
            {
                "class": "ProcessCommitJob",
                "args": [6],
                "fail": "dead",
                "error": "gone",
                "retry_count": 24,
            },
        ],
    )
    preview = cli("sidekiq", "import", "--dry-run", COCOV_SIDEKIQ_REDIS_URL=redis_url).stdout
    assert retried in preview and dead in preview
    assert 'process_commit {"commit_id": 5}' in preview
    assert "held as failed" in preview
    assert "2 entries would be moved" in preview
    assert await redis.zcard("retry") == await redis.zcard("dead") == 1
    moved = cli("sidekiq", "import", COCOV_SIDEKIQ_REDIS_URL=redis_url).stdout
    assert "retry: 1 job(s), 0 kept as failed (cannot become a job), 0 moved before" in moved
    assert "dead: 1 job(s), 0 kept as failed (cannot become a job), 0 moved before" in moved
    again = cli("sidekiq", "import", COCOV_SIDEKIQ_REDIS_URL=redis_url).stdout
    assert "retry: 0 job(s)" in again and "dead: 0 job(s)" in again
    failed = cli("jobs", "list", "--state", "failed").stdout
    assert "ArgumentError: gone" in failed
    assert await taken_keys(services) == {retried, dead}
    unset = cli("sidekiq", "import", check=False)
    assert unset.returncode == 2
    assert "COCOV_SIDEKIQ_REDIS_URL is not set" in unset.stderr
