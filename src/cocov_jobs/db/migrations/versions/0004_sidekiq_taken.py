"""Sidekiq payloads taken in: what makes the intake exactly-once.

One row per payload turned into a job (its ``jid``, or ``sha256:`` of its bytes when it has
none), inserted in the transaction that inserts the job. A payload seen again — left in a
killed process's in-flight list after that transaction committed, or read by two processes —
finds its key taken and inserts nothing. Rows older than ``COCOV_HISTORY_RETENTION_DAYS`` are
deleted by ``prune_history``.

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "cocov_jobs_sidekiq_taken",
        sa.Column("key", sa.String(), primary_key=True),
        sa.Column("ruby_class", sa.String(), nullable=False),
        sa.Column(
            "taken_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        ),
    )
    op.create_index("cocov_jobs_sidekiq_taken_taken_at", "cocov_jobs_sidekiq_taken", ["taken_at"])
