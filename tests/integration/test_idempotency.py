"""Issue 7, scenario 5: each of the ten jobs, run twice in a row on the same input, leaves the
same final state as one run.

Every case builds its input in a fresh database and Redis (with the GitHub fake for the jobs
that call GitHub), runs the job once as a worker runs it (enqueue, then a burst worker that
also runs its follow-up jobs), takes a :func:`snapshot`, runs the same job again and takes
another. The snapshots must be equal: every table (job engine tables left out; ``updated_at``
ignored, since touching a row is not a change of state), every key of the primary and cache
Redis with its value (the Worker queue and the Cache service's tasks included, so a second
descriptor or eviction task is a difference), the files in clone storage and the latest commit
status per context on the fake. No job may end as failed.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text
from tests.support.helpers import drain, insert, jobs
from tests.support.pipeline import (
    CRYPTO_KEY,
    UI,
    artifacts_over_quota,
    enqueue,
    push_repository,
    store_upload,
)
from tests.support.settings import make_settings

from cocov_jobs import contracts
from cocov_jobs.config import Settings
from cocov_jobs.services import Services
from cocov_jobs.testing import FakeGitHub
from cocov_jobs.testing.coverage import covered

#: A manifest with one check and a coverage minimum (process_commit, process_coverage).
MANIFEST = (
    'version: "0.1.alpha"\ncoverage:\n  min_percent: 50\nchecks:\n  - plugin: cocov/rubocop:v1\n'
)
FILES = {".cocov.yaml": MANIFEST, "lib/a.rb": "1\n2\n3\n4\n"}
#: ``COCOV_REPOSITORY_CACHE_MAX_SIZE`` of these tests (bytes).
CACHE_QUOTA = 100
#: Tables of the job engine, the process registry and the job history: bookkeeping, not state
#: of the data (a second run is one more run in the history).
ENGINE_TABLES = frozenset(
    {
        "pgqueuer",
        "pgqueuer_log",
        "pgqueuer_statistics",
        "pgqueuer_schedules",
        "alembic_version",
        "cocov_jobs_workers",
        "cocov_jobs_runs",
    }
)
#: Columns whose value says when a row was last written, not what it holds.
TOUCH_COLUMNS = frozenset({"updated_at"})
#: Redis keys that record when something was refreshed, not what it holds.
TOUCH_KEYS = frozenset({contracts.ORG_REPOS_UPDATED_AT.encode()})
STATUS_PATH = re.compile(r"/repos/[^/]+/(?P<repo>[^/]+)/statuses/(?P<sha>[0-9a-f]{40})$")


@pytest.fixture
def settings(fake_github: FakeGitHub, tmp_path: Path) -> Settings:
    return make_settings(
        **fake_github.settings_fields(),
        git_service_local_storage_path=tmp_path / "storage",
        cryptographic_key=CRYPTO_KEY,
        ui_base_url=UI,
        repository_cache_max_size=CACHE_QUOTA,
        cache_service_url="http://127.0.0.1:9/cache",
    )


@dataclass(frozen=True)
class Env:
    services: Services
    fake: FakeGitHub
    storage: Path


# Inputs of the ten jobs: each returns the job's arguments ------------------------------------


async def _commits_size(env: Env) -> dict[str, Any]:
    pushed = await push_repository(env.services, env.fake, FILES)
    async with env.services.sessions.begin() as session:
        await session.execute(text("UPDATE commits SET clone_size = 123"))
    return {"repository_id": pushed.repository_id}


async def _destroy(env: Env) -> dict[str, Any]:
    pushed = await push_repository(env.services, env.fake, FILES)
    await enqueue(env.services, "process_commit", commit_id=pushed.commit_id)
    await drain(env.services)  # a stored clone, a check set and a descriptor to delete
    await artifacts_over_quota(env.services, pushed.repository_id)
    return {"repository_id": pushed.repository_id}


async def _initialize(env: Env) -> dict[str, Any]:
    env.fake.add_repo("web", files=FILES)
    repository_id = await insert(
        env.services,
        "repositories",
        name="web",
        default_branch="main",
        token="crt_web",
        github_id=env.fake.repo("web").id,
    )
    return {"repository_id": repository_id}


async def _process_commit(env: Env) -> dict[str, Any]:
    pushed = await push_repository(env.services, env.fake, FILES)
    return {"commit_id": pushed.commit_id}


async def _process_coverage(env: Env) -> dict[str, Any]:
    pushed = await push_repository(env.services, env.fake, FILES)
    upload_id = await store_upload(env.services, pushed, {"lib/a.rb": covered(3, 1)})
    return {"repository_id": pushed.repository_id, "sha": pushed.sha, "upload_id": upload_id}


async def _cache_eviction(env: Env) -> dict[str, Any]:
    pushed = await push_repository(env.services, env.fake, FILES)
    await artifacts_over_quota(env.services, pushed.repository_id)
    return {"repository_id": pushed.repository_id}


async def _commits_author(env: Env) -> dict[str, Any]:
    await push_repository(env.services, env.fake, FILES)  # authored by AUTHOR_EMAIL
    user = await insert(
        env.services, "users", login="dev", github_id=501, github_token="t", admin=False
    )
    await insert(env.services, "user_emails", user_id=user, email="dev@example.com")
    return {"user_id": user}


async def _org_repos(env: Env) -> dict[str, Any]:
    env.fake.add_repos(3)
    return {}


async def _repo_permissions(env: Env) -> dict[str, Any]:
    (remote,) = env.fake.add_repos(1)
    env.fake.add_collaborator(remote.name, 1, "ada", "admin")
    env.fake.add_collaborator(remote.name, 2, "bob", "write")
    repository_id = await insert(
        env.services,
        "repositories",
        name=remote.name,
        default_branch="main",
        token="crt_perm",
        github_id=remote.id,
    )
    await insert(
        env.services, "repository_members", repository_id=repository_id, github_member_id=9, level=0
    )
    return {"repository_id": repository_id}


async def _user_permissions(env: Env) -> dict[str, Any]:
    token = env.fake.add_user("ada", 501)
    user = await insert(
        env.services, "users", login="ada", github_id=501, github_token=token, admin=False
    )
    remotes = env.fake.add_repos(2)
    env.fake.grant("ada", remotes[0].name, "admin")
    for remote in remotes:
        await insert(
            env.services,
            "repositories",
            name=remote.name,
            default_branch="main",
            token=f"crt_{remote.name}",
            github_id=remote.id,
        )
    return {"user_id": user}


CASES: dict[str, Callable[[Env], Awaitable[dict[str, Any]]]] = {
    "compute_repository_commits_size": _commits_size,
    "destroy_repository": _destroy,
    "initialize_repository": _initialize,
    "process_commit": _process_commit,
    "process_coverage": _process_coverage,
    "request_cache_eviction": _cache_eviction,
    "update_commits_author": _commits_author,
    "update_organization_repos": _org_repos,
    "update_repo_permissions": _repo_permissions,
    "update_user_permissions": _user_permissions,
}


# Snapshot --------------------------------------------------------------------------------------


async def _tables(services: Services) -> dict[str, list[tuple[Any, ...]]]:
    async with services.engine.connect() as conn:
        names = await conn.scalars(
            text(
                "SELECT table_name FROM information_schema.tables"
                " WHERE table_schema = 'public' AND table_type = 'BASE TABLE'"
            )
        )
        found: dict[str, list[tuple[Any, ...]]] = {}
        for table in sorted(set(names) - ENGINE_TABLES):
            columns = await conn.scalars(
                text(
                    "SELECT column_name FROM information_schema.columns"
                    " WHERE table_schema = 'public' AND table_name = :t ORDER BY ordinal_position"
                ),
                {"t": table},
            )
            kept = ", ".join(f'"{c}"::text' for c in columns if c not in TOUCH_COLUMNS)
            rows = await conn.execute(text(f'SELECT {kept} FROM "{table}"'))
            found[table] = sorted((tuple(r) for r in rows), key=repr)
    return found


async def _redis(services: Services) -> dict[bytes, Any]:
    found: dict[bytes, Any] = {}
    for client in {id(c): c for c in (services.redis, services.cache_redis)}.values():
        for key in sorted(await client.keys("*")):
            if key in TOUCH_KEYS:
                continue
            kind = (await client.type(key)).decode()
            if kind == "string":
                found[key] = await client.get(key)
            elif kind == "list":
                found[key] = await client.lrange(key, 0, -1)
            elif kind == "hash":
                found[key] = await client.hgetall(key)
            elif kind == "set":
                found[key] = sorted(await client.smembers(key))
            else:
                found[key] = await client.zrange(key, 0, -1, withscores=True)
    return found


def _statuses(fake: FakeGitHub) -> dict[tuple[str, str, str], tuple[str, str]]:
    """The latest status per (repository, sha, context): what GitHub shows."""
    latest: dict[tuple[str, str, str], tuple[str, str]] = {}
    posted = {m.groups() for _, p, _ in fake.request_log if (m := STATUS_PATH.search(p))}
    for repo, sha in sorted(posted):
        for status in fake.statuses(repo, sha):
            latest[(repo, sha, status["context"])] = (status["state"], status["description"])
    return latest


async def snapshot(env: Env) -> dict[str, Any]:
    files = sorted(str(p.relative_to(env.storage)) for p in env.storage.rglob("*"))
    return {
        "tables": await _tables(env.services),
        "redis": await _redis(env.services),
        "storage": files if env.storage.exists() else [],
        "statuses": _statuses(env.fake),
    }


async def run_once(services: Services, name: str, args: dict[str, Any]) -> None:
    """Enqueue ``name(**args)`` and drain the queue, follow-ups included; no job may fail."""
    await enqueue(services, name, **args)
    await drain(services)
    assert [j for j in await jobs(services) if j["status"] == "failed"] == []


def differences(first: dict[str, Any], second: dict[str, Any]) -> list[str]:
    """Readable differences between two snapshots (per table, Redis key, storage, statuses)."""
    found = []
    for part in ("tables", "redis"):
        for key in sorted(set(first[part]) | set(second[part]), key=repr):
            once, twice = first[part].get(key), second[part].get(key)
            if once != twice:
                found.append(f"{part}[{key!r}]: once={once!r} twice={twice!r}")
    for part in ("storage", "statuses"):
        if first[part] != second[part]:
            found.append(f"{part}: once={first[part]!r} twice={second[part]!r}")
    return found


@pytest.mark.parametrize("name", sorted(CASES))
async def test_running_a_job_twice_leaves_the_state_of_one_run(
    name: str, services: Services, fake_github: FakeGitHub, settings: Settings
) -> None:
    env = Env(services, fake_github, settings.git_service_local_storage_path)
    args = await CASES[name](env)
    await run_once(services, name, args)
    once = await snapshot(env)
    await run_once(services, name, args)
    twice = await snapshot(env)
    assert differences(once, twice) == []
