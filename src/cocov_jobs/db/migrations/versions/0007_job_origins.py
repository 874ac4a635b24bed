"""What enqueued each job: one row per job, kept after the job finished.

``enqueued_by`` is a short origin: ``token:<service token id>``, ``user:<users.id>`` (dashboard
session of a Cocov user), ``webhook:<delivery id>``, ``repository:<id>`` (coverage upload),
``job:<job id>`` (a follow-up), ``schedule``, ``cli``. Rows are pruned with the job's history.

Revision ID: 0007
Revises: 0006
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "cocov_jobs_job_origins",
        sa.Column("job_id", sa.BigInteger(), primary_key=True),
        sa.Column("enqueued_by", sa.String(), nullable=False),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        ),
    )
    op.create_index("cocov_jobs_job_origins_created_at", "cocov_jobs_job_origins", ["created_at"])
