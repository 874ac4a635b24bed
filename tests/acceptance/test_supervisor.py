"""``cocov-jobs worker --processes N`` and ``web --workers N``: children that share the work,
are started again when they die, stop with the supervisor's signals and die with it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path

import httpx
from sqlalchemy import text

from cocov_jobs.engine import queue
from cocov_jobs.services import Services
from cocov_jobs.testing.processes import CLI, WAIT, cli_env, free_port, until
from tests.support.helpers import insert, jobs


def cocov(database_url: str, redis_url: str, *args: str, **env: str) -> subprocess.Popen[str]:
    """``cocov-jobs ARGS`` on the test stores, its JSON log lines on a pipe."""
    return subprocess.Popen(
        [*CLI, *args],
        env=cli_env(
            COCOV_DATABASE_URL=database_url,
            COCOV_REDIS_URL=redis_url,
            COCOV_LOG_FORMAT="json",
            **env,
        ),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


def start(database_url: str, redis_url: str, *args: str, **env: str) -> subprocess.Popen[str]:
    return cocov(database_url, redis_url, "worker", "--processes", "2", *args, **env)


async def worker_pids(services: Services) -> set[int]:
    async with services.engine.connect() as conn:
        rows = await conn.execute(text("SELECT pid FROM cocov_jobs_workers"))
        return {int(pid) for (pid,) in rows}


def alive(pid: int) -> bool:
    """Whether ``pid`` runs: a zombie (dead, not yet reaped by its new parent) does not."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2] != "Z"


async def test_children_share_a_burst_and_the_supervisor_exits_with_them(
    services: Services, database_url: str, redis_url: str
) -> None:
    ids = [
        await insert(
            services,
            "repositories",
            name=f"r{i}",
            default_branch="main",
            token=f"crt_{i}",
            github_id=i,
        )
        for i in range(1, 41)
    ]
    async with services.sessions.begin() as session:
        for repository_id in ids:
            await queue.enqueue(
                session, "compute_repository_commits_size", repository_id=repository_id
            )
    supervisor = start(database_url, redis_url, "--burst")
    _, stderr = supervisor.communicate(timeout=WAIT)
    assert supervisor.returncode == 0, stderr
    started = [
        json.loads(line)
        for line in stderr.splitlines()
        if line.startswith("{") and json.loads(line).get("event") == "worker started"
    ]
    assert len(started) == 2  # two processes, each a worker
    assert await jobs(services) == []


async def test_a_dead_child_is_started_again_and_sigterm_stops_them_all(
    services: Services, database_url: str, redis_url: str
) -> None:
    port = free_port()
    supervisor = start(database_url, redis_url, COCOV_SIDEKIQ_PROBE_PORT=str(port))
    try:
        await until(lambda: _two(services))
        first = await worker_pids(services)
        assert supervisor.pid not in first
        async with httpx.AsyncClient() as client:
            ready = await client.get(f"http://127.0.0.1:{port}/system/probes/readiness")
        assert ready.status_code == 200  # the supervisor's one probe server
        victim = min(first)
        os.kill(victim, signal.SIGKILL)
        await until(lambda: _replaced(services, victim))
        supervisor.send_signal(signal.SIGTERM)
        assert supervisor.wait(timeout=WAIT) == 0
    finally:
        if supervisor.poll() is None:
            supervisor.kill()
    # Every child that stopped unregistered; the SIGKILLed one could not (its row goes stale).
    assert await worker_pids(services) == {victim}


async def test_children_die_with_a_killed_supervisor(
    services: Services, database_url: str, redis_url: str
) -> None:
    supervisor = start(database_url, redis_url, COCOV_SIDEKIQ_PROBE_PORT=str(free_port()))
    try:
        await until(lambda: _two(services))
        children = await worker_pids(services)
        supervisor.send_signal(signal.SIGKILL)
        supervisor.wait(timeout=WAIT)
        await until(lambda: not any(alive(pid) for pid in children))
    finally:
        if supervisor.poll() is None:
            supervisor.kill()


async def _two(services: Services) -> bool:
    return len(await worker_pids(services)) == 2


async def _replaced(services: Services, victim: int) -> bool:
    living = {pid for pid in await worker_pids(services) if alive(pid)}
    return victim not in living and len(living) == 2


def children_of(pid: int) -> set[int]:
    """Living processes whose parent is ``pid`` (from ``/proc``)."""
    found = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:  # exited meanwhile
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        if int(fields[1]) == pid and fields[0] != "Z":
            found.add(int(entry.name))
    return found


def start_web(
    database_url: str, redis_url: str, port: int, workers: int = 2
) -> subprocess.Popen[str]:
    return cocov(
        database_url,
        redis_url,
        *("web", "--workers", str(workers), "--port", str(port)),
        COCOV_REDIS_CACHE_URL=redis_url,
    )


async def test_web_workers_serve_one_port_restart_a_killed_child_and_stop_on_sigterm(
    database_url: str, redis_url: str
) -> None:
    port = free_port()
    supervisor = start_web(database_url, redis_url, port)
    url = f"http://127.0.0.1:{port}/system/probes/readiness"

    async def serving() -> bool:
        # A new connection each time: the kernel hands it to either child.
        async with httpx.AsyncClient() as client:
            try:
                return (await client.get(url)).status_code == 200
            except httpx.TransportError:
                return False

    try:
        await until(lambda: len(children_of(supervisor.pid)) == 2)
        await until(serving)
        first = children_of(supervisor.pid)
        victim = min(first)
        os.kill(victim, signal.SIGKILL)
        await until(lambda: len(children_of(supervisor.pid) - {victim}) == 2)
        second = children_of(supervisor.pid)
        assert victim not in second and max(first) in second
        await until(serving)
        for _ in range(10):
            assert await serving()
        supervisor.send_signal(signal.SIGTERM)
        _, stderr = supervisor.communicate(timeout=WAIT)
    finally:
        if supervisor.poll() is None:
            supervisor.kill()
    assert supervisor.returncode == 0, stderr
    assert not any(alive(pid) for pid in second)
    events = [json.loads(line) for line in stderr.splitlines() if line.startswith("{")]
    started = [e["pid"] for e in events if e.get("event") == "web process started"]
    assert sorted(started) == sorted(first | second)
    assert any(e.get("event") == "web process exited; starting it again" for e in events)


async def test_report_parsers_die_with_their_web_process(
    services: Services, database_url: str, redis_url: str
) -> None:
    """A coverage upload starts the web process's parser processes; a web process killed with
    SIGKILL (nothing runs its shutdown) must not leave them behind."""
    await insert(
        services, "repositories", name="r", default_branch="main", token="crt_r", github_id=1
    )
    port = free_port()
    web = start_web(database_url, redis_url, port, workers=1)
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:

            async def ready() -> bool:
                try:
                    return (await client.get("/system/ping")).is_success
                except httpx.TransportError:
                    return False

            await until(ready)
            upload = await client.post(
                "/v1/reports",
                json={"commit_sha": "a" * 40, "data": {"a.rb": "MQ=="}},
                headers={"Authorization": "token crt_r"},
            )
        assert upload.status_code < 300, upload.text
        parsers = children_of(web.pid)
        assert parsers
        web.kill()
        web.wait(timeout=WAIT)
        await until(lambda: not any(alive(pid) for pid in parsers))
    finally:
        if web.poll() is None:
            web.kill()
