"""Alembic environment: runs migrations on the connection passed in ``config.attributes``."""

from __future__ import annotations

from alembic import context
from sqlalchemy.engine import Connection

from cocov_jobs.db.models import own_metadata

connection: Connection = context.config.attributes["connection"]
context.configure(
    connection=connection,
    target_metadata=own_metadata,
    version_table="cocov_jobs_alembic_version",
)
with context.begin_transaction():
    context.run_migrations()
