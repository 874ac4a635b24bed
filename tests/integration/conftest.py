"""Integration fixtures: a GitHub fake over real HTTP, one per test; a database URL PostgreSQL
refuses every connection to."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import pytest
from sqlalchemy import make_url

from cocov_jobs.db.session import asyncpg_dsn
from cocov_jobs.testing import FakeGitHub


@pytest.fixture
def fake_github(tmp_path: Path) -> Iterator[FakeGitHub]:
    """A started :class:`FakeGitHub` for org ``acme``, its repositories under ``tmp_path``."""
    with FakeGitHub(org="acme", tmp_dir=tmp_path / "github") as fake:
        yield fake


@pytest.fixture
async def no_slot_database_url(database_url: str) -> AsyncIterator[str]:
    """``database_url`` as a role allowed no connection at all: every connect is refused with
    PostgreSQL's "too many connections" (SQLSTATE 53300)."""
    role = f"cocov_no_slot_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(asyncpg_dsn(database_url))
    await admin.execute(f"CREATE ROLE {role} LOGIN CONNECTION LIMIT 0")
    yield make_url(database_url).set(username=role).render_as_string(hide_password=False)
    await admin.execute(f"DROP ROLE {role}")
    await admin.close()
