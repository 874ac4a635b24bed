"""``cocov-jobs jobs show|retry|cancel`` and ``stats`` as separate processes on a real queue."""

from __future__ import annotations

import json
import re
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


async def test_finished_jobs_are_listed_shown_and_measured(services: Services, cli: Cli) -> None:
    async with services.sessions.begin() as session, queue.enqueued_by("token:3"):
        done = await queue.enqueue(session, "compute_repository_commits_size", repository_id=77)
    failed = await failed_job(services)  # drains the queue: both run
    listed = [
        json.loads(line)
        for line in cli("jobs", "list", "--state", "finished", "--json").stdout.splitlines()
    ]
    assert {(r["id"], r["job"], r["outcome"]) for r in listed} == {
        (done, "compute_repository_commits_size", "succeeded"),
        (failed, "update_commits_author", "failed"),
    }
    by_argument = cli(
        "jobs", "list", "--state", "finished", "--argument", "repository_id=77", "--json"
    )
    assert [json.loads(line)["id"] for line in by_argument.stdout.splitlines()] == [done]
    failures = cli("jobs", "list", "--state", "finished", "--outcome", "failed").stdout
    assert "update_commits_author" in failures and "compute_repository" not in failures
    shown = cli("jobs", "show", str(done)).stdout
    assert f"job {done} compute_repository_commits_size" in shown
    assert '{"repository_id": 77}' in shown and "enqueued by token:3" in shown
    assert "finished: succeeded" in shown and re.search(r"\d\d:\d\d:\d\d UTC", shown)
    stats = cli("stats").stdout
    assert "Runs by job" in stats and "compute_repository_commits_size" in stats
    usage = cli("jobs", "list", "--outcome", "failed", check=False)
    assert usage.returncode == 2 and "--state finished" in usage.stderr
    bad_time = cli("jobs", "list", "--state", "finished", "--since", "soon", check=False)
    assert bad_time.returncode == 2 and "not a time" in bad_time.stderr


async def test_retry_all_failed_and_usage_errors(services: Services, cli: Cli) -> None:
    await failed_job(services)
    await failed_job(services)
    assert cli("jobs", "retry", "--all-failed").stdout.startswith("2 failed job(s)")
    assert [j["status"] for j in await jobs(services)] == ["queued", "queued"]
    assert cli("jobs", "retry", check=False).returncode == 2
    assert cli("jobs", "list", "--state", "sleeping", check=False).returncode == 2
