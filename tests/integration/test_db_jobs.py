"""The three database-only jobs: commits size, commit authors, cache eviction."""

from __future__ import annotations

import json
from datetime import datetime, timedelta

from sqlalchemy import text
from tests.support.helpers import drain, insert, insert_repository, jobs
from tests.support.settings import make_settings

from cocov_jobs import contracts
from cocov_jobs.engine import queue
from cocov_jobs.services import Services


async def make_repo(services: Services, name: str = "api", **values: object) -> int:
    return await insert_repository(services, name, **values)


async def make_commit(services: Services, repo: int, sha: str, **values: object) -> int:
    defaults: dict[str, object] = {
        "author_name": "A",
        "author_email": "a@example.com",
        "message": "m",
        "clone_status": 0,
    }
    defaults.update(values)
    return await insert(services, "commits", repository_id=repo, sha=sha, **defaults)


async def run(services: Services, name: str, **args: object) -> None:
    async with services.sessions.begin() as session:
        await queue.enqueue(session, name, **args)
    await drain(services)
    assert [r for r in await jobs(services) if r["status"] == "failed"] == []


async def scalar(services: Services, sql: str, **params: object) -> object:
    async with services.engine.connect() as conn:
        return (await conn.execute(text(sql), params)).scalar()


# compute_repository_commits_size ------------------------------------------------------------


async def commits_size(services: Services, repo: int) -> object:
    return await scalar(services, "SELECT commits_size FROM repositories WHERE id = :r", r=repo)


async def test_commits_size_sums_clone_sizes_ignoring_nulls(services: Services) -> None:
    repo = await make_repo(services)
    other = await make_repo(services, "other")
    await make_commit(services, repo, "a" * 40, clone_size=100)
    await make_commit(services, repo, "b" * 40, clone_size=210)
    await make_commit(services, repo, "c" * 40, clone_size=None)
    await make_commit(services, other, "d" * 40, clone_size=5000)
    await run(services, "compute_repository_commits_size", repository_id=repo)
    assert (
        await scalar(services, "SELECT commits_size FROM repositories WHERE id = :r", r=repo) == 310
    )


async def test_commits_size_of_repository_without_commits_is_zero(services: Services) -> None:
    repo = await make_repo(services, commits_size=99)
    await run(services, "compute_repository_commits_size", repository_id=repo)
    assert (
        await scalar(services, "SELECT commits_size FROM repositories WHERE id = :r", r=repo) == 0
    )


async def test_commits_size_of_missing_repository_is_a_no_op(services: Services) -> None:
    await run(services, "compute_repository_commits_size", repository_id=12345)
    assert await jobs(services) == []


async def test_commits_size_is_coalesced_per_repository(services: Services) -> None:
    repo = await make_repo(services)
    async with services.sessions.begin() as session:
        ids = [
            await queue.enqueue(session, "compute_repository_commits_size", repository_id=repo)
            for _ in range(5)
        ]
        other = await queue.enqueue(session, "compute_repository_commits_size", repository_id=7)
    assert ids[0] is not None and ids[1:] == [None] * 4 and other is not None
    assert len(await jobs(services)) == 2


# update_commits_author ----------------------------------------------------------------------


async def test_author_links_commits_case_insensitively_across_repositories(
    services: Services,
) -> None:
    user = await insert(services, "users", login="ann", github_id=7, github_token="gho_x")
    other_user = await insert(services, "users", login="bob", github_id=8, github_token="gho_y")
    await insert(services, "user_emails", user_id=user, email="Ann@Example.com")
    await insert(services, "user_emails", user_id=user, email="ann@work.test")
    r1, r2 = await make_repo(services, "one"), await make_repo(services, "two")
    c1 = await make_commit(services, r1, "1" * 40, author_email="ann@example.COM")
    c2 = await make_commit(services, r2, "2" * 40, author_email="ANN@work.test", user_id=other_user)
    c3 = await make_commit(services, r2, "3" * 40, author_email="someone@else.test")
    await run(services, "update_commits_author", user_id=user)
    owners = {
        c: await scalar(services, "SELECT user_id FROM commits WHERE id = :c", c=c)
        for c in (c1, c2, c3)
    }
    assert owners == {c1: user, c2: user, c3: None}


async def test_author_without_emails_or_missing_user_changes_nothing(services: Services) -> None:
    user = await insert(services, "users", login="ann", github_id=7, github_token="gho_x")
    repo = await make_repo(services)
    commit = await make_commit(services, repo, "1" * 40)
    await run(services, "update_commits_author", user_id=user)
    await run(services, "update_commits_author", user_id=999)
    assert await scalar(services, "SELECT user_id FROM commits WHERE id = :c", c=commit) is None


# request_cache_eviction ---------------------------------------------------------------------


async def make_artifact(
    services: Services, repo: int, name: str, size: int, last_used: datetime | None
) -> None:
    await insert(
        services,
        "cache_artifacts",
        repository_id=repo,
        name=name,
        name_hash=f"h-{name}",
        size=size,
        last_used_at=last_used,
        engine="docker",
        mime="application/octet-stream",
    )


async def tasks(services: Services) -> list[dict[str, object]]:
    raw = await services.redis.lrange(contracts.HOUSEKEEPING_QUEUE, 0, -1)
    return [json.loads(item) for item in raw]


async def test_eviction_takes_lru_never_used_first_until_excess_is_covered(
    services: Services,
) -> None:
    services.settings = make_settings(repository_cache_max_size=1000)
    repo = await make_repo(services, cache_size=1600)
    now = datetime(2026, 1, 1)
    # Ids interleave with recency so that id order and LRU order differ (Cocov's batching bug).
    await make_artifact(services, repo, "recent", 500, now)
    await make_artifact(services, repo, "old", 300, now - timedelta(days=3))
    await make_artifact(services, repo, "never", 200, None)
    await make_artifact(services, repo, "older", 250, now - timedelta(days=5))
    await make_artifact(services, repo, "mid", 350, now - timedelta(days=1))
    await run(services, "request_cache_eviction", repository_id=repo)
    (task,) = await tasks(services)
    assert task["task"] == "evict-artifact"
    assert task["repository"] == repo
    # excess 600: never (200) + older (250) + old (300) = 750 >= 600, stop.
    assert task["objects"] == ["h-never", "h-older", "h-old"]
    assert isinstance(task["task_id"], str) and len(str(task["task_id"])) == 36


async def test_eviction_not_requested_twice_while_in_flight(services: Services) -> None:
    services.settings = make_settings(repository_cache_max_size=100)
    repo = await make_repo(services, cache_size=300)
    await make_artifact(services, repo, "a", 150, None)
    await make_artifact(services, repo, "b", 150, None)
    await run(services, "request_cache_eviction", repository_id=repo)
    await run(services, "request_cache_eviction", repository_id=repo)
    assert len(await tasks(services)) == 1
    # The Cache service deleted what was asked: a new request may go out.
    async with services.sessions.begin() as session:
        await session.execute(text("DELETE FROM cache_artifacts WHERE name_hash = 'h-a'"))
        await session.execute(text("DELETE FROM cache_artifacts WHERE name_hash = 'h-b'"))
    await make_artifact(services, repo, "c", 300, None)
    await run(services, "request_cache_eviction", repository_id=repo)
    second = (await tasks(services))[1]
    assert second["objects"] == ["h-c"]


async def test_eviction_does_nothing_under_quota_or_with_quota_zero(services: Services) -> None:
    repo = await make_repo(services, cache_size=5000)
    await make_artifact(services, repo, "a", 5000, None)
    services.settings = make_settings(repository_cache_max_size=0)
    await run(services, "request_cache_eviction", repository_id=repo)
    services.settings = make_settings(repository_cache_max_size=5000)
    await run(services, "request_cache_eviction", repository_id=repo)
    await run(services, "request_cache_eviction", repository_id=424242)
    assert await tasks(services) == []


async def test_eviction_with_no_artifacts_pushes_nothing(services: Services) -> None:
    services.settings = make_settings(repository_cache_max_size=10)
    repo = await make_repo(services, cache_size=50)
    await run(services, "request_cache_eviction", repository_id=repo)
    assert await tasks(services) == []
    assert await services.redis.exists(contracts.eviction_in_flight_key(repo)) == 0
