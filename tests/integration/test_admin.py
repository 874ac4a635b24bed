"""Job administration (the SQL behind the CLI and the dashboard) on a real queue."""

from __future__ import annotations

import asyncio
import json

import pytest
from tests.support.admin import enqueue, failed_job
from tests.support.helpers import drain, insert, job_log, jobs
from tests.support.settings import make_settings

from cocov_jobs import jobs as product_jobs
from cocov_jobs import logs
from cocov_jobs.config import Settings
from cocov_jobs.crypto import new_service_token, service_token_digest
from cocov_jobs.engine import admin, queue
from cocov_jobs.engine.context import JobContext
from cocov_jobs.engine.registry import Registry, job
from cocov_jobs.engine.worker import Worker
from cocov_jobs.services import Services
from cocov_jobs.testing import FakeGitHub
from cocov_jobs.testing.processes import until

#: The webhook secret the settings carry (must never be logged).
WEBHOOK_SECRET = "whsec-not-for-logs"


#: Set when ``_test_blocking`` starts; it then waits until cancelled.
BLOCKING_STARTED = asyncio.Event()


@job()
async def _test_blocking(ctx: JobContext) -> None:
    BLOCKING_STARTED.set()
    await asyncio.Event().wait()


@pytest.fixture
def registry() -> Registry:
    return product_jobs.registry().including(_test_blocking)


async def test_states_pages_and_details(services: Services) -> None:
    failed = await failed_job(services)
    ready = await enqueue(services, user_id=2)
    later = await enqueue(services, delay=3600, user_id=3)
    states = {r.id: r.state for r in await admin.list_jobs(services)}
    assert states == {failed: "failed", ready: "queued", later: "scheduled"}
    (row,) = await admin.list_jobs(services, state="failed", job="update-commits-author")
    assert row.id == failed and "user_id" in row.error_text
    first = await admin.list_jobs(services, limit=2)
    second = await admin.list_jobs(services, limit=2, before=first[-1].id)
    assert [r.id for r in first + second] == [later, ready, failed]
    detail = await admin.show_job(services, failed)
    assert detail is not None and detail.row is not None
    assert detail.history[-1]["status"] == "failed"
    assert "Traceback" in detail.history[-1]["traceback"]["traceback"]
    assert await admin.show_job(services, 10**9) is None


async def test_retry_cancel_delete(services: Services) -> None:
    failed = await failed_job(services)
    assert await admin.retry(services, failed)
    (row,) = await jobs(services)
    assert row["status"] == "queued" and row["attempts"] == 0
    later = await enqueue(services, delay=3600, user_id=5)
    assert await admin.retry(services, later)  # due now
    assert (await admin.list_jobs(services, state="queued"))[0].id == later
    assert await admin.cancel(services, later)
    assert (await job_log(services, later))[-1]["status"] == "canceled"
    assert await admin.delete(services, failed)
    assert (await job_log(services, failed))[-1]["status"] == "deleted"
    assert await jobs(services) == []
    assert not await admin.cancel(services, later)
    assert not await admin.retry(services, later)


async def test_retry_all_failed_and_stats(services: Services) -> None:
    await failed_job(services)
    await failed_job(services)
    stats = await admin.stats(services)
    assert stats.by_state["failed"] == 2
    assert stats.by_job == {"update_commits_author": {"failed": 2}}
    assert stats.failed_last_hour == 2
    assert await admin.retry_all_failed(services) == 2
    assert (await admin.depth(services)).by_state["queued"] == 2


async def test_cancel_interrupts_a_running_job(services: Services) -> None:
    """A running job's cancellation reaches its worker, which stops the run."""
    BLOCKING_STARTED.clear()
    async with services.sessions.begin() as session:
        job_id = await queue.enqueue(session, "_test_blocking")
    assert job_id is not None
    worker = Worker(services, concurrency=1)
    run = asyncio.create_task(worker.run())
    await asyncio.wait_for(BLOCKING_STARTED.wait(), 30)
    assert (await admin.list_jobs(services, state="running"))[0].worker is not None
    assert await admin.cancel(services, job_id)
    await until(lambda: not worker.running_jobs, 30)
    worker.stop()
    await asyncio.wait_for(run, 30)
    assert await jobs(services) == []
    assert [h["status"] for h in await job_log(services, job_id)][-1] == "canceled"


@pytest.fixture
def settings(request: pytest.FixtureRequest) -> Settings:
    """Settings pointing at the GitHub fake (when the test uses it), with a webhook secret."""
    fields = {}
    if "fake_github" in request.fixturenames:
        fields = request.getfixturevalue("fake_github").settings_fields()
    return make_settings(github_webhook_secret_key=WEBHOOK_SECRET, **fields)


async def test_job_logs_carry_ids_and_no_secret(
    services: Services,
    fake_github: FakeGitHub,
    capsys: pytest.CaptureFixture[str],
    restore_logging: None,
) -> None:
    logs.configure("json", "DEBUG")  # here: the test's own captured stderr
    service_token = new_service_token()
    owner = await insert(services, "users", login="o", github_id=70, github_token="gho_u")
    await insert(
        services,
        "service_tokens",
        token_hash=service_token_digest(service_token),
        description="ops",
        owner_id=owner,
    )
    async with services.sessions.begin() as session:
        await queue.enqueue(session, "update_organization_repos")
        await queue.enqueue(session, "update_commits_author", user_id=owner)
    await drain(services, horizon=0)
    captured = capsys.readouterr().err  # JSON lines, plus whatever wrote to stderr directly
    lines = [json.loads(line) for line in captured.splitlines() if line.startswith("{")]
    in_jobs = [line for line in lines if "job_id" in line]
    assert {line["job"] for line in in_jobs} == {
        "update_organization_repos",
        "update_commits_author",
    }
    assert all(line["attempt"] == 1 for line in in_jobs)
    assert any(line.get("user_id") == owner for line in in_jobs)
    assert any("GitHub" in line["event"] for line in in_jobs)  # the client's lines are bound too
    secrets = [*fake_github._installation_tokens, service_token, WEBHOOK_SECRET, "gho_u"]
    assert fake_github.tokens_minted >= 1
    assert [s for s in secrets if s in captured] == []
