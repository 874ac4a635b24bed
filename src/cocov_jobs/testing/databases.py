"""Scratch databases for tests, benchmarks and fault scenarios (nothing in the product uses it)."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from cocov_jobs.db.migrate import upgrade
from cocov_jobs.db.session import asyncpg_dsn, create_engine


def with_database(url: str, name: str) -> str:
    """``url`` pointing at database ``name`` on the same server."""
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, "/" + name, parts.query, parts.fragment))


async def _admin(server_url: str, statement: str) -> None:
    conn = await asyncpg.connect(asyncpg_dsn(server_url))
    try:
        await conn.execute(statement)
    finally:
        await conn.close()


@contextlib.asynccontextmanager
async def scratch_database(server_url: str, prefix: str = "cocov_scratch") -> AsyncIterator[str]:
    """URL of a fresh database on ``server_url``'s server, migrated to head; dropped at exit."""
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    await _admin(server_url, f'CREATE DATABASE "{name}"')
    url = with_database(server_url, name)
    try:
        engine = create_engine(url)
        try:
            await upgrade(engine, url)
        finally:
            await engine.dispose()
        yield url
    finally:
        await _admin(server_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
