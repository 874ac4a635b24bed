"""``db upgrade`` gives exactly Cocov's schema (docs/architecture.md §6.1) and is idempotent.

The expected schema below is transcribed from Cocov's ``db/schema.rb``, independently of the models.
"""

from __future__ import annotations

import asyncpg
import pytest

from cocov_jobs.db.migrate import upgrade
from cocov_jobs.db.session import asyncpg_dsn, create_engine

# table: "column type nullable(N/Y) [default]; …" — id, created_at, updated_at are implied.
EXPECTED = {
    "repositories": "name citext N; description text Y; default_branch citext N; token text N;"
    " github_id integer N; issue_ignore_rules_count integer N 0; cache_size bigint N 0;"
    " commits_size bigint N 0",
    "branches": "repository_id bigint N; name citext N; issues integer Y; coverage integer Y;"
    " head_id bigint Y",
    "commits": "repository_id bigint N; sha citext N; author_name varchar N;"
    " author_email varchar N; message text N; user_id bigint Y; issues_count integer Y;"
    " coverage_percent integer Y; clone_status integer N; minimum_coverage integer Y;"
    " clone_size bigint Y",
    "check_sets": "commit_id bigint N; status integer N; started_at timestamp Y;"
    " finished_at timestamp Y; job_id varchar Y; canceling boolean N false;"
    " error_kind integer N 0; error_extra varchar Y",
    "checks": "check_set_id bigint N; plugin_name citext N; status integer N;"
    " started_at timestamp Y; finished_at timestamp Y; error_output text Y",
    "issues": "commit_id bigint N; kind integer N; file varchar N; uid citext N;"
    " line_start integer N; line_end integer N; message varchar N; check_source varchar N;"
    " ignored_at timestamp Y; ignore_source integer Y; ignore_user_id bigint Y;"
    " ignore_rule_id bigint Y; ignore_user_reason varchar Y",
    "issue_ignore_rules": "repository_id bigint N; user_id bigint N; reason varchar Y;"
    " check_source varchar N; file varchar N; kind integer N; line_end integer N;"
    " line_start integer N; message varchar N; uid varchar N",
    "coverage_infos": "commit_id bigint N; percent_covered double Y; lines_total integer Y;"
    " lines_covered integer Y; status integer N",
    "coverage_files": "coverage_info_id bigint N; file varchar N; percent_covered integer N;"
    " raw_data bytea N; lines_missed integer N; lines_covered integer N; lines_total integer N",
    "coverage_histories": "repository_id bigint N; branch_id bigint N; percentage double N",
    "issue_histories": "repository_id bigint N; branch_id bigint N; quantity integer N",
    "cache_artifacts": "repository_id bigint N; name citext N; name_hash varchar N;"
    " size bigint N; last_used_at timestamp Y; engine citext N; mime varchar N",
    "cache_tools": "name citext N; name_hash varchar N; size integer N;"
    " last_used_at timestamp Y; engine citext N; mime varchar N",
    "repository_members": "repository_id bigint N; github_member_id integer N; level integer N",
    "users": "login citext N; github_id integer N; admin boolean N false; github_token text N;"
    " avatar_url text Y",
    "user_emails": "user_id bigint N; email citext N",
    "secrets": "scope integer N; name citext N; repository_id bigint Y; secure_data bytea N;"
    " last_used_at timestamp Y; owner_id bigint N",
}

UNIQUE = {
    "repositories": {("name",), ("token",), ("github_id",)},
    "branches": {("repository_id", "name")},
    "commits": {("sha", "repository_id")},
    "check_sets": {("commit_id",), ("job_id",)},
    "checks": {("plugin_name", "check_set_id")},
    "issues": {("uid", "commit_id")},
    "issue_ignore_rules": {("uid", "repository_id")},
    "coverage_infos": {("commit_id",)},
    "cache_artifacts": {
        ("repository_id", "name", "engine"),
        ("repository_id", "name_hash", "engine"),
    },
    "cache_tools": {("name", "engine"), ("name_hash", "engine")},
    "repository_members": {("repository_id", "github_member_id")},
    "users": {("login",), ("github_id",)},
    "user_emails": {("email",)},
    "secrets": {("scope", "name", "repository_id")},
}

TYPES = {
    "character varying": "varchar",
    "timestamp without time zone": "timestamp",
    "double precision": "double",
}


def expected_columns(spec: str) -> dict[str, tuple[str, bool, str | None]]:
    columns = {
        "id": ("bigint", False, "serial"),
        "created_at": ("timestamp", False, None),
        "updated_at": ("timestamp", False, None),
    }
    for item in spec.split(";"):
        name, type_, nullable, *default = item.split()
        columns[name] = (type_, nullable == "Y", default[0] if default else None)
    return columns


async def actual_columns(
    conn: asyncpg.Connection, table: str
) -> dict[str, tuple[str, bool, str | None]]:
    rows = await conn.fetch(
        "SELECT column_name, data_type, udt_name, is_nullable, column_default"
        " FROM information_schema.columns WHERE table_name = $1",
        table,
    )
    result = {}
    for r in rows:
        type_ = r["udt_name"] if r["data_type"] == "USER-DEFINED" else r["data_type"]
        default = r["column_default"]
        if default is not None:
            default = (
                "serial" if default.startswith("nextval(") else default.split("::")[0].strip("'")
            )
        result[r["column_name"]] = (TYPES.get(type_, type_), r["is_nullable"] == "YES", default)
    return result


async def unique_indexes(conn: asyncpg.Connection, table: str) -> set[tuple[str, ...]]:
    rows = await conn.fetch(
        """
        SELECT array_agg(a.attname ORDER BY k.ord) AS cols
        FROM pg_index i
        JOIN pg_class t ON t.oid = i.indrelid
        CROSS JOIN LATERAL unnest(i.indkey) WITH ORDINALITY AS k(attnum, ord)
        JOIN pg_attribute a ON a.attrelid = t.oid AND a.attnum = k.attnum
        WHERE t.relname = $1 AND i.indisunique AND NOT i.indisprimary
        GROUP BY i.indexrelid
        """,
        table,
    )
    return {tuple(r["cols"]) for r in rows}


@pytest.fixture
async def empty_database(database_url: str) -> str:
    """A database with nothing in it (the per-test database, emptied)."""
    conn = await asyncpg.connect(asyncpg_dsn(database_url))
    try:
        await conn.execute("DROP SCHEMA public CASCADE; CREATE SCHEMA public")
    finally:
        await conn.close()
    return database_url


async def upgrade_twice(url: str) -> None:
    engine = create_engine(url)
    try:
        await upgrade(engine, url)
        await upgrade(engine, url)
    finally:
        await engine.dispose()


async def test_upgrade_twice_on_empty_database_gives_cocov_schema(empty_database: str) -> None:
    await upgrade_twice(empty_database)
    conn = await asyncpg.connect(asyncpg_dsn(empty_database))
    try:
        extensions = {r["extname"] for r in await conn.fetch("SELECT extname FROM pg_extension")}
        assert {"citext", "pg_trgm", "plpgsql"} <= extensions
        for table, spec in EXPECTED.items():
            assert await actual_columns(conn, table) == expected_columns(spec), table
        for table, expected in UNIQUE.items():
            assert await unique_indexes(conn, table) == expected, table
        fks = await conn.fetch(
            "SELECT confdeltype FROM pg_constraint WHERE contype = 'f'"
            " AND conrelid::regclass::text NOT LIKE 'cocov_jobs%'"
        )
        assert fks and {r["confdeltype"] for r in fks} == {b"a"}  # NO ACTION everywhere
        for table in (
            "pgqueuer",
            "pgqueuer_log",
            "cocov_jobs_workers",
            "cocov_jobs_alembic_version",
        ):
            assert await conn.fetchval("SELECT to_regclass($1) IS NOT NULL", table), table
    finally:
        await conn.close()


async def test_upgrade_on_cocov_database_adds_only_our_tables(empty_database: str) -> None:
    conn = await asyncpg.connect(asyncpg_dsn(empty_database))
    try:
        await conn.execute("CREATE TABLE schema_migrations (version varchar PRIMARY KEY)")
        await conn.execute("CREATE TABLE repositories (id bigserial PRIMARY KEY, name text)")
        await upgrade_twice(empty_database)
        tables = {
            r["tablename"]
            for r in await conn.fetch("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
        }
        ours = {t for t in tables if t.startswith(("cocov_jobs_", "pgqueuer"))}
        assert tables - ours == {"schema_migrations", "repositories"}
        assert "cocov_jobs_workers" in ours and "pgqueuer" in ours
        columns = await conn.fetch(
            "SELECT column_name FROM information_schema.columns WHERE table_name = 'repositories'"
        )
        assert {r["column_name"] for r in columns} == {"id", "name"}
    finally:
        await conn.close()
