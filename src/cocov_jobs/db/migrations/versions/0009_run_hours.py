"""Hourly roll-ups of the job history (``cocov_jobs_run_hours``), for the per-job metrics.

One row per job and complete hour (``hour`` is its start): runs, failures, the longest duration
and queue wait, and both measures' histograms as parallel arrays of bucket numbers and counts
(log-scale buckets, :mod:`cocov_jobs.engine.history`). Filled by the metrics' readers and
``prune_history`` for the hours of the last week not rolled up yet, deleted by ``prune_history``
with the runs. The primary key starts with ``hour``: the readers take a range of hours.

Revision ID: 0009
Revises: 0008
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import ARRAY

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    buckets = ARRAY(sa.Integer())
    op.create_table(
        "cocov_jobs_run_hours",
        sa.Column("hour", sa.DateTime(timezone=True), primary_key=True),
        sa.Column("job", sa.Text(), primary_key=True),
        sa.Column("runs", sa.Integer(), nullable=False),
        sa.Column("failures", sa.Integer(), nullable=False),
        sa.Column("duration_max", sa.Double(), nullable=False),
        sa.Column("wait_max", sa.Double(), nullable=False),
        sa.Column("duration_buckets", buckets, nullable=False),
        sa.Column("duration_counts", buckets, nullable=False),
        sa.Column("wait_buckets", buckets, nullable=False),
        sa.Column("wait_counts", buckets, nullable=False),
    )
