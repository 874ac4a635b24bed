"""Fixtures and helpers of the commit pipeline tests (checks, process_commit, process_coverage).

Import the fixture into a test module (``from tests.support.pipeline import settings``) to
point the services at the GitHub fake, with local storage under ``tmp_path`` and a
cryptographic key.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from cocov_jobs.config import Settings
from cocov_jobs.engine import queue
from cocov_jobs.services import Services
from cocov_jobs.testing import FakeGitHub
from tests.support.helpers import drain, insert
from tests.support.settings import make_settings

#: ``COCOV_CRYPTOGRAPHIC_KEY`` of the tests (32 bytes).
CRYPTO_KEY = "0123456789abcdef0123456789abcdef"
#: ``COCOV_UI_BASE_URL`` of the tests.
UI = "http://ui.test"
#: Author of the commits the tests register.
AUTHOR_EMAIL = "Dev@Example.com"


@pytest.fixture
def settings(request: pytest.FixtureRequest, fake_github: FakeGitHub, tmp_path: Path) -> Settings:
    """Test settings; parametrize indirectly with a dict of overrides."""
    values: dict[str, Any] = {
        **fake_github.settings_fields(),
        "git_service_local_storage_path": tmp_path / "storage",
        "cryptographic_key": CRYPTO_KEY,
        "ui_base_url": UI,
    }
    return make_settings(**{**values, **getattr(request, "param", {})})


@dataclass(frozen=True)
class Pushed:
    """A repository in both the fake and the database, with one registered commit."""

    repository_id: int
    name: str
    sha: str
    commit_id: int


async def push_repository(
    services: Services,
    fake: FakeGitHub,
    files: Mapping[str, str | bytes],
    *,
    name: str = "web",
    branches: tuple[str, ...] = ("main",),
) -> Pushed:
    """Create ``name`` with one commit of ``files``; register it as the head of ``branches``."""
    fake.add_repo(name, files=files)
    sha = fake.head(name)
    repository_id = await insert(
        services,
        "repositories",
        name=name,
        default_branch="main",
        token=f"crt_{name}",
        github_id=fake.repo(name).id,
    )
    commit_id = await insert_commit(services, repository_id, sha)
    for branch in branches:
        await insert(
            services, "branches", repository_id=repository_id, name=branch, head_id=commit_id
        )
    return Pushed(repository_id, name, sha, commit_id)


async def insert_commit(services: Services, repository_id: int, sha: str) -> int:
    return await insert(
        services,
        "commits",
        repository_id=repository_id,
        sha=sha,
        author_name="Dev",
        author_email=AUTHOR_EMAIL,
        message="Initial commit",
        clone_status=0,
    )


async def enqueue(services: Services, name: str, **args: Any) -> int:
    async with services.sessions.begin() as session:
        job_id = await queue.enqueue(session, name, **args)
    assert job_id is not None
    return job_id


async def run_job(services: Services, name: str, **args: Any) -> int:
    """Enqueue one job and drain the queue (its follow-ups included); return its id."""
    job_id = await enqueue(services, name, **args)
    await drain(services)
    return job_id


async def row(services: Services, sql: str, **params: Any) -> dict[str, Any] | None:
    async with services.engine.connect() as conn:
        found = (await conn.execute(text(sql), params)).mappings().one_or_none()
        return dict(found) if found else None


async def rows(services: Services, sql: str, **params: Any) -> list[dict[str, Any]]:
    async with services.engine.connect() as conn:
        return [dict(r) for r in (await conn.execute(text(sql), params)).mappings()]


async def store_upload(services: Services, pushed: Pushed, data: Mapping[str, object]) -> int:
    """Insert an upload row (as the web endpoint does) and return its id."""
    async with services.sessions.begin() as session:
        upload_id = await session.scalar(
            text(
                "INSERT INTO cocov_jobs_coverage_uploads (repository_id, sha, data)"
                " VALUES (:r, :s, CAST(:d AS jsonb)) RETURNING id"
            ),
            {"r": pushed.repository_id, "s": pushed.sha, "d": json.dumps(data)},
        )
    return int(upload_id)


async def artifacts_over_quota(services: Services, repository_id: int) -> None:
    """Three cache artifacts of 60 bytes each: 180, over a quota of 100."""
    for index in range(3):
        await insert(
            services,
            "cache_artifacts",
            repository_id=repository_id,
            name=f"gems-{index}",
            name_hash=f"h{index}",
            size=60,
            engine="e",
            mime="m",
        )
    async with services.sessions.begin() as session:
        await session.execute(
            text("UPDATE repositories SET cache_size = 180 WHERE id = :r"), {"r": repository_id}
        )
