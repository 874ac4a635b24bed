"""``update_repo_permissions`` and ``update_user_permissions`` against the GitHub fake over HTTP
and real PostgreSQL/Redis."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import text
from tests.support.helpers import drain, insert, insert_repository, job_log, jobs
from tests.support.settings import make_settings

from cocov_jobs import contracts
from cocov_jobs.config import Settings
from cocov_jobs.engine import queue
from cocov_jobs.github.levels import ADMIN, MAINTAINER, USER
from cocov_jobs.services import Services
from cocov_jobs.testing import FakeGitHub

OLD = datetime(2020, 1, 1)


@pytest.fixture
def settings(fake_github: FakeGitHub) -> Settings:
    return make_settings(**fake_github.settings_fields())


async def make_repo(services: Services, name: str, github_id: int) -> int:
    return await insert_repository(services, name, github_id=github_id)


async def make_member(services: Services, repo: int, member: int, level: int) -> int:
    member_id = await insert(
        services, "repository_members", repository_id=repo, github_member_id=member, level=level
    )
    async with services.sessions.begin() as session:
        await session.execute(
            text("UPDATE repository_members SET updated_at = :old WHERE id = :id"),
            {"old": OLD, "id": member_id},
        )
    return member_id


async def members(services: Services, **where: int) -> dict[tuple[int, int], int]:
    """``(repository_id, github_member_id) → level`` of the rows matching ``where``."""
    condition = " AND ".join(f"{column} = :{column}" for column in where) or "TRUE"
    async with services.engine.connect() as conn:
        rows = await conn.execute(
            text(
                "SELECT repository_id, github_member_id, level FROM repository_members"
                f" WHERE {condition}"
            ),
            where,
        )
        return {(r.repository_id, r.github_member_id): r.level for r in rows}


async def enqueue(services: Services, name: str, **args: int) -> int | None:
    async with services.sessions.begin() as session:
        return await queue.enqueue(session, name, **args)


async def run(services: Services, name: str, *, horizon: float = 5.0, **args: int) -> None:
    await enqueue(services, name, **args)
    await drain(services, horizon=horizon)


async def failure_reason(services: Services) -> str:
    (row,) = [row for row in await jobs(services) if row["status"] == "failed"]
    return str((await job_log(services, int(row["id"])))[-1]["traceback"])


def calls(fake: FakeGitHub, path: str) -> list[int]:
    return [status for _, seen, status in fake.request_log if seen == path]


# update_repo_permissions ------------------------------------------------------------------------


async def test_repo_sync_applies_the_diff_with_github_levels(
    services: Services, fake_github: FakeGitHub
) -> None:
    (remote,) = fake_github.add_repos(1)
    fake_github.add_collaborator(remote.name, 1, "ada", "admin")
    fake_github.add_collaborator(remote.name, 2, "bob", "maintain")
    fake_github.add_collaborator(remote.name, 3, "cy", "write")
    fake_github.add_collaborator(remote.name, 4, "di", "triage")
    fake_github.add_collaborator(remote.name, 5, "ed", "read")
    fake_github.add_collaborator(remote.name, 6, "fay", {"admin": True, "maintain": False})
    repo = await make_repo(services, "api", remote.id)
    other = await make_repo(services, "other", 77)
    await make_member(services, repo, 1, ADMIN)  # unchanged
    await make_member(services, repo, 3, ADMIN)  # demoted
    await make_member(services, repo, 99, USER)  # gone from GitHub
    await make_member(services, other, 99, MAINTAINER)  # another repository: untouched

    await run(services, "update_repo_permissions", repository_id=repo)

    assert await members(services, repository_id=repo) == {
        (repo, 1): ADMIN,
        (repo, 2): MAINTAINER,
        (repo, 3): USER,
        (repo, 4): USER,
        (repo, 5): USER,
        (repo, 6): ADMIN,
    }
    assert await members(services, repository_id=other) == {(other, 99): MAINTAINER}
    async with services.engine.connect() as conn:
        stale = await conn.scalar(
            text(
                "SELECT count(*) FROM repository_members"
                " WHERE repository_id = :r AND updated_at = :old"
            ),
            {"r": repo, "old": OLD},
        )
    assert stale == 1  # only the unchanged row kept its timestamp


async def test_repo_with_thousands_of_collaborators(
    services: Services, fake_github: FakeGitHub
) -> None:
    (remote,) = fake_github.add_repos(1)
    ids = fake_github.add_collaborators(remote.name, 3_000, permissions="write")
    fake_github.add_collaborator(remote.name, ids[1500], "boss", "admin")
    repo = await make_repo(services, "big", remote.id)
    await make_member(services, repo, 7, ADMIN)

    await run(services, "update_repo_permissions", repository_id=repo)

    synced = await members(services, repository_id=repo)
    assert len(synced) == 3_000 and (repo, 7) not in synced
    assert synced[(repo, ids[1500])] == ADMIN and synced[(repo, ids[0])] == USER
    assert calls(fake_github, f"/repositories/{remote.id}/collaborators") == [200] * 30


async def test_missing_repository_is_a_no_op(services: Services, fake_github: FakeGitHub) -> None:
    await run(services, "update_repo_permissions", repository_id=4242)
    assert await jobs(services) == []
    assert fake_github.request_log == []


async def test_repository_github_cannot_see_fails_permanently(
    services: Services, fake_github: FakeGitHub
) -> None:
    repo = await make_repo(services, "ghost", 555)
    await make_member(services, repo, 1, ADMIN)
    await run(services, "update_repo_permissions", repository_id=repo)
    reason = await failure_reason(services)
    assert "404" in reason and "/repositories/555/collaborators" in reason
    assert calls(fake_github, "/repositories/555/collaborators") == [404]
    assert await members(services, repository_id=repo) == {(repo, 1): ADMIN}


async def test_server_error_is_retried(services: Services, fake_github: FakeGitHub) -> None:
    (remote,) = fake_github.add_repos(1)
    fake_github.add_collaborator(remote.name, 1, "ada", "admin")
    repo = await make_repo(services, "api", remote.id)
    fake_github.fail_next("GET", "/collaborators", 503)
    await run(services, "update_repo_permissions", repository_id=repo)
    assert calls(fake_github, f"/repositories/{remote.id}/collaborators") == [503, 200]
    assert await members(services) == {(repo, 1): ADMIN}
    assert await jobs(services) == []


async def test_rate_limit_defers_then_syncs(services: Services, fake_github: FakeGitHub) -> None:
    (remote,) = fake_github.add_repos(1)
    fake_github.add_collaborator(remote.name, 1, "ada", "admin")
    repo = await make_repo(services, "api", remote.id)
    fake_github.rate_limit_next("/collaborators", kind="secondary", retry_after=1, status=429)
    started = time.monotonic()
    await run(services, "update_repo_permissions", repository_id=repo)
    assert time.monotonic() - started >= 1.0
    assert calls(fake_github, f"/repositories/{remote.id}/collaborators") == [429, 200]
    assert await members(services) == {(repo, 1): ADMIN}


async def test_token_near_expiry_is_refreshed_once_by_concurrent_jobs(
    services: Services, fake_github: FakeGitHub
) -> None:
    expiring = fake_github.issue_installation_token()
    soon = (datetime.now(UTC) + timedelta(seconds=60)).strftime("%Y-%m-%dT%H:%M:%SZ")
    await services.redis.set(
        contracts.INSTALLATION_TOKEN, json.dumps({"token": expiring, "expires_at": soon})
    )
    repos = []
    for remote in fake_github.add_repos(6):
        fake_github.add_collaborator(remote.name, 1, "ada", "admin")
        repos.append(await make_repo(services, remote.name, remote.id))
    async with services.sessions.begin() as session:
        for repo in repos:
            await queue.enqueue(session, "update_repo_permissions", repository_id=repo)

    await drain(services, concurrency=6)

    assert fake_github.tokens_minted == 1
    cached = json.loads(await services.redis.get(contracts.INSTALLATION_TOKEN) or "{}")
    assert cached["token"] != expiring
    assert await members(services) == {(repo, 1): ADMIN for repo in repos}
    assert f"Bearer {expiring}" not in fake_github.authorization_headers


async def test_repo_sync_waits_as_one_copy(services: Services, fake_github: FakeGitHub) -> None:
    assert await enqueue(services, "update_repo_permissions", repository_id=1) is not None
    assert await enqueue(services, "update_repo_permissions", repository_id=1) is None
    assert await enqueue(services, "update_repo_permissions", repository_id=2) is not None


# update_user_permissions ------------------------------------------------------------------------


async def make_user(services: Services, fake: FakeGitHub, login: str, github_id: int) -> int:
    token = fake.add_user(login, github_id)
    return await insert(
        services, "users", login=login, github_id=github_id, github_token=token, admin=False
    )


async def test_user_sync_applies_the_diff_for_known_repositories(
    services: Services, fake_github: FakeGitHub
) -> None:
    user = await make_user(services, fake_github, "ada", 501)
    remotes = {r.name: r for r in fake_github.add_repos(6)}
    fake_github.grant("ada", "repo-0", "admin")
    fake_github.grant("ada", "repo-1", "maintain")
    fake_github.grant("ada", "repo-2", "write")
    fake_github.grant("ada", "repo-5", "admin")  # unknown to Cocov: ignored
    (public,) = fake_github.add_repos(1, prefix="public", private=False)
    local = {
        name: await make_repo(services, name, remotes[name].id)
        for name in ("repo-0", "repo-1", "repo-2", "repo-3")
    }
    local["public-0"] = await make_repo(services, "public-0", public.id)
    await make_member(services, local["repo-0"], 501, ADMIN)  # unchanged
    await make_member(services, local["repo-1"], 501, USER)  # promoted
    await make_member(services, local["repo-3"], 501, ADMIN)  # no longer visible: removed
    await make_member(services, local["repo-3"], 502, ADMIN)  # someone else: untouched

    await run(services, "update_user_permissions", user_id=user)

    assert await members(services, github_member_id=501) == {
        (local["repo-0"], 501): ADMIN,
        (local["repo-1"], 501): MAINTAINER,
        (local["repo-2"], 501): USER,
        (local["public-0"], 501): USER,
    }
    assert await members(services, github_member_id=502) == {(local["repo-3"], 502): ADMIN}
    assert calls(fake_github, "/orgs/acme/repos") == [200]
    assert all(
        header == f"Bearer {fake_github.user('ada').token}"
        for header in fake_github.authorization_headers
    )


async def test_user_sync_reads_every_page(services: Services, fake_github: FakeGitHub) -> None:
    user = await make_user(services, fake_github, "ada", 501)
    remotes = fake_github.add_repos(250, private=False)
    local = [await make_repo(services, r.name, r.id) for r in remotes[:200]]
    await run(services, "update_user_permissions", user_id=user)
    assert calls(fake_github, "/orgs/acme/repos") == [200, 200, 200]
    assert await members(services) == {(repo, 501): USER for repo in local}


async def test_revoked_user_token_fails_permanently_and_removes_nothing(
    services: Services, fake_github: FakeGitHub
) -> None:
    user = await make_user(services, fake_github, "ada", 501)
    token = fake_github.user("ada").token
    (remote,) = fake_github.add_repos(1)
    repo = await make_repo(services, "api", remote.id)
    await make_member(services, repo, 501, ADMIN)
    fake_github.revoke_user_token(token)

    await run(services, "update_user_permissions", user_id=user)

    reason = await failure_reason(services)
    assert (
        f"GitHub rejected the OAuth token of user {user} (401); permissions left unchanged"
        in reason
    )
    assert token not in reason
    assert calls(fake_github, "/orgs/acme/repos") == [401]  # a user token is never retried
    assert await members(services) == {(repo, 501): ADMIN}


async def test_missing_user_is_a_no_op(services: Services, fake_github: FakeGitHub) -> None:
    await run(services, "update_user_permissions", user_id=4242)
    assert await jobs(services) == []
    assert fake_github.request_log == []
