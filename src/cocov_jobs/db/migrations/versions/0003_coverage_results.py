"""Applied coverage uploads: what makes ``process_coverage`` idempotent.

One row per upload whose coverage was recorded, inserted in the transaction that records it, so
a second run of the same upload records nothing (no duplicated history). ``rejected`` lists the
upload's files left out, with the reason: ``[{"file": …, "reason": …}]``. Rows are deleted with
their repository.

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "cocov_jobs_coverage_results",
        sa.Column("upload_id", sa.BigInteger(), primary_key=True),
        sa.Column("repository_id", sa.BigInteger(), nullable=False),
        sa.Column("commit_id", sa.BigInteger(), nullable=False),
        sa.Column("rejected", JSONB(), nullable=False, server_default="[]"),
        sa.Column(
            "processed_at",
            sa.DateTime(timezone=True),
            nullable=False,
            server_default=sa.func.now(),
        ),
    )
    op.create_index(
        "cocov_jobs_coverage_results_repository_id",
        "cocov_jobs_coverage_results",
        ["repository_id"],
    )
