"""``process_commit`` end to end (docs/architecture.md §5.4): clone, checks, author; failures and
retries; the reconciliation sweep. Real git over the GitHub fake, real PostgreSQL and Redis.
"""

from __future__ import annotations

import pytest
import redis.asyncio as aioredis
from sqlalchemy import text
from tests.support.helpers import insert, job_log, jobs
from tests.support.pipeline import (
    UI,
    Pushed,
    push_repository,
    row,
    run_job,
    settings,
)

from cocov_jobs import contracts
from cocov_jobs.checks import run_checks
from cocov_jobs.clones import load_commit
from cocov_jobs.db.models import CheckSetStatus, CloneStatus, ErrorKind
from cocov_jobs.registration import HeadCommit, register_head_commit
from cocov_jobs.services import Services
from cocov_jobs.testing import FakeGitHub

__all__ = ["settings"]

ONE_CHECK = 'version: "0.1.alpha"\nchecks:\n  - plugin: cocov/rubocop:v1\n'
NO_CHECKS = 'version: "0.1.alpha"\ncoverage:\n  min_percent: 50\n'
#: Path of the git request that starts every fetch.
GIT_REFS = r"/web\.git/info/refs"


async def commit_state(services: Services, pushed: Pushed) -> dict[str, object]:
    found = await row(
        services,
        "SELECT c.clone_status, c.clone_size, c.user_id, r.commits_size, s.status AS check_set,"
        " s.error_kind FROM commits c JOIN repositories r ON r.id = c.repository_id"
        " LEFT JOIN check_sets s ON s.commit_id = c.id WHERE c.id = :id",
        id=pushed.commit_id,
    )
    assert found is not None
    return found


def described(fake: FakeGitHub, pushed: Pushed) -> list[tuple[str, str]]:
    return [(s["state"], s["description"]) for s in fake.statuses(pushed.name, pushed.sha)]


async def test_commit_is_cloned_checked_and_linked_to_its_author(
    services: Services, fake_github: FakeGitHub, redis: aioredis.Redis
) -> None:
    pushed = await push_repository(services, fake_github, {".cocov.yaml": ONE_CHECK})
    user_id = await insert(services, "users", login="dev", github_id=7, github_token="gho_x")
    await insert(services, "user_emails", user_id=user_id, email="dev@EXAMPLE.com")
    await run_job(services, "process_commit", commit_id=pushed.commit_id)

    state = await commit_state(services, pushed)
    assert state["clone_status"] == CloneStatus.completed
    assert state["clone_size"] and state["commits_size"] == state["clone_size"]
    assert state["check_set"] == CheckSetStatus.queued
    assert state["user_id"] == user_id
    assert await services.storage.commit_exists(pushed.name, pushed.sha)
    assert await redis.llen(contracts.CHECKS_QUEUE) == 1
    assert fake_github.statuses(pushed.name, pushed.sha)[0]["target_url"] == (
        f"{UI}/repos/web/commits/{pushed.sha}/checks"
    )


async def test_without_manifest_the_check_set_is_not_configured_silently(
    services: Services, fake_github: FakeGitHub, redis: aioredis.Redis
) -> None:
    pushed = await push_repository(services, fake_github, {"README.md": "hi"})
    await run_job(services, "process_commit", commit_id=pushed.commit_id)

    state = await commit_state(services, pushed)
    assert (state["clone_status"], state["check_set"]) == (
        CloneStatus.completed,
        CheckSetStatus.not_configured,
    )
    assert described(fake_github, pushed) == []
    assert await redis.llen(contracts.CHECKS_QUEUE) == 0


async def test_manifest_without_checks_looks_good(
    services: Services, fake_github: FakeGitHub, redis: aioredis.Redis
) -> None:
    pushed = await push_repository(services, fake_github, {".cocov.yaml": NO_CHECKS})
    await run_job(services, "process_commit", commit_id=pushed.commit_id)

    assert (await commit_state(services, pushed))["check_set"] == CheckSetStatus.not_configured
    assert described(fake_github, pushed) == [("success", "Looking good!")]
    assert await redis.llen(contracts.CHECKS_QUEUE) == 0


async def test_refused_fetch_marks_the_commit_errored_and_fails_the_job(
    services: Services, fake_github: FakeGitHub, redis: aioredis.Redis
) -> None:
    pushed = await push_repository(services, fake_github, {".cocov.yaml": ONE_CHECK})
    fake_github.fail_next(None, GIT_REFS, 403)
    job_id = await run_job(services, "process_commit", commit_id=pushed.commit_id)

    state = await commit_state(services, pushed)
    assert state["clone_status"] == CloneStatus.errored
    assert (state["check_set"], state["error_kind"]) == (
        CheckSetStatus.failure,
        ErrorKind.commit_fetch_failed,
    )
    assert described(fake_github, pushed) == [("error", "Could not fetch this commit")]
    [failed] = await jobs(services)
    assert (failed["id"], failed["status"], failed["attempts"]) == (job_id, "failed", 0)
    reason = (await job_log(services, job_id))[-1]["traceback"]
    assert reason["exception_type"] == "CommitFetchFailed"
    assert "returned error: 403" in reason["exception_message"]
    assert await redis.llen(contracts.CHECKS_QUEUE) == 0


async def test_a_cached_token_git_rejects_is_replaced_once_and_the_clone_succeeds(
    services: Services, fake_github: FakeGitHub, redis: aioredis.Redis
) -> None:
    pushed = await push_repository(services, fake_github, {".cocov.yaml": ONE_CHECK})
    stale = await services.installation_tokens.token()  # cached in Redis, valid for an hour
    fake_github.expire_all_tokens()  # ...but GitHub no longer accepts it
    minted = fake_github.tokens_minted
    await run_job(services, "process_commit", commit_id=pushed.commit_id)

    state = await commit_state(services, pushed)
    assert state["clone_status"] == CloneStatus.completed
    assert fake_github.tokens_minted == minted + 1
    assert await services.installation_tokens.token() != stale


async def test_transient_fetch_failure_is_retried_without_marking_anything(
    services: Services, fake_github: FakeGitHub
) -> None:
    pushed = await push_repository(services, fake_github, {".cocov.yaml": ONE_CHECK})
    fake_github.fail_next(None, GIT_REFS, 502)
    await run_job(services, "process_commit", commit_id=pushed.commit_id)

    state = await commit_state(services, pushed)
    assert (state["clone_status"], state["check_set"]) == (
        CloneStatus.completed,
        CheckSetStatus.queued,
    )
    assert described(fake_github, pushed) == [("pending", "Checks are running...")]
    assert await jobs(services) == []


@pytest.mark.parametrize(
    "settings",
    [pytest.param({"max_attempts": 2}, id="two-attempts")],
    indirect=True,
)
async def test_transient_fetch_failure_on_the_last_attempt_is_final(
    services: Services, fake_github: FakeGitHub
) -> None:
    pushed = await push_repository(services, fake_github, {".cocov.yaml": ONE_CHECK})
    fake_github.fail_next(None, GIT_REFS, 502, times=2)
    await run_job(services, "process_commit", commit_id=pushed.commit_id)

    state = await commit_state(services, pushed)
    assert state["clone_status"] == CloneStatus.errored
    assert state["error_kind"] == ErrorKind.commit_fetch_failed
    assert described(fake_github, pushed) == [("error", "Could not fetch this commit")]
    [failed] = await jobs(services)
    assert (failed["status"], failed["attempts"]) == ("failed", 1)


async def test_status_failure_is_retried_and_checks_are_pushed_once(
    services: Services, fake_github: FakeGitHub, redis: aioredis.Redis
) -> None:
    pushed = await push_repository(services, fake_github, {".cocov.yaml": ONE_CHECK})
    fake_github.fail_next("POST", "/statuses/", 502)
    await run_job(services, "process_commit", commit_id=pushed.commit_id)

    assert (await commit_state(services, pushed))["check_set"] == CheckSetStatus.queued
    assert described(fake_github, pushed) == [("pending", "Checks are running...")]
    assert await redis.llen(contracts.CHECKS_QUEUE) == 1
    assert await jobs(services) == []


async def test_a_retried_run_does_not_dispatch_again(
    services: Services, fake_github: FakeGitHub, redis: aioredis.Redis
) -> None:
    pushed = await push_repository(services, fake_github, {".cocov.yaml": ONE_CHECK})
    run = await run_job(services, "process_commit", commit_id=pushed.commit_id)
    async with services.sessions() as session:
        commit = await load_commit(session, pushed.commit_id)
    assert commit is not None
    await run_checks(services, commit, run=run)

    assert await redis.llen(contracts.CHECKS_QUEUE) == 1
    assert len(described(fake_github, pushed)) == 1


async def test_missing_commit_is_a_no_op(services: Services) -> None:
    await run_job(services, "process_commit", commit_id=4242)
    assert await jobs(services) == []


async def test_already_processed_sha_on_another_branch_only_moves_the_head(
    services: Services, fake_github: FakeGitHub, redis: aioredis.Redis
) -> None:
    pushed = await push_repository(services, fake_github, {".cocov.yaml": ONE_CHECK})
    await run_job(services, "process_commit", commit_id=pushed.commit_id)
    async with services.sessions.begin() as session:
        registration = await register_head_commit(
            session,
            services.redis,
            repository_id=pushed.repository_id,
            commit=HeadCommit("feature", pushed.sha, "Initial commit", "Dev", "dev@example.com"),
        )
    assert registration.process_commit_job is None
    assert await jobs(services) == []
    head = await row(
        services,
        "SELECT head_id FROM branches WHERE repository_id = :r AND name = 'feature'",
        r=pushed.repository_id,
    )
    assert head == {"head_id": pushed.commit_id}
    assert await redis.llen(contracts.CHECKS_QUEUE) == 1


# Reconciliation --------------------------------------------------------------------------------


async def make_stale(
    services: Services, table: str, commit_column: str, pushed: Pushed, **values: int
) -> None:
    sets = "".join(f"{name} = :{name}, " for name in values)
    async with services.sessions.begin() as session:
        await session.execute(
            text(
                f"UPDATE {table} SET {sets}"
                "updated_at = timezone('utc', now()) - interval '1 hour'"
                f" WHERE {commit_column} = :id"
            ),
            {**values, "id": pushed.commit_id},
        )


async def test_sweep_resumes_a_commit_stuck_cloning(
    services: Services, fake_github: FakeGitHub, redis: aioredis.Redis
) -> None:
    pushed = await push_repository(services, fake_github, {".cocov.yaml": ONE_CHECK})
    await make_stale(services, "commits", "id", pushed, clone_status=CloneStatus.in_progress)
    await run_job(services, "reconcile_stuck_work")

    state = await commit_state(services, pushed)
    assert (state["clone_status"], state["check_set"]) == (
        CloneStatus.completed,
        CheckSetStatus.queued,
    )
    assert await redis.llen(contracts.CHECKS_QUEUE) == 1


async def test_sweep_leaves_a_failed_job_to_the_operator(
    services: Services, fake_github: FakeGitHub
) -> None:
    pushed = await push_repository(services, fake_github, {".cocov.yaml": ONE_CHECK})
    fake_github.fail_next(None, GIT_REFS, 403)
    await run_job(services, "process_commit", commit_id=pushed.commit_id)
    await make_stale(services, "commits", "id", pushed, clone_status=CloneStatus.in_progress)
    await run_job(services, "reconcile_stuck_work")

    assert (await commit_state(services, pushed))["clone_status"] == CloneStatus.in_progress
    assert [j["entrypoint"] for j in await jobs(services)] == ["process_commit"]


async def test_sweep_redispatches_a_check_set_whose_descriptor_was_lost(
    services: Services, fake_github: FakeGitHub, redis: aioredis.Redis
) -> None:
    pushed = await push_repository(services, fake_github, {".cocov.yaml": ONE_CHECK})
    await run_job(services, "process_commit", commit_id=pushed.commit_id)
    await make_stale(services, "check_sets", "commit_id", pushed)
    await run_job(services, "reconcile_stuck_work")
    assert await redis.llen(contracts.CHECKS_QUEUE) == 1, "still waiting for the Worker"

    descriptor = await redis.lpop(contracts.CHECKS_QUEUE)  # a Worker took it, then died
    await make_stale(services, "check_sets", "commit_id", pushed)
    await run_job(services, "reconcile_stuck_work")
    assert await redis.lrange(contracts.CHECKS_QUEUE, 0, -1) == [descriptor]
    assert (await commit_state(services, pushed))["check_set"] == CheckSetStatus.queued
