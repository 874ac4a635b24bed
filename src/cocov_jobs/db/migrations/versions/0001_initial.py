"""Cocov's schema (unless the database is already Cocov's) and cocov-jobs' own tables.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from cocov_jobs.db.models import cocov_metadata

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    bind = op.get_bind()
    if not sa.inspect(bind).has_table("schema_migrations"):
        # A fresh database: create Cocov's tables exactly as db/schema.rb does. Cocov's schema is
        # a fixed contract, so its models are the source of truth here.
        op.execute("CREATE EXTENSION IF NOT EXISTS citext")
        op.execute("CREATE EXTENSION IF NOT EXISTS pg_trgm")
        cocov_metadata.create_all(bind, checkfirst=True)
    op.create_table(
        "cocov_jobs_workers",
        sa.Column("id", sa.String(), primary_key=True),
        sa.Column("host", sa.String(), nullable=False),
        sa.Column("pid", sa.Integer(), nullable=False),
        sa.Column("concurrency", sa.Integer(), nullable=False),
        sa.Column(
            "started_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        ),
        sa.Column(
            "heartbeat_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        ),
        sa.Column("rss_bytes", sa.BigInteger(), nullable=False, server_default="0"),
        sa.Column("running", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("quiet", sa.Boolean(), nullable=False, server_default="false"),
    )
    op.create_index("cocov_jobs_workers_heartbeat_at", "cocov_jobs_workers", ["heartbeat_at"])
