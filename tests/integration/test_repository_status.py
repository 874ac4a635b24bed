"""The repository view's data: commits' states, held uploads, the runs that worked on it."""

from __future__ import annotations

import redis.asyncio as aioredis
from sqlalchemy import text
from tests.support.helpers import insert

from cocov_jobs import contracts
from cocov_jobs.db.models import CheckSetStatus, CloneStatus
from cocov_jobs.repository_status import repositories, repository_status
from cocov_jobs.services import Services
from cocov_jobs.uploads import store_upload

_RUN = text(
    """
    INSERT INTO cocov_jobs_runs (job_id, job, arguments, attempt, enqueued_at, due_at,
        started_at, finished_at, outcome)
    VALUES (:job_id, :job, CAST(:arguments AS jsonb), 1, now(), now(), now(), now(), 'succeeded')
    """
)


#: The canonical JSON of a held upload.
HELD = '{"a.rb": "x"}'


async def hold(services: Services, redis: aioredis.Redis, repository_id: int, sha: str) -> None:
    """Store an upload for an unknown commit: held in Redis."""
    async with services.sessions.begin() as session:
        await store_upload(session, redis, repository_id=repository_id, sha=sha, coverage=HELD)


async def test_commits_held_uploads_and_runs_of_one_repository(
    services: Services, redis: aioredis.Redis
) -> None:
    repo = await insert(
        services, "repositories", name="calc", default_branch="main", token="t1", github_id=1
    )
    other = await insert(
        services, "repositories", name="other", default_branch="main", token="t2", github_id=2
    )
    commit = await insert(
        services,
        "commits",
        repository_id=repo,
        sha="a" * 40,
        author_name="Ada",
        author_email="ada@example.com",
        message="Add tests\n\nlong body",
        clone_status=CloneStatus.in_progress,
    )
    await insert(services, "check_sets", commit_id=commit, status=CheckSetStatus.queued)
    await insert(services, "branches", repository_id=repo, name="main", head_id=commit)
    for repository_id, sha in ((repo, "b" * 40), (other, "c" * 40), (repo, "d" * 40)):
        await hold(services, redis, repository_id, sha)  # their commits are unknown
    # One claimed by its push meanwhile is not listed any more.
    await redis.delete(contracts.deferred_coverage_key(repo, "d" * 40))
    async with services.sessions.begin() as session:
        for job_id, job, arguments in [
            (1, "process_commit", f'{{"commit_id": {commit}}}'),
            (2, "update_repo_permissions", f'{{"repository_id": {repo}}}'),
            (3, "update_repo_permissions", f'{{"repository_id": {other}}}'),
            (4, "update_commits_author", f'{{"user_id": {repo}}}'),  # same number, not a repo
        ]:
            await session.execute(_RUN, {"job_id": job_id, "job": job, "arguments": arguments})

    status = await repository_status(services, "CALC")  # names are case-insensitive
    assert status is not None and status.id == repo
    assert status == await repository_status(services, str(repo))
    assert status.branches == {"main": "a" * 40}
    (state,) = status.commits
    assert (state.message, state.clone, state.checks, state.coverage) == (
        "Add tests",
        "in_progress",
        "queued",
        None,
    )
    assert [(h.sha, h.size) for h in status.held] == [("b" * 40, len(HELD))]
    assert 7000 < status.held[0].expires_in <= contracts.DEFERRED_COVERAGE_TTL
    assert sorted(r.job_id for r in status.runs) == [1, 2]
    assert await repository_status(services, "missing") is None
    assert await repository_status(services, "99999999999999999999999") is None
    assert [r["name"] for r in await repositories(services, "alc")] == ["calc"]
