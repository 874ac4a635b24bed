"""The command line end to end, as separate processes on the test database."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from pathlib import Path

import asyncpg
import redis.asyncio as aioredis
from sqlalchemy import text

from cocov_jobs import contracts
from cocov_jobs.db.session import asyncpg_dsn
from cocov_jobs.services import Services
from tests.support.helpers import insert, jobs

Cli = Callable[..., subprocess.CompletedProcess[str]]
DATA = Path(__file__).parent.parent / "data" / "coverage"


async def test_enqueue_then_burst_worker_links_commits(services: Services, cli: Cli) -> None:
    user = await insert(services, "users", login="u7", github_id=77, github_token="gho_x")
    await insert(services, "user_emails", user_id=user, email="dev@example.com")
    repo = await insert(
        services, "repositories", name="api", default_branch="main", token="crt_1", github_id=1
    )
    commit = await insert(
        services,
        "commits",
        repository_id=repo,
        sha="a" * 40,
        author_name="Dev",
        author_email="DEV@example.com",
        message="m",
        clone_status=0,
    )
    enqueued = cli("enqueue", "update-commits-author", str(user))
    job_id = int(enqueued.stdout.strip())
    assert [r["id"] for r in await jobs(services)] == [job_id]
    drained = cli("worker", "--burst")
    assert drained.returncode == 0
    async with services.engine.connect() as conn:
        owner = await conn.scalar(text("SELECT user_id FROM commits WHERE id = :c"), {"c": commit})
    assert owner == user
    assert await jobs(services) == []


async def test_unknown_job_or_bad_arguments_exit_2_and_enqueue_nothing(
    services: Services, cli: Cli
) -> None:
    unknown = cli("enqueue", "no-such-job", "1", check=False)
    assert unknown.returncode == 2
    assert "unknown job 'no-such-job'" in unknown.stderr and "usage:" in unknown.stderr
    wrong = cli("enqueue", "update-commits-author", "seven", check=False)
    assert wrong.returncode == 2
    assert "usage: cocov-jobs enqueue update-commits-author USER_ID" in wrong.stderr
    missing = cli("enqueue", "UpdateCommitsAuthorJob", check=False)
    assert missing.returncode == 2
    assert await jobs(services) == []


async def test_permanent_failure_is_listed_with_its_reason(services: Services, cli: Cli) -> None:
    async with services.sessions.begin() as session:
        await session.execute(
            text(
                "INSERT INTO pgqueuer (priority, entrypoint, payload, status)"
                " VALUES (0, 'update_commits_author', :p, 'queued')"
            ),
            {"p": b'{"user_id": "not a number"}'},
        )
    cli("worker", "--burst")
    listed = cli("jobs", "list", "--json")
    (row,) = [json.loads(line) for line in listed.stdout.splitlines()]
    assert row["job"] == "update_commits_author"
    assert row["state"] == "failed"
    assert row["attempts"] == 0
    assert "user_id" in row["error"]
    table = cli("jobs", "list", "--state", "failed")
    assert "update_commits_author" in table.stdout


def test_worker_warns_once_when_the_listing_misses_cocovs_cache_redis(cli: Cli) -> None:
    def warnings(**env: str) -> list[str]:
        stderr = cli("worker", "--burst", **env).stderr
        return [line for line in stderr.splitlines() if "COCOV_REDIS_CACHE_URL" in line]

    [line] = warnings(COCOV_REDIS_CACHE_URL="")
    record = json.loads(line)
    assert record["level"] == "warning"
    assert "listing goes to COCOV_REDIS_URL" in record["event"]
    assert "Cocov's API reads it from COCOV_REDIS_CACHE_URL" in record["event"]
    assert warnings() == []  # the fixture sets COCOV_REDIS_CACHE_URL


def test_bad_settings_stop_startup_with_one_line_naming_the_variable(cli: Cli) -> None:
    for name, value in (
        ("COCOV_REPOSITORY_CACHE_MAX_SIZE", "lots"),
        ("COCOV_CRYPTOGRAPHIC_KEY", "too-short"),
        ("COCOV_GITHUB_API_URL", "not a url"),
    ):
        result = cli("db", "upgrade", check=False, **{name: value})
        assert result.returncode == 2, name
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and name in lines[0], result.stderr


async def test_enqueue_coverage_from_a_reporter_body_file(
    services: Services, cli: Cli, tmp_path: Path, redis: aioredis.Redis
) -> None:
    body = json.loads((DATA / "coverage_data.json").read_text())
    repo = await insert(
        services, "repositories", name="api", default_branch="main", token="crt_1", github_id=1
    )
    sha = "c" * 40
    body["commit_sha"] = sha
    upload = tmp_path / "upload.json"
    upload.write_text(json.dumps(body))
    held = cli("enqueue", "process-coverage", str(repo), sha, "--data-file", str(upload))
    assert held.stdout.startswith(f"held until commit {sha} is registered")
    assert await redis.get(contracts.deferred_coverage_key(repo, sha)) is not None
    await insert(
        services,
        "commits",
        repository_id=repo,
        sha=sha,
        author_name="A",
        author_email="a@x",
        message="m",
        clone_status=0,
    )
    bare = tmp_path / "bare.json"
    bare.write_text(json.dumps(body["data"]))
    queued = cli("enqueue", "process-coverage", str(repo), sha, "--data-file", str(bare))
    (row,) = await jobs(services)
    assert row["id"] == int(queued.stdout) and row["entrypoint"] == "process_coverage"
    async with services.engine.connect() as conn:
        stored = await conn.scalar(
            text("SELECT data FROM cocov_jobs_coverage_uploads WHERE id = :id"),
            {"id": row["args"]["upload_id"]},
        )
    assert stored == body["data"]
    wrong = tmp_path / "wrong.json"
    wrong.write_text(json.dumps({**body, "commit_sha": "d" * 40}))
    refused = cli(
        "enqueue", "process-coverage", str(repo), sha, "--data-file", str(wrong), check=False
    )
    assert refused.returncode == 2 and "is for commit" in refused.stderr
    assert len(await jobs(services)) == 1


async def test_worker_warns_when_postgresql_may_run_out_of_connections(
    cli: Cli, database_url: str
) -> None:
    def warnings(*args: str) -> list[str]:
        stderr = cli("worker", "--burst", *args).stderr
        return [line for line in stderr.splitlines() if "max_connections" in line]

    conn = await asyncpg.connect(asyncpg_dsn(database_url))
    allowed = int(await conn.fetchval("SHOW max_connections"))
    await conn.close()
    slots = allowed  # a process at this concurrency needs about slots + 9 > allowed
    [line] = warnings("--concurrency", str(slots))
    record = json.loads(line)
    assert record["level"] == "warning"
    expected = f"1 worker process(es) at concurrency {slots} hold up to about {slots + 9}"
    assert expected in record["event"]
    assert "COCOV_WORKER_CONCURRENCY" in record["event"]
    assert warnings("--concurrency", "2") == []
