"""Dashboard sessions kept server-side, and keys generated once per installation.

``cocov_jobs_dashboard_sessions``: one row per signed-in browser, keyed by the SHA-256 of the
random session id its cookie holds; its subject is either a service token (``token_id``, the
login form) or a Cocov user (``user_id``); the CSRF token of its forms; when it expires and was
last seen. Logging out deletes the row.

``cocov_jobs_secret_keys``: keys generated at first use when no setting provides one (the
dashboard session signing key without ``COCOV_SECRET_KEY_BASE``), shared by every process.

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "cocov_jobs_dashboard_sessions",
        sa.Column("digest", sa.String(), primary_key=True),
        sa.Column("token_id", sa.BigInteger()),
        sa.Column("user_id", sa.BigInteger()),
        sa.Column("csrf_token", sa.String(), nullable=False),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        ),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column(
            "last_seen_at",
            sa.DateTime(timezone=True),
            nullable=False,
            server_default=sa.func.now(),
        ),
        sa.CheckConstraint(
            "(token_id IS NULL) <> (user_id IS NULL)",
            name="cocov_jobs_dashboard_sessions_one_subject",
        ),
    )
    op.create_index(
        "cocov_jobs_dashboard_sessions_expires_at",
        "cocov_jobs_dashboard_sessions",
        ["expires_at"],
    )
    op.create_table(
        "cocov_jobs_secret_keys",
        sa.Column("name", sa.String(), primary_key=True),
        sa.Column("value", sa.String(), nullable=False),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        ),
    )
