"""The models write Rails-style rows through the ORM (timestamps filled in UTC)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import select

from cocov_jobs.db.models import Repository
from cocov_jobs.services import Services


async def test_orm_insert_and_update_fill_naive_utc_timestamps(services: Services) -> None:
    async with services.sessions.begin() as session:
        repo = Repository(name="api", default_branch="main", token="crt_1", github_id=1)
        session.add(repo)
    async with services.sessions() as session:
        stored = await session.scalar(select(Repository).where(Repository.name == "API"))
    assert stored is not None and stored.commits_size == 0
    now = datetime.now(UTC).replace(tzinfo=None)
    assert stored.created_at.tzinfo is None
    assert abs(stored.created_at - now) < timedelta(minutes=1)
    created = stored.updated_at
    async with services.sessions.begin() as session:
        row = await session.get(Repository, stored.id)
        assert row is not None
        row.description = "changed"
    async with services.sessions() as session:
        changed = await session.get(Repository, stored.id)
    assert changed is not None and changed.updated_at >= created
