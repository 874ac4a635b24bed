"""``cocov-jobs jobs show|retry|cancel`` and ``stats`` as separate processes on a real queue."""

from __future__ import annotations

import subprocess
from collections.abc import Callable

from cocov_jobs.engine import queue
from cocov_jobs.services import Services
from tests.support.admin import failed_job
from tests.support.helpers import job_log, jobs

Cli = Callable[..., subprocess.CompletedProcess[str]]


async def test_show_retry_cancel_and_stats(services: Services, cli: Cli) -> None:
    failed = await failed_job(services)
    async with services.sessions.begin() as session:
        later = await queue.enqueue(session, "update_commits_author", delay=3600, user_id=1)
    shown = cli("jobs", "show", str(failed)).stdout
    assert "update_commits_author" in shown and "failed" in shown
    assert "JobArgumentsError" in shown and "Traceback" in shown
    stats = cli("stats").stdout
    assert "update_commits_author" in stats and "1 failed" in stats
    assert "scheduled" in cli("jobs", "list", "--state", "scheduled").stdout
    assert cli("jobs", "retry", str(failed)).stdout.strip() == f"job {failed} queued"
    assert {j["id"]: j["status"] for j in await jobs(services)} == {
        failed: "queued",
        later: "queued",
    }
    assert cli("jobs", "cancel", str(later)).stdout.strip() == f"job {later} canceled"
    assert (await job_log(services, later))[-1]["status"] == "canceled"
    again = cli("jobs", "cancel", str(later), check=False)
    assert again.returncode == 1 and "not waiting or running" in again.stderr
    missing = cli("jobs", "show", "999999", check=False)
    assert missing.returncode == 1 and "no job 999999" in missing.stderr


async def test_retry_all_failed_and_usage_errors(services: Services, cli: Cli) -> None:
    await failed_job(services)
    await failed_job(services)
    assert cli("jobs", "retry", "--all-failed").stdout.startswith("2 failed job(s)")
    assert [j["status"] for j in await jobs(services)] == ["queued", "queued"]
    assert cli("jobs", "retry", check=False).returncode == 2
    assert cli("jobs", "list", "--state", "sleeping", check=False).returncode == 2
