"""SQLAlchemy models of Cocov's schema (``db/schema.rb`` 2023_04_15_014042; docs/architecture.md
§6.1).

Names, types, nullability, defaults, unique indexes and enum integers match Cocov exactly, so
cocov-jobs can run on an existing Cocov database. Foreign keys are plain (NO ACTION): every
cascade is done by the jobs. ``created_at``/``updated_at`` have no database default (Rails sets
them); the models fill them with the UTC time, as Rails does.

Our own tables (prefix ``cocov_jobs_``) live in :data:`own_metadata`; PgQueuer's tables are
managed by PgQueuer itself (see db/migrate.py).
"""

from __future__ import annotations

import enum
from datetime import datetime

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Computed,
    DateTime,
    Double,
    ForeignKey,
    Identity,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    func,
)
from sqlalchemy.dialects.postgresql import ARRAY, CITEXT, JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.sql.elements import ColumnElement
from sqlalchemy.sql.expression import text


def utc_now() -> ColumnElement[datetime]:
    """SQL for the current UTC time as a naive timestamp (Rails stores UTC without zone)."""
    return func.timezone("utc", func.now())


class Base(DeclarativeBase):
    """Cocov's own tables."""

    metadata = MetaData()


class OwnBase(DeclarativeBase):
    """Tables only cocov-jobs has."""

    metadata = MetaData()


cocov_metadata = Base.metadata
own_metadata = OwnBase.metadata


class Timestamps:
    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    # SQL-expression defaults (not Python callables): evaluated by PostgreSQL at write time.
    created_at: Mapped[datetime] = mapped_column(DateTime(), nullable=False, default=utc_now())
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(), nullable=False, default=utc_now(), onupdate=utc_now()
    )


# Enums (integers in the database) ------------------------------------------------------------


class CloneStatus(enum.IntEnum):
    queued = 0
    in_progress = 1
    completed = 2
    errored = 3


class CheckSetStatus(enum.IntEnum):
    waiting = 0
    queued = 1
    in_progress = 2
    completed = 3
    errored = 4
    not_configured = 5
    canceled = 6
    failure = 7


class ErrorKind(enum.IntEnum):
    no_error = 1
    commit_fetch_failed = 2
    manifest_root_must_be_mapping = 3
    manifest_missing_version = 4
    manifest_version_type_mismatch = 5
    manifest_version_unsupported = 6
    manifest_unknown_secret = 7
    manifest_duplicated_mount_destination = 8
    manifest_invalid_mount_source = 9
    manifest_invalid_or_missing_data = 10


class CheckStatus(enum.IntEnum):
    waiting = 0
    in_progress = 1
    completed = 2
    errored = 3
    canceled = 4


class IssueKind(enum.IntEnum):
    style = 0
    performance = 1
    security = 2
    bug = 3
    complexity = 4
    duplication = 5
    convention = 6
    quality = 7


class IgnoreSource(enum.IntEnum):
    user = 1
    rule = 2


class CoverageStatus(enum.IntEnum):
    waiting = 0
    queued = 1
    in_progress = 2
    completed = 3
    errored = 4


class MemberLevel(enum.IntEnum):
    user = 0
    maintainer = 1
    admin = 2


class SecretScope(enum.IntEnum):
    organization = 0
    repository = 1


# Cocov tables --------------------------------------------------------------------------------


class User(Timestamps, Base):
    __tablename__ = "users"
    login: Mapped[str] = mapped_column(CITEXT, nullable=False)
    github_id: Mapped[int] = mapped_column(Integer, nullable=False)
    admin: Mapped[bool] = mapped_column(
        Boolean, nullable=False, default=False, server_default="false"
    )
    github_token: Mapped[str] = mapped_column(Text, nullable=False)
    avatar_url: Mapped[str | None] = mapped_column(Text)
    __table_args__ = (
        Index("index_users_on_login", "login", unique=True),
        Index("index_users_on_github_id", "github_id", unique=True),
    )


class UserEmail(Timestamps, Base):
    __tablename__ = "user_emails"
    user_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("users.id"), nullable=False)
    email: Mapped[str] = mapped_column(CITEXT, nullable=False)
    __table_args__ = (
        Index("index_user_emails_on_user_id", "user_id"),
        Index("index_user_emails_on_email", "email", unique=True),
    )


class Repository(Timestamps, Base):
    __tablename__ = "repositories"
    name: Mapped[str] = mapped_column(CITEXT, nullable=False)
    description: Mapped[str | None] = mapped_column(Text)
    default_branch: Mapped[str] = mapped_column(CITEXT, nullable=False)
    token: Mapped[str] = mapped_column(Text, nullable=False)
    github_id: Mapped[int] = mapped_column(Integer, nullable=False)
    issue_ignore_rules_count: Mapped[int] = mapped_column(
        Integer, nullable=False, default=0, server_default="0"
    )
    cache_size: Mapped[int] = mapped_column(
        BigInteger, nullable=False, default=0, server_default="0"
    )
    commits_size: Mapped[int] = mapped_column(
        BigInteger, nullable=False, default=0, server_default="0"
    )
    __table_args__ = (
        Index("index_repositories_on_name", "name", unique=True),
        Index("index_repositories_on_token", "token", unique=True),
        Index("index_repositories_on_github_id", "github_id", unique=True),
    )


class Commit(Timestamps, Base):
    __tablename__ = "commits"
    repository_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("repositories.id"), nullable=False
    )
    sha: Mapped[str] = mapped_column(CITEXT, nullable=False)
    author_name: Mapped[str] = mapped_column(String, nullable=False)
    author_email: Mapped[str] = mapped_column(String, nullable=False)
    message: Mapped[str] = mapped_column(Text, nullable=False)
    user_id: Mapped[int | None] = mapped_column(BigInteger, ForeignKey("users.id"))
    issues_count: Mapped[int | None] = mapped_column(Integer)
    coverage_percent: Mapped[int | None] = mapped_column(Integer)
    clone_status: Mapped[int] = mapped_column(Integer, nullable=False, default=CloneStatus.queued)
    minimum_coverage: Mapped[int | None] = mapped_column(Integer)
    clone_size: Mapped[int | None] = mapped_column(BigInteger)
    __table_args__ = (
        Index("index_commits_on_sha_and_repository_id", "sha", "repository_id", unique=True),
        Index("index_commits_on_sha", "sha"),
        Index("index_commits_on_repository_id", "repository_id"),
        Index("index_commits_on_user_id", "user_id"),
    )


class Branch(Timestamps, Base):
    __tablename__ = "branches"
    repository_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("repositories.id"), nullable=False
    )
    name: Mapped[str] = mapped_column(CITEXT, nullable=False)
    issues: Mapped[int | None] = mapped_column(Integer)
    coverage: Mapped[int | None] = mapped_column(Integer)
    head_id: Mapped[int | None] = mapped_column(BigInteger, ForeignKey("commits.id"))
    __table_args__ = (
        Index("index_branches_on_repository_id_and_name", "repository_id", "name", unique=True),
        Index("index_branches_on_repository_id", "repository_id"),
        Index("index_branches_on_head_id", "head_id"),
    )


class CheckSet(Timestamps, Base):
    __tablename__ = "check_sets"
    commit_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("commits.id"), nullable=False)
    status: Mapped[int] = mapped_column(Integer, nullable=False)
    started_at: Mapped[datetime | None] = mapped_column(DateTime())
    finished_at: Mapped[datetime | None] = mapped_column(DateTime())
    job_id: Mapped[str | None] = mapped_column(String)
    canceling: Mapped[bool] = mapped_column(
        Boolean, nullable=False, default=False, server_default="false"
    )
    error_kind: Mapped[int] = mapped_column(
        Integer, nullable=False, default=ErrorKind.no_error, server_default="0"
    )
    error_extra: Mapped[str | None] = mapped_column(String)
    __table_args__ = (
        Index("index_check_sets_on_commit_id", "commit_id", unique=True),
        Index("index_check_sets_on_job_id", "job_id", unique=True),
    )


class Check(Timestamps, Base):
    __tablename__ = "checks"
    check_set_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("check_sets.id"), nullable=False
    )
    plugin_name: Mapped[str] = mapped_column(CITEXT, nullable=False)
    status: Mapped[int] = mapped_column(Integer, nullable=False)
    started_at: Mapped[datetime | None] = mapped_column(DateTime())
    finished_at: Mapped[datetime | None] = mapped_column(DateTime())
    error_output: Mapped[str | None] = mapped_column(Text)
    __table_args__ = (
        Index(
            "index_checks_on_plugin_name_and_check_set_id",
            "plugin_name",
            "check_set_id",
            unique=True,
        ),
        Index("index_checks_on_check_set_id", "check_set_id"),
    )


class IssueIgnoreRule(Timestamps, Base):
    __tablename__ = "issue_ignore_rules"
    repository_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("repositories.id"), nullable=False
    )
    user_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("users.id"), nullable=False)
    reason: Mapped[str | None] = mapped_column(String)
    check_source: Mapped[str] = mapped_column(String, nullable=False)
    file: Mapped[str] = mapped_column(String, nullable=False)
    kind: Mapped[int] = mapped_column(Integer, nullable=False)
    line_end: Mapped[int] = mapped_column(Integer, nullable=False)
    line_start: Mapped[int] = mapped_column(Integer, nullable=False)
    message: Mapped[str] = mapped_column(String, nullable=False)
    uid: Mapped[str] = mapped_column(String, nullable=False)
    __table_args__ = (
        Index("index_issue_ignore_rules_on_repository_id", "repository_id"),
        Index("index_issue_ignore_rules_on_user_id", "user_id"),
        Index(
            "index_issue_ignore_rules_on_uid_and_repository_id",
            "uid",
            "repository_id",
            unique=True,
        ),
    )


class Issue(Timestamps, Base):
    __tablename__ = "issues"
    commit_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("commits.id"), nullable=False)
    kind: Mapped[int] = mapped_column(Integer, nullable=False)
    file: Mapped[str] = mapped_column(String, nullable=False)
    uid: Mapped[str] = mapped_column(CITEXT, nullable=False)
    line_start: Mapped[int] = mapped_column(Integer, nullable=False)
    line_end: Mapped[int] = mapped_column(Integer, nullable=False)
    message: Mapped[str] = mapped_column(String, nullable=False)
    check_source: Mapped[str] = mapped_column(String, nullable=False)
    ignored_at: Mapped[datetime | None] = mapped_column(DateTime())
    ignore_source: Mapped[int | None] = mapped_column(Integer)
    ignore_user_id: Mapped[int | None] = mapped_column(BigInteger, ForeignKey("users.id"))
    ignore_rule_id: Mapped[int | None] = mapped_column(
        BigInteger, ForeignKey("issue_ignore_rules.id")
    )
    ignore_user_reason: Mapped[str | None] = mapped_column(String)
    __table_args__ = (
        Index("index_issues_on_uid_and_commit_id", "uid", "commit_id", unique=True),
        Index("index_issues_on_uid", "uid"),
        Index("index_issues_on_commit_id", "commit_id"),
        Index("index_issues_on_ignored_at", "ignored_at"),
        Index("index_issues_on_ignore_rule_id", "ignore_rule_id"),
        Index("index_issues_on_ignore_user_id", "ignore_user_id"),
    )


class CoverageInfo(Timestamps, Base):
    __tablename__ = "coverage_infos"
    commit_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("commits.id"), nullable=False)
    percent_covered: Mapped[float | None] = mapped_column(Double)
    lines_total: Mapped[int | None] = mapped_column(Integer)
    lines_covered: Mapped[int | None] = mapped_column(Integer)
    status: Mapped[int] = mapped_column(Integer, nullable=False)
    __table_args__ = (Index("index_coverage_infos_on_commit_id", "commit_id", unique=True),)


class CoverageFile(Timestamps, Base):
    __tablename__ = "coverage_files"
    coverage_info_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("coverage_infos.id"), nullable=False
    )
    file: Mapped[str] = mapped_column(String, nullable=False)
    percent_covered: Mapped[int] = mapped_column(Integer, nullable=False)
    raw_data: Mapped[bytes] = mapped_column(LargeBinary, nullable=False)
    lines_missed: Mapped[int] = mapped_column(Integer, nullable=False)
    lines_covered: Mapped[int] = mapped_column(Integer, nullable=False)
    lines_total: Mapped[int] = mapped_column(Integer, nullable=False)
    __table_args__ = (Index("index_coverage_files_on_coverage_info_id", "coverage_info_id"),)


class CoverageHistory(Timestamps, Base):
    __tablename__ = "coverage_histories"
    repository_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("repositories.id"), nullable=False
    )
    branch_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("branches.id"), nullable=False)
    percentage: Mapped[float] = mapped_column(Double, nullable=False)
    __table_args__ = (
        Index("index_coverage_histories_on_branch_id", "branch_id"),
        Index("index_coverage_histories_on_created_at", "created_at"),
        Index("index_coverage_histories_on_repository_id", "repository_id"),
    )


class IssueHistory(Timestamps, Base):
    __tablename__ = "issue_histories"
    repository_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("repositories.id"), nullable=False
    )
    branch_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("branches.id"), nullable=False)
    quantity: Mapped[int] = mapped_column(Integer, nullable=False)
    __table_args__ = (
        Index("index_issue_histories_on_branch_id", "branch_id"),
        Index("index_issue_histories_on_created_at", "created_at"),
        Index("index_issue_histories_on_repository_id", "repository_id"),
    )


class CacheArtifact(Timestamps, Base):
    __tablename__ = "cache_artifacts"
    repository_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("repositories.id"), nullable=False
    )
    name: Mapped[str] = mapped_column(CITEXT, nullable=False)
    name_hash: Mapped[str] = mapped_column(String, nullable=False)
    size: Mapped[int] = mapped_column(BigInteger, nullable=False)
    last_used_at: Mapped[datetime | None] = mapped_column(DateTime())
    engine: Mapped[str] = mapped_column(CITEXT, nullable=False)
    mime: Mapped[str] = mapped_column(String, nullable=False)
    __table_args__ = (
        Index("index_cache_artifacts_on_name", "name"),
        Index("index_cache_artifacts_on_name_hash", "name_hash"),
        Index("index_cache_artifacts_on_repository_id", "repository_id"),
        Index(
            "index_cache_artifacts_on_repository_id_and_name_and_engine",
            "repository_id",
            "name",
            "engine",
            unique=True,
        ),
        Index(
            "index_cache_artifacts_on_repository_id_and_name_hash_and_engine",
            "repository_id",
            "name_hash",
            "engine",
            unique=True,
        ),
    )


class CacheTool(Timestamps, Base):
    __tablename__ = "cache_tools"
    name: Mapped[str] = mapped_column(CITEXT, nullable=False)
    name_hash: Mapped[str] = mapped_column(String, nullable=False)
    size: Mapped[int] = mapped_column(Integer, nullable=False)
    last_used_at: Mapped[datetime | None] = mapped_column(DateTime())
    engine: Mapped[str] = mapped_column(CITEXT, nullable=False)
    mime: Mapped[str] = mapped_column(String, nullable=False)
    __table_args__ = (
        Index("index_cache_tools_on_name", "name"),
        Index("index_cache_tools_on_name_hash", "name_hash"),
        Index("index_cache_tools_on_name_and_engine", "name", "engine", unique=True),
        Index("index_cache_tools_on_name_hash_and_engine", "name_hash", "engine", unique=True),
    )


class RepositoryMember(Timestamps, Base):
    __tablename__ = "repository_members"
    repository_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("repositories.id"), nullable=False
    )
    github_member_id: Mapped[int] = mapped_column(Integer, nullable=False)
    level: Mapped[int] = mapped_column(Integer, nullable=False)
    __table_args__ = (
        Index("index_repository_members_on_repository_id", "repository_id"),
        Index("index_repository_members_on_github_member_id", "github_member_id"),
        Index(
            "index_repository_members_on_repository_id_and_github_member_id",
            "repository_id",
            "github_member_id",
            unique=True,
        ),
    )


class Secret(Timestamps, Base):
    __tablename__ = "secrets"
    scope: Mapped[int] = mapped_column(Integer, nullable=False)
    name: Mapped[str] = mapped_column(CITEXT, nullable=False)
    repository_id: Mapped[int | None] = mapped_column(BigInteger, ForeignKey("repositories.id"))
    secure_data: Mapped[bytes] = mapped_column(LargeBinary, nullable=False)
    last_used_at: Mapped[datetime | None] = mapped_column(DateTime())
    owner_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("users.id"), nullable=False)
    __table_args__ = (
        Index("index_secrets_on_repository_id", "repository_id"),
        Index("index_secrets_on_owner_id", "owner_id"),
        Index(
            "index_secrets_on_scope_and_name_and_repository_id",
            "scope",
            "name",
            "repository_id",
            unique=True,
        ),
    )


class PrivateKey(Timestamps, Base):
    __tablename__ = "private_keys"
    scope: Mapped[int] = mapped_column(Integer, nullable=False)
    name: Mapped[str] = mapped_column(CITEXT, nullable=False)
    repository_id: Mapped[int | None] = mapped_column(BigInteger, ForeignKey("repositories.id"))
    encrypted_key: Mapped[bytes] = mapped_column(LargeBinary, nullable=False)
    digest: Mapped[str] = mapped_column(Text, nullable=False)
    owner_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("users.id"), nullable=False)
    __table_args__ = (
        Index("index_private_keys_on_repository_id", "repository_id"),
        Index("index_private_keys_on_owner_id", "owner_id"),
        Index(
            "index_private_keys_on_scope_and_name_and_repository_id",
            "scope",
            "name",
            "repository_id",
            unique=True,
        ),
    )


class ServiceToken(Timestamps, Base):
    """Cocov's service tokens: ``token_hash`` = base64(SHA-256(``cos_…``))."""

    __tablename__ = "service_tokens"
    token_hash: Mapped[str] = mapped_column(Text, nullable=False)
    description: Mapped[str] = mapped_column(Text, nullable=False)
    owner_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("users.id"), nullable=False)
    last_used_at: Mapped[datetime | None] = mapped_column(DateTime())
    __table_args__ = (
        Index("index_service_tokens_on_token_hash", "token_hash", unique=True),
        Index("index_service_tokens_on_owner_id", "owner_id"),
    )


# cocov-jobs tables ---------------------------------------------------------------------------


class WorkerProcess(OwnBase):
    """One row per running worker process, refreshed every few seconds (readiness, dashboard)."""

    __tablename__ = "cocov_jobs_workers"
    id: Mapped[str] = mapped_column(String, primary_key=True)
    host: Mapped[str] = mapped_column(String, nullable=False)
    pid: Mapped[int] = mapped_column(Integer, nullable=False)
    concurrency: Mapped[int] = mapped_column(Integer, nullable=False)
    started_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), nullable=False, server_default=func.now()
    )
    heartbeat_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), nullable=False, server_default=func.now()
    )
    rss_bytes: Mapped[int] = mapped_column(BigInteger, nullable=False, server_default="0")
    running: Mapped[int] = mapped_column(Integer, nullable=False, server_default="0")
    quiet: Mapped[bool] = mapped_column(Boolean, nullable=False, server_default="false")
    __table_args__ = (Index("cocov_jobs_workers_heartbeat_at", "heartbeat_at"),)


class CoverageUpload(OwnBase):
    """A coverage upload waiting for (or processed by) ``process_coverage``; the job gets its id.

    ``data`` is the reporter's map ``{path: base64}``. Rows are deleted with their repository.
    """

    __tablename__ = "cocov_jobs_coverage_uploads"
    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    repository_id: Mapped[int] = mapped_column(BigInteger, nullable=False)
    sha: Mapped[str] = mapped_column(String, nullable=False)
    data: Mapped[dict[str, object]] = mapped_column(JSONB, nullable=False)
    created_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), nullable=False, server_default=func.now()
    )
    __table_args__ = (
        Index("cocov_jobs_coverage_uploads_repository_id_sha", "repository_id", "sha"),
    )


class WebhookDelivery(OwnBase):
    """A GitHub webhook delivery, recorded in the transaction that applies its effects."""

    __tablename__ = "cocov_jobs_webhook_deliveries"
    delivery_id: Mapped[str] = mapped_column(String, primary_key=True)
    event: Mapped[str] = mapped_column(String, nullable=False)
    action: Mapped[str | None] = mapped_column(String)
    received_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), nullable=False, server_default=func.now()
    )
    #: Hex SHA-256 of the signed body: a replay under a new delivery id is a duplicate too.
    body_digest: Mapped[str | None] = mapped_column(String)
    #: What the delivery did not apply, and why (a push whose ``before`` is not the head).
    note: Mapped[str | None] = mapped_column(String)
    __table_args__ = (
        Index("cocov_jobs_webhook_deliveries_received_at", "received_at"),
        Index("cocov_jobs_webhook_deliveries_body_digest", "body_digest", unique=True),
    )


class DashboardSession(OwnBase):
    """A signed-in dashboard browser: its subject (a service token or a Cocov user), the CSRF
    token of its forms and its lifetime. Keyed by the SHA-256 of the id its cookie holds."""

    __tablename__ = "cocov_jobs_dashboard_sessions"
    digest: Mapped[str] = mapped_column(String, primary_key=True)
    token_id: Mapped[int | None] = mapped_column(BigInteger)
    user_id: Mapped[int | None] = mapped_column(BigInteger)
    csrf_token: Mapped[str] = mapped_column(String, nullable=False)
    created_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), nullable=False, server_default=func.now()
    )
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    last_seen_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), nullable=False, server_default=func.now()
    )
    __table_args__ = (
        CheckConstraint(
            "(token_id IS NULL) <> (user_id IS NULL)",
            name="cocov_jobs_dashboard_sessions_one_subject",
        ),
        Index("cocov_jobs_dashboard_sessions_expires_at", "expires_at"),
    )


class SecretKey(OwnBase):
    """A key generated once for the installation when no setting provides it."""

    __tablename__ = "cocov_jobs_secret_keys"
    name: Mapped[str] = mapped_column(String, primary_key=True)
    value: Mapped[str] = mapped_column(String, nullable=False)
    created_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), nullable=False, server_default=func.now()
    )


class JobOrigin(OwnBase):
    """What enqueued a job (``token:12``, ``webhook:<delivery>``, ``job:<id>``, ``schedule``…)."""

    __tablename__ = "cocov_jobs_job_origins"
    job_id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    enqueued_by: Mapped[str] = mapped_column(String, nullable=False)
    created_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), nullable=False, server_default=func.now()
    )
    __table_args__ = (Index("cocov_jobs_job_origins_created_at", "created_at"),)


class JobRun(OwnBase):
    """One finished run of a job (the job history; see :mod:`cocov_jobs.engine.history`)."""

    __tablename__ = "cocov_jobs_runs"
    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    job_id: Mapped[int] = mapped_column(BigInteger, nullable=False)
    job: Mapped[str] = mapped_column(Text, nullable=False)
    arguments: Mapped[dict[str, object]] = mapped_column(JSONB, nullable=False)
    attempt: Mapped[int] = mapped_column(Integer, nullable=False)
    worker: Mapped[str | None] = mapped_column(Text)
    enqueued_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    due_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    finished_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    outcome: Mapped[str] = mapped_column(Text, nullable=False)
    error: Mapped[str | None] = mapped_column(Text)
    duration: Mapped[float] = mapped_column(
        Double, Computed("date_part('epoch', finished_at - started_at)", persisted=True)
    )
    wait: Mapped[float] = mapped_column(
        Double, Computed("greatest(0, date_part('epoch', started_at - due_at))", persisted=True)
    )
    __table_args__ = (
        Index(
            "cocov_jobs_runs_finished", "finished_at", "id", postgresql_include=["job", "outcome"]
        ),
        Index(
            "cocov_jobs_runs_job",
            "job",
            "finished_at",
            "id",
            postgresql_include=["outcome", "duration", "wait"],
        ),
        Index("cocov_jobs_runs_outcome", "outcome", "finished_at", "id"),
        Index("cocov_jobs_runs_job_id", "job_id"),
        Index("cocov_jobs_runs_arguments", "arguments", postgresql_using="gin"),
        Index("cocov_jobs_runs_repository_id", text("(arguments -> 'repository_id')")),
        Index("cocov_jobs_runs_commit_id", text("(arguments -> 'commit_id')")),
    )


class JobRunHour(OwnBase):
    """One job's runs in one complete hour, rolled up for the metrics (see
    :mod:`cocov_jobs.engine.history`): counts, maxima and log-scale histograms."""

    __tablename__ = "cocov_jobs_run_hours"
    hour: Mapped[datetime] = mapped_column(DateTime(timezone=True), primary_key=True)
    job: Mapped[str] = mapped_column(Text, primary_key=True)
    runs: Mapped[int] = mapped_column(Integer, nullable=False)
    failures: Mapped[int] = mapped_column(Integer, nullable=False)
    duration_max: Mapped[float] = mapped_column(Double, nullable=False)
    wait_max: Mapped[float] = mapped_column(Double, nullable=False)
    duration_buckets: Mapped[list[int]] = mapped_column(ARRAY(Integer), nullable=False)
    duration_counts: Mapped[list[int]] = mapped_column(ARRAY(Integer), nullable=False)
    wait_buckets: Mapped[list[int]] = mapped_column(ARRAY(Integer), nullable=False)
    wait_counts: Mapped[list[int]] = mapped_column(ARRAY(Integer), nullable=False)
