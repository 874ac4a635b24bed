"""Coverage uploads and webhook deliveries.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "cocov_jobs_coverage_uploads",
        sa.Column("id", sa.BigInteger(), primary_key=True),
        sa.Column("repository_id", sa.BigInteger(), nullable=False),
        sa.Column("sha", sa.String(), nullable=False),
        sa.Column("data", JSONB(), nullable=False),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        ),
    )
    op.create_index(
        "cocov_jobs_coverage_uploads_repository_id_sha",
        "cocov_jobs_coverage_uploads",
        ["repository_id", "sha"],
    )
    op.create_table(
        "cocov_jobs_webhook_deliveries",
        sa.Column("delivery_id", sa.String(), primary_key=True),
        sa.Column("event", sa.String(), nullable=False),
        sa.Column("action", sa.String()),
        sa.Column(
            "received_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        ),
    )
    op.create_index(
        "cocov_jobs_webhook_deliveries_received_at",
        "cocov_jobs_webhook_deliveries",
        ["received_at"],
    )
