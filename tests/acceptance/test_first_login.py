"""A fresh standalone installation, from nothing to a logged-in dashboard with only the
README's commands: ``cocov-jobs run`` (embedded stores) says how to get a token,
``cocov-jobs tokens create`` prints one, the dashboard's login form accepts it."""

from __future__ import annotations

import asyncio
import re
import signal
import subprocess
from pathlib import Path

import httpx

from cocov_jobs.testing.processes import CLI, WAIT, cli_env, free_port, until
from tests.acceptance.test_worker_process import start_run

#: What ``run`` logs while the users table is empty.
HINT = "no user yet: run 'cocov-jobs tokens create'"


def _csrf(page: httpx.Response) -> str:
    found = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
    assert found, page.text
    return found.group(1)


async def _serving(client: httpx.AsyncClient) -> None:
    async def answers() -> bool:
        try:
            return (await client.get("/system/ping")).status_code == 204
        except httpx.TransportError:
            return False

    await until(answers)


async def test_run_then_tokens_create_then_log_in(tmp_path: Path) -> None:
    env = cli_env(COCOV_DATA_DIR=str(tmp_path / "cocov"), COCOV_LOG_FORMAT="json")
    log, port = tmp_path / "run.log", free_port()
    proc = start_run(env, log, port)
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
            await _serving(client)
            assert log.read_text().count(HINT) == 1
            created = await asyncio.to_thread(
                subprocess.run,
                [*CLI, "tokens", "create"],
                env=env,
                capture_output=True,
                text=True,
                timeout=WAIT,
            )
            assert created.returncode == 0, created.stderr
            token = created.stdout.strip()
            assert re.fullmatch(r"cos_[0-9a-f]{64}", token)
            form = await client.get("/dashboard/login")
            answer = await client.post(
                "/dashboard/login", data={"token": token, "csrf_token": _csrf(form)}
            )
            assert (answer.status_code, answer.headers["location"]) == (303, "/dashboard")
            overview = await client.get("/dashboard")
            assert overview.status_code == 200 and "<h1>Overview</h1>" in overview.text
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=WAIT) == 0
    # The next start has a user: no hint.
    log2 = tmp_path / "run2.log"
    proc = start_run(env, log2, port)
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
            await _serving(client)
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=WAIT) == 0
    assert HINT not in log2.read_text()
