"""Scratch databases for tests, benchmarks and fault scenarios (nothing in the product uses it)."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from cocov_jobs.db.migrate import upgrade
from cocov_jobs.db.session import asyncpg_dsn, create_engine
from cocov_jobs.embedded import EmbeddedPostgres, EmbeddedRedis


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


#: Servers tests and benchmarks use when set (CI points them at the machine's services).
TEST_DATABASE_URL_ENV = "COCOV_TEST_DATABASE_URL"
TEST_REDIS_URL_ENV = "COCOV_TEST_REDIS_URL"


@contextlib.contextmanager
def test_servers(prefix: str = "cocov-jobs-test-") -> Iterator[tuple[str, str]]:
    """(PostgreSQL server URL, Redis URL on db 15): the ``COCOV_TEST_*`` servers when set, else
    embedded ones in a private directory (so concurrent runs never share them), stopped at exit."""
    with contextlib.ExitStack() as stack:
        data_dir = Path(tempfile.mkdtemp(prefix=prefix))
        stack.callback(shutil.rmtree, data_dir, True)
        db_url = os.environ.get(TEST_DATABASE_URL_ENV, "")
        redis_url = os.environ.get(TEST_REDIS_URL_ENV, "")
        if not db_url:
            pg = EmbeddedPostgres(data_dir)
            pg.start()
            stack.callback(pg.stop)
            db_url = pg.url
        if not redis_url:
            rd = EmbeddedRedis(data_dir)
            rd.start()
            stack.callback(rd.stop)
            redis_url = rd.url(15)
        yield db_url, redis_url
