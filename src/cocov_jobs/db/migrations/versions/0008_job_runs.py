"""Job history: one row per finished run of a job (``cocov_jobs_runs``).

Written by the worker in the statement that records the run's end in PgQueuer's tables
(:mod:`cocov_jobs.engine.history`), deleted by ``prune_history`` after
``COCOV_HISTORY_RETENTION_DAYS``. Lists are ordered by ``(finished_at, id)`` and paged by keyset,
so each filter has an index that starts with its column and ends with that order (the ones on
``job`` and ``finished_at`` also cover the per-job metrics and charts); the GIN index
on ``arguments`` serves "any argument equals" (jsonpath ``$.* ? (@ == v)``) and
``name=value``; ``arguments -> 'repository_id'`` and ``-> 'commit_id'`` find the runs that worked on
a repository (its dashboard page).

Revision ID: 0008
Revises: 0007
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

#: A run's duration and queue wait in seconds (generated columns).
DURATION = "date_part('epoch', finished_at - started_at)"
WAIT = "greatest(0, date_part('epoch', started_at - due_at))"

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    timestamp = sa.DateTime(timezone=True)
    op.create_table(
        "cocov_jobs_runs",
        sa.Column("id", sa.BigInteger(), sa.Identity(), primary_key=True),
        sa.Column("job_id", sa.BigInteger(), nullable=False),
        sa.Column("job", sa.Text(), nullable=False),
        sa.Column("arguments", JSONB(), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("worker", sa.Text()),
        sa.Column("enqueued_at", timestamp, nullable=False),
        sa.Column("due_at", timestamp, nullable=False),
        sa.Column("started_at", timestamp, nullable=False),
        sa.Column("finished_at", timestamp, nullable=False),
        sa.Column("outcome", sa.Text(), nullable=False),
        sa.Column("error", sa.Text()),
        # Seconds, for the metrics' percentiles (computed once, read from the index).
        sa.Column("duration", sa.Double(), sa.Computed(DURATION, persisted=True), nullable=False),
        sa.Column("wait", sa.Double(), sa.Computed(WAIT, persisted=True), nullable=False),
    )
    runs = "cocov_jobs_runs"
    # INCLUDE: the metrics (per job) and the charts (per hour) read only these, index-only.
    op.create_index(
        "cocov_jobs_runs_finished",
        runs,
        ["finished_at", "id"],
        postgresql_include=["job", "outcome"],
    )
    op.create_index(
        "cocov_jobs_runs_job",
        runs,
        ["job", "finished_at", "id"],
        postgresql_include=["outcome", "duration", "wait"],
    )
    op.create_index("cocov_jobs_runs_outcome", runs, ["outcome", "finished_at", "id"])
    op.create_index("cocov_jobs_runs_job_id", runs, ["job_id"])
    op.create_index("cocov_jobs_runs_arguments", runs, ["arguments"], postgresql_using="gin")
    for name in ("repository_id", "commit_id"):
        op.create_index(f"cocov_jobs_runs_{name}", runs, [sa.text(f"(arguments -> '{name}')")])
