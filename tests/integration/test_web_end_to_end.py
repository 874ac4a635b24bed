"""Issue 5's "done when": coverage uploaded before its commit, then a push webhook sent with
GitHub's headers and signature, then ``cocov-jobs worker --burst`` (a separate process) ⇒ the
commit is cloned, its check descriptor is on ``cocov:checks``, its statuses are on the GitHub
fake, and the coverage was processed exactly once."""

from __future__ import annotations

import asyncio
import base64
import json
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
from sqlalchemy import text
from tests.support.helpers import insert
from tests.support.web import deliver, payload

from cocov_jobs import contracts
from cocov_jobs.checks import CHECKS_CONTEXT, COVERAGE_CONTEXT
from cocov_jobs.config import Settings
from cocov_jobs.coverage import encode_lines
from cocov_jobs.db.models import CloneStatus, CoverageStatus
from cocov_jobs.services import Services
from cocov_jobs.testing import FakeGitHub
from cocov_jobs.testing.processes import CLI, WAIT, cli_env, settings_env, until
from cocov_jobs.testing.servers import http_client
from cocov_jobs.testing.webhooks import SECRET

MANIFEST = (
    'version: "0.1.alpha"\ncoverage:\n  min_percent: 50\nchecks:\n  - plugin: cocov/rubocop:v1\n'
)
TOKEN = "crt_e2e0123456789abcdef0123456789abcdef01"


@pytest.fixture
def settings(fake_github: FakeGitHub, tmp_path: Path) -> Settings:
    return Settings(
        **fake_github.settings_fields(),
        github_webhook_secret_key=SECRET,
        git_service_local_storage_path=tmp_path / "storage",
        cryptographic_key="0123456789abcdef0123456789abcdef",
        max_attempts=3,
        retry_base_seconds=0.05,
        retry_max_seconds=0.2,
    )


async def run_burst_worker(settings: Settings, services: Services, redis_url: str) -> None:
    worker = await asyncio.create_subprocess_exec(
        *CLI,
        "worker",
        "--burst",
        env=cli_env(
            COCOV_DATABASE_URL=services.database_url,
            COCOV_REDIS_URL=redis_url,
            COCOV_REDIS_CACHE_URL=redis_url,
            **settings_env(settings),
        ),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    async with asyncio.timeout(WAIT):
        _, err = await worker.communicate()
    assert worker.returncode == 0, err.decode()[-3000:]


_WAITING = "SELECT count(*) FROM pgqueuer WHERE status = 'queued'"


async def _all_due(services: Services) -> bool:
    later = "SELECT count(*) FROM pgqueuer WHERE status = 'queued' AND execute_after > now()"
    return not (await one(services, later)).count


async def one(services: Services, sql: str, **params: Any) -> Any:
    async with services.engine.connect() as conn:
        return (await conn.execute(text(sql), params)).one()


async def test_push_webhook_then_burst_worker_clones_checks_and_posts_statuses(
    services: Services,
    settings: Settings,
    fake_github: FakeGitHub,
    redis: aioredis.Redis,
    redis_url: str,
) -> None:
    fake_github.add_repo("web", files={".cocov.yaml": MANIFEST, "lib/a.rb": "1\n2\n3\n4\n"})
    sha = fake_github.head("web")
    repo = await insert(
        services,
        "repositories",
        name="web",
        default_branch="main",
        token=TOKEN,
        github_id=fake_github.repo("web").id,
    )
    push = payload("push")
    push["ref"] = "refs/heads/main"
    push["after"] = sha
    push["repository"] = push["repository"] | {"id": fake_github.repo("web").id, "name": "web"}
    push["head_commit"] = push["head_commit"] | {"id": sha}
    coverage = {"lib/a.rb": base64.b64encode(encode_lines([1, 1, 1, 0])).decode()}

    async with http_client(services) as client:
        upload = await client.post(
            "/v1/reports",
            json={"data": coverage, "commit_sha": sha},
            headers={"Authorization": f"token {TOKEN}"},
        )
        assert upload.status_code == 204
        assert await redis.exists(contracts.deferred_coverage_key(repo, sha))
        pushed = await deliver(client, "push", push)
        assert (pushed.status_code, pushed.json()["outcome"]) == (202, "applied")

    await run_burst_worker(settings, services, redis_url)
    # process_coverage met the clone process_commit was making and was deferred a few
    # seconds; --burst does not wait for deferred jobs: run it again once they are due.
    while (await one(services, _WAITING)).count:
        await until(lambda: _all_due(services))
        await run_burst_worker(settings, services, redis_url)

    commit = await one(services, "SELECT id, clone_status FROM commits WHERE sha = :s", s=sha)
    assert commit.clone_status == CloneStatus.completed
    descriptor = json.loads(await redis.lindex(contracts.CHECKS_QUEUE, 0) or b"{}")
    assert await redis.llen(contracts.CHECKS_QUEUE) == 1
    assert descriptor["sha"] == sha
    contexts = {s["context"]: s for s in fake_github.statuses("web", sha)}
    assert set(contexts) == {CHECKS_CONTEXT, COVERAGE_CONTEXT}
    assert contexts[COVERAGE_CONTEXT]["description"] == "75.0% covered"
    info = await one(
        services,
        "SELECT status, percent_covered, (SELECT count(*) FROM coverage_histories) AS histories"
        " FROM coverage_infos WHERE commit_id = :c",
        c=commit.id,
    )
    assert (await one(services, "SELECT count(*) FROM cocov_jobs_coverage_uploads")).count == 1
    assert (info.status, info.percent_covered, info.histories) == (
        CoverageStatus.completed,
        75.0,
        1,
    )
