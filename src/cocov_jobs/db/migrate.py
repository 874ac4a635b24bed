"""``cocov-jobs db upgrade``: Alembic for Cocov's and our tables, PgQueuer for its own.

Idempotent: on an empty database it creates everything; on a Cocov database (Rails
``schema_migrations`` present) it adds only our tables; run again, it does nothing. Concurrent
upgrades are serialized with an advisory lock.
"""

from __future__ import annotations

from pathlib import Path

import asyncpg
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from pgqueuer import Queries
from pgqueuer.db import AsyncpgDriver
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

from cocov_jobs.db.session import asyncpg_dsn

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
#: Advisory lock key serializing concurrent ``db upgrade`` runs.
UPGRADE_LOCK_KEY = 0x636F636F76  # "cocov"
VERSION_TABLE = "cocov_jobs_alembic_version"
#: Indexes the job lists (dashboard, ``jobs list``) need on PgQueuer's table, created after
#: PgQueuer installs it: every keyset page by state is an index range scan.
QUEUE_INDEXES = "CREATE INDEX IF NOT EXISTS cocov_jobs_pgqueuer_status_id ON pgqueuer (status, id)"


def alembic_config() -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    return config


def head_revision() -> str | None:
    return ScriptDirectory.from_config(alembic_config()).get_current_head()


def current_revision(connection: Connection) -> str | None:
    context = MigrationContext.configure(connection, opts={"version_table": VERSION_TABLE})
    return context.get_current_revision()


def _upgrade(connection: Connection) -> None:
    config = alembic_config()
    config.attributes["connection"] = connection
    command.upgrade(config, "head")


async def upgrade(engine: AsyncEngine, url: str) -> None:
    """Bring the database to the current schema (tables, PgQueuer's queue, our indexes on it)."""
    async with engine.begin() as conn:
        await conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({UPGRADE_LOCK_KEY})")
        await conn.run_sync(_upgrade)
    raw = await asyncpg.connect(asyncpg_dsn(url))
    try:
        await raw.execute("SELECT pg_advisory_lock($1)", UPGRADE_LOCK_KEY)
        queries = Queries(AsyncpgDriver(raw))
        if await queries.schema_is_installed():
            await queries.upgrade()
        else:
            await queries.install()
        await raw.execute(QUEUE_INDEXES)
    finally:
        await raw.close()


async def schema_is_current(engine: AsyncEngine) -> bool:
    """True when our migrations are at head (readiness probe)."""
    async with engine.connect() as conn:
        return await conn.run_sync(current_revision) == head_revision()
