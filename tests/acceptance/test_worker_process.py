"""Worker processes: SIGKILL mid-job, SIGTERM with a running job, the embedded default."""

from __future__ import annotations

import asyncio
import signal
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import httpx
import pytest
from sqlalchemy import text

from cocov_jobs.engine import queue
from cocov_jobs.services import Services
from cocov_jobs.testing.processes import CLI, WAIT, cli_env, free_port, until
from tests.support.helpers import insert, job_log, jobs

#: (job id, repository id, release the row lock)
Blocked = tuple[int, int, Callable[[], Awaitable[None]]]


def start_worker(
    database_url: str, redis_url: str, *args: str, **env: str
) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [*CLI, "worker", *args],
        env=cli_env(
            COCOV_DATABASE_URL=database_url,
            COCOV_REDIS_URL=redis_url,
            COCOV_SIDEKIQ_PROBE_PORT="0",
            COCOV_LOG_FORMAT="json",
            **env,
        ),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.fixture
async def blocked_job(
    services: Services,
) -> AsyncIterator[tuple[int, int, Callable[[], Awaitable[None]]]]:
    """A size job that blocks on a row lock the test holds; yields (job id, repo id, release)."""
    repo = await insert(
        services, "repositories", name="api", default_branch="main", token="crt_1", github_id=1
    )
    await insert(
        services,
        "commits",
        repository_id=repo,
        sha="a" * 40,
        author_name="A",
        author_email="a@x",
        message="m",
        clone_status=2,
        clone_size=123,
    )
    async with services.sessions.begin() as session:
        job_id = await queue.enqueue(session, "compute_repository_commits_size", repository_id=repo)
    assert job_id is not None
    holder = await services.engine.connect()
    await holder.begin()
    await holder.execute(text("SELECT 1 FROM repositories WHERE id = :r FOR UPDATE"), {"r": repo})

    async def release() -> None:
        if holder.in_transaction():
            await holder.rollback()

    try:
        yield job_id, repo, release
    finally:
        await release()
        await holder.close()


async def job_is_waiting_on_lock(services: Services) -> bool:
    async with services.engine.connect() as conn:
        waiting = await conn.scalar(
            text(
                "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
                " AND query ~ '^\\s*UPDATE repositories'"
            )
        )
    return bool(waiting)


async def commits_size(services: Services, repo: int) -> int:
    async with services.engine.connect() as conn:
        return int(
            await conn.scalar(
                text("SELECT commits_size FROM repositories WHERE id = :r"), {"r": repo}
            )
        )


async def test_job_of_a_killed_worker_runs_again_and_completes(
    services: Services,
    database_url: str,
    redis_url: str,
    blocked_job: tuple[int, int, Callable[[], Awaitable[None]]],
) -> None:
    job_id, repo, release = blocked_job
    first = start_worker(database_url, redis_url, COCOV_HEARTBEAT_TIMEOUT="2")
    try:
        await until(lambda: job_is_waiting_on_lock(services))
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=WAIT)
    finally:
        if first.poll() is None:
            first.kill()
    (row,) = await jobs(services)
    assert row["id"] == job_id and row["status"] == "picked"  # orphaned by the dead worker
    await release()
    second = start_worker(database_url, redis_url, "--burst", COCOV_HEARTBEAT_TIMEOUT="2")
    assert second.wait(timeout=WAIT) == 0, second.stderr.read() if second.stderr else ""
    assert await commits_size(services, repo) == 123
    assert await jobs(services) == []
    assert (await job_log(services, job_id))[-1]["status"] == "successful"


async def test_sigterm_lets_the_running_job_finish(
    services: Services,
    database_url: str,
    redis_url: str,
    blocked_job: tuple[int, int, Callable[[], Awaitable[None]]],
) -> None:
    _, repo, release = blocked_job
    worker = start_worker(database_url, redis_url, COCOV_SHUTDOWN_TIMEOUT="30")
    try:
        await until(lambda: job_is_waiting_on_lock(services))
        worker.send_signal(signal.SIGTERM)
        await asyncio.sleep(0.3)  # give the signal time to land while the job is still blocked
        assert worker.poll() is None  # still waiting for its job
        await release()
        assert worker.wait(timeout=WAIT) == 0
    finally:
        if worker.poll() is None:
            worker.kill()
    assert await commits_size(services, repo) == 123
    assert await jobs(services) == []


async def test_sigterm_after_the_timeout_puts_the_job_back(
    services: Services,
    database_url: str,
    redis_url: str,
    blocked_job: tuple[int, int, Callable[[], Awaitable[None]]],
) -> None:
    job_id, _, release = blocked_job
    worker = start_worker(database_url, redis_url, COCOV_SHUTDOWN_TIMEOUT="0.5")
    try:
        await until(lambda: job_is_waiting_on_lock(services))
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(timeout=WAIT) == 0
    finally:
        if worker.poll() is None:
            worker.kill()
    (row,) = await jobs(services)
    assert row["id"] == job_id and row["status"] == "queued" and row["attempts"] == 0
    await release()


async def test_quiet_stops_fetching_and_keeps_the_process_until_sigterm(
    services: Services,
    database_url: str,
    redis_url: str,
    blocked_job: tuple[int, int, Callable[[], Awaitable[None]]],
) -> None:
    """``cocov-jobs quiet`` (SIGTSTP): the running job finishes, no new job starts."""
    _, repo, release = blocked_job
    worker = start_worker(database_url, redis_url)
    try:
        await until(lambda: job_is_waiting_on_lock(services))
        quiet = await asyncio.to_thread(
            subprocess.run,
            [*CLI, "quiet"],
            env=cli_env(COCOV_DATABASE_URL=database_url, COCOV_REDIS_URL=redis_url),
            capture_output=True,
            text=True,
            timeout=WAIT,
            check=True,
        )
        assert "quieted 1 worker process(es)" in quiet.stdout
        async with services.sessions.begin() as session:
            later = await queue.enqueue(session, "update_commits_author", user_id=1)
        await release()
        await until(lambda: _only_waiting(services, later))  # the running job finished
        assert await commits_size(services, repo) == 123
        assert worker.poll() is None  # quiet, not stopped
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(timeout=WAIT) == 0
    finally:
        if worker.poll() is None:
            worker.kill()
    assert await _only_waiting(services, later)  # never fetched


async def _only_waiting(services: Services, job_id: int) -> bool:
    return [(j["id"], j["status"]) for j in await jobs(services)] == [(job_id, "queued")]


async def test_run_on_embedded_stores_serves_probes_and_reuses_data(tmp_path: Path) -> None:
    data_dir = tmp_path / "cocov"
    env = cli_env(COCOV_DATA_DIR=str(data_dir), COCOV_LOG_FORMAT="json")
    for round_ in range(2):
        log = tmp_path / f"run{round_}.log"
        port = free_port()
        proc = start_run(env, log, port)
        try:
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:

                async def ready() -> bool:
                    try:
                        r = await client.get("/system/probes/readiness")
                    except httpx.TransportError:
                        return False
                    return r.status_code == 200

                await until(ready)
                live = await client.get("/system/probes/liveness")
                assert live.status_code == 200 and live.json() == {"ok": True}
                assert (await client.get("/system/ping")).status_code == 204
            text_ = log.read_text()
            assert '"using embedded stores"' in text_ and "postgresql" in text_ and "redis" in text_
        finally:
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=WAIT) == 0
        if round_ == 0:
            pg_version = (data_dir / "postgres" / "PG_VERSION").stat().st_mtime
    assert (data_dir / "postgres" / "PG_VERSION").stat().st_mtime == pg_version  # no second initdb
    assert not (data_dir / "postgres" / "postmaster.pid").exists()  # stopped on exit


def start_run(env: dict[str, str], log: Path, port: int) -> subprocess.Popen[str]:
    with log.open("w") as stderr:
        return subprocess.Popen(
            [*CLI, "run", "--port", str(port)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
            text=True,
        )
