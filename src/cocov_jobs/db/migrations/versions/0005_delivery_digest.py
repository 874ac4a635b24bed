"""Webhook deliveries: the digest of the signed body, and why a delivery changed less.

``body_digest`` (hex SHA-256 of the raw body) is unique: the signature covers the body but not
``X-GitHub-Delivery``, so a captured delivery replayed under a new id is a duplicate too.
``note`` says what a delivery did not apply (a push whose ``before`` is not the branch head).

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("cocov_jobs_webhook_deliveries", sa.Column("body_digest", sa.String()))
    op.add_column("cocov_jobs_webhook_deliveries", sa.Column("note", sa.String()))
    op.create_index(
        "cocov_jobs_webhook_deliveries_body_digest",
        "cocov_jobs_webhook_deliveries",
        ["body_digest"],
        unique=True,
    )
