"""Benchmark: each of the ten jobs through the real engine path, and one of them beside Sidekiq.

Every measured run goes the way production goes: the jobs are enqueued with the product's
enqueue (:func:`cocov_jobs.engine.queue.insert_jobs`, what ``queue.enqueue`` and the Sidekiq
intake call: arguments validated, de-duplication keys set), 1,000 per transaction, and drained
by a real ``cocov-jobs worker --burst`` process started as a subprocess (advisory locks,
de-duplication, sessions, logging at INFO into a file, metrics: all of it). GitHub is the HTTP
fake (:class:`cocov_jobs.testing.FakeGitHub`, git over smart HTTP included), storage is local,
Redis is a private ``redis-server``. One database is created and migrated for the run; every
job starts with its tables emptied and a GitHub fake of its own, so no job's data weighs on
another's.

The ten jobs (sizes: ``--size NAME=VALUE``, see :class:`Sizes`; ``--quick`` for a smoke run):

* ``compute_repository_commits_size`` — 10,000 repositories of 3 commits each;
* ``destroy_repository`` — 1,000 repositories with commits, a branch, issues, checks,
  coverage, members and cache artifacts (follow-up: ``remove_repository_leftovers``);
* ``initialize_repository`` — 100 repositories on the fake with one commit whose manifest has
  a check (follow-up: ``process_commit``, which clones it over git and queues its check);
* ``process_commit`` — 100 commits of one repository: clone over git, check set, ``pending``
  status, descriptor pushed to Redis, author linked;
* ``process_coverage`` — the 49-file fixture (``tests/data/coverage``) uploaded for 1,000
  commits of one repository, all already in storage (follow-up: ``post_coverage_status``). The
  commits share one tree, so one real clone, copied and archived again per commit with the
  product's archive code, is what cloning each would store;
* ``request_cache_eviction`` — 1,000 repositories sharing 10,000 cache artifacts, each over its
  quota by half;
* ``update_commits_author`` — 500 users whose emails authored 100,000 commits (no index on
  ``lower(author_email)`` in Cocov's schema: each job scans the table);
* ``update_organization_repos`` — 20 refreshes of a 1,000-repository organization, one at a
  time (concurrency 1: its lock lets no two run; enqueued without de-duplication). The newest
  repository is renamed at every poll, so each refresh lists all pages instead of being
  answered 304 (unchanged);
* ``update_repo_permissions`` — 200 repositories of 100 collaborators, a tenth to insert, a
  tenth to update, a tenth to delete;
* ``update_user_permissions`` — 200 users who each see 100 repositories (first sync).

What is measured, the same way for every engine: the driver polls the queue every
:data:`POLL_INTERVAL` seconds — ours: the job's rows left in ``pgqueuer``; Sidekiq: the jobs
its processes report finished (``bench:finished`` in its Redis) — and stamps the first poll
where at least 1 % of the jobs are finished and the poll where all are (ours: the queue empty,
follow-up jobs included). **jobs/s** = jobs finished between the two / seconds between them
(start-up excluded); **CPU per job** = user + system CPU of the worker's process tree (children
reaped by then, such as git, included; the fake's git is not) between the same two polls.

SQL per job is counted apart, by two more runs whose worker connects through
:class:`cocov_jobs.testing.sqlcount.CountingProxy`, a PostgreSQL wire-protocol relay that
counts ``Execute`` and simple ``Query`` messages (statements), the client's waits for the
server (round trips), ``Parse`` messages (prepares) and transactions, per ``application_name``:
the job sessions (``cocov-jobs``) apart from the engine's own pool (``cocov-jobs-worker``:
pick, advisory locks, finish, heartbeats, the burst watcher). The runs have ``counted_jobs``
jobs and about a quarter of that; each is counted from the worker's start to its last
job, and their difference divided by the difference in jobs is the cost of one more job: what
a worker sends once (its start-up checks, each new connection's set-up) cancels out. The
relay is never in a timed run.

``compute_repository_commits_size`` is also run beside Sidekiq (``bench/sidekiq/jobs.rb``:
Cocov's job — find, sum, save, in one transaction — on the raw ``pg`` gem) on the same
database and data, reset before each run, at worker concurrency 10, 20 and 40 and with 2
processes each (``cocov-jobs worker --processes 2`` against two ``sidekiq`` processes).

Figures go to stdout and ``bench/results/jobs.json`` with the machine and its load. Exit status
1 when a run fails (a job fails or is lost, a check of the data fails, a process dies).

Usage: ``python bench/jobs.py [--quick] [--only JOB,…] [--no-sidekiq] [--size NAME=VALUE …]``
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import itertools
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NamedTuple

import asyncpg
import redis.asyncio as aioredis
from engine import (
    RUN_TIMEOUT,
    BenchError,
    _concurrencies,
    _fetchval,
    ensure_sidekiq_packages,
    machine,
    private_redis,
    run_on_server,
    sidekiq_push,
    write_results,
)
from machine import tree_cpu

from cocov_jobs import contracts
from cocov_jobs import jobs as product_jobs
from cocov_jobs.config import Settings
from cocov_jobs.db.models import CheckSetStatus, CloneStatus, CoverageStatus
from cocov_jobs.db.session import asyncpg_dsn
from cocov_jobs.engine.queue import NewJob, insert_jobs
from cocov_jobs.github.levels import level_from_github
from cocov_jobs.gitstore import LocalStorage
from cocov_jobs.gitstore.artifacts import build_artifacts
from cocov_jobs.gitstore.clone import base_env
from cocov_jobs.gitstore.layout import archive_name, shasum_name
from cocov_jobs.services import Services, open_services
from cocov_jobs.testing import FakeGitHub
from cocov_jobs.testing.databases import scratch_database
from cocov_jobs.testing.github_fake import ROLE_PERMISSIONS
from cocov_jobs.testing.processes import CLI, cli_env, settings_env
from cocov_jobs.testing.sqlcount import CountingProxy

ROOT = Path(__file__).resolve().parent.parent
RESULTS_PATH = ROOT / "bench" / "results" / "jobs.json"
SIDEKIQ_SCRIPT = ROOT / "bench" / "sidekiq" / "jobs.rb"
COVERAGE_FIXTURE = ROOT / "tests" / "data" / "coverage" / "coverage_data.json"
#: Seconds between two looks at the progress of a run.
POLL_INTERVAL = 0.02
#: Share of the jobs finished when the measured window opens.
WINDOW_START = 0.01
#: Jobs per enqueue transaction (ours) and per ``push_bulk`` (Sidekiq).
ENQUEUE_BATCH = 1000
#: A rate may drop this much from one concurrency to the next before it counts as falling
#: (two runs on a shared machine differ by more than that).
FALL_TOLERANCE = 0.05
#: The job compared with Sidekiq.
COMPARED_JOB = "compute_repository_commits_size"
ORG = "acme"
CRYPTO_KEY = "0123456789abcdef0123456789abcdef"
#: Bytes of each cache artifact (``request_cache_eviction``).
ARTIFACT_SIZE = 1000
#: GitHub ids of collaborators start here (``update_repo_permissions``).
FIRST_MEMBER = 1_000_000
#: What the pipeline jobs find in a repository: a manifest with one check, and a coverage
#: section with excluded paths.
PIPELINE_FILES = {
    ".cocov.yaml": 'version: "0.1.alpha"\nchecks:\n  - plugin: cocov/rubocop:v0.1\n',
    "app/models/user.rb": "class User\nend\n",
}
COVERAGE_FILES = {
    ".cocov.yaml": (
        'version: "0.1.alpha"\ncoverage:\n  min_percent: 80\n'
        'exclude_paths:\n  - "spec/**/*"\n  - "vendor/**/*"\n'
    ),
    "app/models/user.rb": "class User\nend\n",
}
#: Roles given in turn to a user on the repositories it sees (``update_user_permissions``).
ROLES = ("read", "write", "admin")
#: ``application_name`` → how the tables name it.
ROLE_NAMES = {"cocov-jobs": "job", "cocov-jobs-worker": "engine", "sidekiq": "sidekiq"}


@dataclass(frozen=True)
class Sizes:
    """Jobs per measured run (one field per job) and what they work on."""

    compute_repository_commits_size: int = 10_000
    destroy_repository: int = 1_000
    initialize_repository: int = 100
    process_commit: int = 100
    process_coverage: int = 1_000
    request_cache_eviction: int = 1_000
    update_commits_author: int = 500
    update_organization_repos: int = 20
    update_repo_permissions: int = 200
    update_user_permissions: int = 200
    #: Commits of each repository (``compute_repository_commits_size``).
    commits_per_repository: int = 3
    #: Cache artifacts over all repositories (``request_cache_eviction``).
    eviction_artifacts: int = 10_000
    #: Commits over all users (``update_commits_author``).
    author_commits: int = 100_000
    #: Repositories of the organization (``update_organization_repos``).
    org_repositories: int = 1_000
    #: Collaborators of each repository (``update_repo_permissions``).
    collaborators: int = 100
    #: Repositories each user sees (``update_user_permissions``).
    user_repositories: int = 100
    #: Jobs of the larger SQL-counting run (at most the measured run's).
    counted_jobs: int = 60
    #: Jobs of each run beside Sidekiq.
    compared_jobs: int = 10_000

    def jobs(self, job: str) -> int:
        return int(getattr(self, job))

    @property
    def eviction_quota(self) -> int:
        """``COCOV_REPOSITORY_CACHE_MAX_SIZE``: half of what each repository holds."""
        per_repository = self.eviction_artifacts // self.request_cache_eviction
        return max(1, per_repository * ARTIFACT_SIZE // 2)


QUICK = Sizes(
    compute_repository_commits_size=500,
    destroy_repository=100,
    initialize_repository=20,
    process_commit=20,
    process_coverage=100,
    request_cache_eviction=100,
    update_commits_author=50,
    update_organization_repos=5,
    update_repo_permissions=20,
    update_user_permissions=20,
    eviction_artifacts=1_000,
    author_commits=10_000,
    org_repositories=200,
    counted_jobs=20,
    compared_jobs=1_000,
)


# One job's world: database, GitHub fake, storage -----------------------------------------------


@dataclass
class Bench:
    """What every stage shares: the PostgreSQL server and the bench database on it, the
    private Redis, a work directory."""

    admin_url: str
    database_url: str
    redis_url: str
    work_dir: Path
    sizes: Sizes
    stages: Iterator[int] = field(default_factory=itertools.count)


@dataclass
class Stage:
    """An emptied database and a new GitHub fake for one job's runs, and the driver's handles
    on them."""

    bench: Bench
    pool: asyncpg.Pool
    services: Services
    fake: FakeGitHub
    storage: Path
    log_path: Path
    names: Iterator[int] = field(default_factory=itertools.count)
    github_ids: Iterator[int] = field(default_factory=lambda: itertools.count(50_000_000))

    @property
    def database_url(self) -> str:
        return self.bench.database_url

    @property
    def sizes(self) -> Sizes:
        return self.bench.sizes

    @property
    def redis(self) -> aioredis.Redis:
        return self.services.redis

    def tag(self) -> str:
        """A prefix no other name of this stage has."""
        return f"b{next(self.names)}"

    def worker_env(self, database_url: str, processes: int) -> dict[str, str]:
        """The environment of ``cocov-jobs worker``: this stage's stores, fake and storage."""
        return cli_env(
            **settings_env(self.services.settings),
            COCOV_DATABASE_URL=database_url,
            COCOV_REDIS_URL=self.bench.redis_url,
            COCOV_REDIS_CACHE_URL=self.bench.redis_url,
            COCOV_REPOSITORY_CACHE_MAX_SIZE=str(self.sizes.eviction_quota),
            COCOV_WORKER_PROCESSES=str(processes),
        )


@contextlib.asynccontextmanager
async def stage(bench: Bench) -> AsyncIterator[Stage]:
    number = next(bench.stages)
    url = bench.database_url
    async with contextlib.AsyncExitStack() as stack:
        pool = await asyncpg.create_pool(asyncpg_dsn(url), min_size=1, max_size=4)
        stack.push_async_callback(pool.close)
        tables = await pool.fetchval(
            "SELECT string_agg(quote_ident(tablename), ', ') FROM pg_tables"
            " WHERE schemaname = 'public' AND tablename <> 'alembic_version'"
        )
        await pool.execute(f"TRUNCATE {tables} RESTART IDENTITY CASCADE")
        fake = stack.enter_context(FakeGitHub(org=ORG))
        storage = bench.work_dir / f"storage-{number}"
        settings = Settings(
            **fake.settings_fields(),
            git_service_local_storage_path=storage,
            cryptographic_key=CRYPTO_KEY,
            repository_cache_max_size=bench.sizes.eviction_quota,
        )
        services = await stack.enter_async_context(
            open_services(
                settings,
                registry=product_jobs.registry(),
                database_url=url,
                redis_url=bench.redis_url,
                redis_cache_url=bench.redis_url,
            )
        )
        await services.redis.flushdb()
        log_path = bench.work_dir / f"stage-{number}.log"
        yield Stage(bench, pool, services, fake, storage, log_path)


# Seeding -------------------------------------------------------------------------------------


async def insert_repositories(st: Stage, names: list[str], github_ids: list[int]) -> list[int]:
    """Repositories ``names`` (default branch ``main``); their ids, in the same order."""
    rows = await st.pool.fetch(
        "INSERT INTO repositories (name, default_branch, token, github_id, created_at, updated_at)"
        " SELECT n, 'main', 'crt_' || n, g, now(), now()"
        " FROM unnest($1::text[], $2::int[]) WITH ORDINALITY AS r(n, g, o) ORDER BY o"
        " RETURNING id",
        names,
        github_ids,
    )
    return sorted(int(row["id"]) for row in rows)


async def local_repositories(st: Stage, count: int) -> list[int]:
    """``count`` repositories GitHub does not need to know."""
    tag = st.tag()
    names = [f"{tag}-{i}" for i in range(count)]
    return await insert_repositories(st, names, [next(st.github_ids) for _ in names])


async def insert_commits(
    st: Stage, repository_id: int, shas: list[str], status: CloneStatus, sizes: list[int]
) -> list[int]:
    rows = await st.pool.fetch(
        "INSERT INTO commits (repository_id, sha, author_name, author_email, message,"
        " clone_status, clone_size, created_at, updated_at)"
        " SELECT $1, s, 'Dev', 'dev@example.com', 'bench', $3, z, now(), now()"
        " FROM unnest($2::text[], $4::bigint[]) WITH ORDINALITY AS c(s, z, o) ORDER BY o"
        " RETURNING id",
        repository_id,
        shas,
        int(status),
        sizes,
    )
    return sorted(int(row["id"]) for row in rows)


async def expect(st: Stage, what: str, sql: str, *args: object, want: object) -> None:
    """Fail the run unless ``sql`` returns ``want``: the jobs did their work, exactly once."""
    row = await st.pool.fetchrow(sql, *args)
    got = tuple(row) if len(row) > 1 else row[0]
    if got != want:
        raise BenchError(f"{what}: got {got}, expected {want}")


# The ten jobs ---------------------------------------------------------------------------------


@dataclass
class Prepared:
    """The jobs of one run and how to check they did their work."""

    args: list[dict[str, Any]]
    check: Callable[[], Awaitable[None]]
    #: False: enqueue every copy even while one with the same de-duplication key waits.
    dedupe: bool = True
    #: Called at every poll of the run.
    during: Callable[[], None] | None = None


async def compute_repository_commits_size(st: Stage, n: int) -> Prepared:
    ids = await local_repositories(st, n)
    await st.pool.execute(
        "INSERT INTO commits (repository_id, sha, author_name, author_email, message,"
        " clone_status, clone_size, created_at, updated_at)"
        " SELECT r, md5(r || ':' || k) || lpad(to_hex(k), 8, '0'), 'Dev', 'dev@example.com',"
        " 'bench', 2, 1000 * k + r % 997, now(), now()"
        " FROM unnest($1::bigint[]) AS r, generate_series(1, $2) AS k",
        ids,
        st.sizes.commits_per_repository,
    )

    async def check() -> None:
        await expect(
            st,
            "repositories whose commits_size is not the sum of their clone sizes",
            "SELECT count(*) FROM repositories r WHERE r.id = ANY($1) AND r.commits_size"
            " <> (SELECT coalesce(sum(clone_size), 0) FROM commits c WHERE c.repository_id = r.id)",
            ids,
            want=0,
        )

    return Prepared([{"repository_id": i} for i in ids], check)


#: What each destroyed repository holds, inserted for every id in ``$1``.
_DESTROY_SEED = (
    "INSERT INTO commits (repository_id, sha, author_name, author_email, message, clone_status,"
    " clone_size, created_at, updated_at) SELECT r, md5(r || '/' || k) || '00000000', 'Dev',"
    " 'dev@example.com', 'bench', 2, 1000, now(), now()"
    " FROM unnest($1::bigint[]) AS r, generate_series(1, 5) AS k",
    "INSERT INTO branches (repository_id, name, head_id, created_at, updated_at)"
    " SELECT repository_id, 'main', max(id), now(), now() FROM commits"
    " WHERE repository_id = ANY($1) GROUP BY repository_id",
    "INSERT INTO issues (commit_id, kind, file, uid, line_start, line_end, message, check_source,"
    " created_at, updated_at) SELECT head_id, 0, 'app.rb', md5(head_id || '/' || k), k, k, 'x',"
    " 'cocov/rubocop', now(), now() FROM branches, generate_series(1, 5) AS k"
    " WHERE repository_id = ANY($1)",
    "INSERT INTO check_sets (commit_id, status, created_at, updated_at)"
    " SELECT head_id, 3, now(), now() FROM branches WHERE repository_id = ANY($1)",
    "INSERT INTO checks (check_set_id, plugin_name, status, created_at, updated_at)"
    " SELECT s.id, 'plugin-' || k, 3, now(), now() FROM check_sets s"
    " JOIN branches b ON b.head_id = s.commit_id, generate_series(1, 2) AS k"
    " WHERE b.repository_id = ANY($1)",
    "INSERT INTO coverage_infos (commit_id, status, percent_covered, created_at, updated_at)"
    " SELECT head_id, 3, 80, now(), now() FROM branches WHERE repository_id = ANY($1)",
    "INSERT INTO coverage_files (coverage_info_id, file, percent_covered, raw_data,"
    " lines_missed, lines_covered, lines_total, created_at, updated_at)"
    " SELECT i.id, 'f' || k || '.rb', 80, '\\x00', 2, 8, 10, now(), now() FROM coverage_infos i"
    " JOIN branches b ON b.head_id = i.commit_id, generate_series(1, 10) AS k"
    " WHERE b.repository_id = ANY($1)",
    "INSERT INTO repository_members (repository_id, github_member_id, level, created_at,"
    " updated_at) SELECT r, k, 0, now(), now() FROM unnest($1::bigint[]) AS r,"
    " generate_series(1, 2) AS k",
    "INSERT INTO cache_artifacts (repository_id, name, name_hash, size, engine, mime,"
    " created_at, updated_at) SELECT r, 'gems-' || k, md5(r || '-' || k), 1000, 'gems', 'x',"
    " now(), now() FROM unnest($1::bigint[]) AS r, generate_series(1, 2) AS k",
)


async def destroy_repository(st: Stage, n: int) -> Prepared:
    ids = await local_repositories(st, n)
    for sql in _DESTROY_SEED:
        await st.pool.execute(sql, ids)

    async def check() -> None:
        await expect(
            st,
            "repositories and commits left after destroy_repository",
            "SELECT (SELECT count(*) FROM repositories WHERE id = ANY($1)),"
            " (SELECT count(*) FROM commits WHERE repository_id = ANY($1))",
            ids,
            want=(0, 0),
        )

    return Prepared([{"repository_id": i} for i in ids], check)


async def check_pipeline(st: Stage, what: str, commit_ids_sql: str, ids: list[int]) -> None:
    """Every commit ``commit_ids_sql`` selects is cloned and its check set queued."""
    await expect(
        st,
        what,
        f"SELECT count(*) FROM commits c JOIN check_sets s ON s.commit_id = c.id"
        f" WHERE c.id IN ({commit_ids_sql}) AND c.clone_status = $2 AND s.status = $3",
        ids,
        int(CloneStatus.completed),
        int(CheckSetStatus.queued),
        want=len(ids),
    )


async def initialize_repository(st: Stage, n: int) -> Prepared:
    tag = st.tag()
    remotes = [st.fake.add_repo(f"{tag}-{i}", files=PIPELINE_FILES) for i in range(n)]
    ids = await insert_repositories(st, [r.name for r in remotes], [r.id for r in remotes])

    async def check() -> None:
        heads = "SELECT b.head_id FROM branches b WHERE b.repository_id = ANY($1)"
        await check_pipeline(st, "initialized repositories with a processed head", heads, ids)

    return Prepared([{"repository_id": i} for i in ids], check)


async def process_commit(st: Stage, n: int) -> Prepared:
    name = f"{st.tag()}-commits"
    remote = st.fake.add_repo(name, files=PIPELINE_FILES)
    shas = [st.fake.commit(name, {f"src/change{i}.rb": f"X = {i}\n"}) for i in range(n)]
    (repository_id,) = await insert_repositories(st, [name], [remote.id])
    ids = await insert_commits(st, repository_id, shas, CloneStatus.queued, [0] * n)

    async def check() -> None:
        await check_pipeline(st, "processed commits", "SELECT unnest($1::bigint[])", ids)

    return Prepared([{"commit_id": i} for i in ids], check)


async def store_identical_clones(st: Stage, name: str, shas: list[str]) -> list[int]:
    """Clone ``shas[0]`` into storage for real; store the others (same tree) from that tree,
    archived by the product's own archive code. Their clone sizes."""
    storage = LocalStorage(st.storage)
    first = await storage.clone_commit(
        repo_name=name,
        sha=shas[0],
        token=st.fake.issue_installation_token(),
        org=st.fake.org,
        github_url=st.fake.git_url,
    )
    repo_path = storage.repo_path(name)
    source = repo_path / shas[0]
    mtime = int(source.stat().st_mtime)

    def link(sha: str) -> Path:
        work = st.bench.work_dir / f"build-{sha}"
        shutil.copytree(source, work / sha, copy_function=os.link)
        return work

    async def build(sha: str, work: Path) -> int:
        try:
            build = await build_artifacts(work, sha, mtime=mtime, env=base_env(work))
            build.tree.rename(repo_path / sha)
            build.archive.rename(repo_path / archive_name(sha))
            build.shasum.rename(repo_path / shasum_name(sha))
            return build.size
        finally:
            await asyncio.to_thread(shutil.rmtree, work, True)

    sizes = [first]
    for offset in range(1, len(shas), 8):
        batch = shas[offset : offset + 8]
        # Every tree linked before any is archived: a new link changes the shared file's ctime,
        # which tar, reading that file for another tree, reports as "file changed as we read it".
        works = [await asyncio.to_thread(link, sha) for sha in batch]
        sizes += await asyncio.gather(
            *(build(sha, work) for sha, work in zip(batch, works, strict=True))
        )
    return sizes


async def process_coverage(st: Stage, n: int) -> Prepared:
    name = f"{st.tag()}-coverage"
    remote = st.fake.add_repo(name, files=COVERAGE_FILES)
    shas = [st.fake.head(name)]
    shas += [st.fake.commit(name, {}, message=f"CI run {i}") for i in range(1, n)]
    clone_sizes = await store_identical_clones(st, name, shas)
    (repository_id,) = await insert_repositories(st, [name], [remote.id])
    commit_ids = await insert_commits(st, repository_id, shas, CloneStatus.completed, clone_sizes)
    upload = json.dumps(json.loads(COVERAGE_FIXTURE.read_text())["data"])
    rows = await st.pool.fetch(
        "INSERT INTO cocov_jobs_coverage_uploads (repository_id, sha, data)"
        " SELECT $1, s, $3::jsonb FROM unnest($2::text[]) WITH ORDINALITY AS u(s, o) ORDER BY o"
        " RETURNING id",
        repository_id,
        shas,
        upload,
    )
    upload_ids = sorted(int(row["id"]) for row in rows)

    async def check() -> None:
        await expect(
            st,
            "commits with completed coverage",
            "SELECT count(*) FROM coverage_infos WHERE commit_id = ANY($1) AND status = $2",
            commit_ids,
            int(CoverageStatus.completed),
            want=n,
        )

    args = [
        {"repository_id": repository_id, "sha": sha, "upload_id": upload_id}
        for sha, upload_id in zip(shas, upload_ids, strict=True)
    ]
    return Prepared(args, check)


async def request_cache_eviction(st: Stage, n: int) -> Prepared:
    ids = await local_repositories(st, n)
    per_repository = st.sizes.eviction_artifacts // st.sizes.request_cache_eviction
    await st.pool.execute(
        "INSERT INTO cache_artifacts (repository_id, name, name_hash, size, last_used_at, engine,"
        " mime, created_at, updated_at) SELECT r, 'gems-' || k, md5(r || '-' || k), $3,"
        " CASE WHEN k % 10 = 0 THEN NULL ELSE now() - k * interval '1 minute' END, 'gems',"
        " 'application/x-tar', now(), now() FROM unnest($1::bigint[]) AS r,"
        " generate_series(1, $2) AS k",
        ids,
        per_repository,
        ARTIFACT_SIZE,
    )
    await st.pool.execute(
        "UPDATE repositories SET cache_size = $2 WHERE id = ANY($1)",
        ids,
        per_repository * ARTIFACT_SIZE,
    )
    queued = int(await st.redis.llen(contracts.HOUSEKEEPING_QUEUE))

    async def check() -> None:
        pushed = int(await st.redis.llen(contracts.HOUSEKEEPING_QUEUE)) - queued
        if pushed != n:
            raise BenchError(f"{pushed} eviction requests pushed, expected {n}")

    return Prepared([{"repository_id": i} for i in ids], check)


async def update_commits_author(st: Stage, n: int) -> Prepared:
    tag = st.tag()
    per_user = st.sizes.author_commits // st.sizes.update_commits_author
    users = await st.pool.fetch(
        "INSERT INTO users (login, github_id, github_token, admin, created_at, updated_at)"
        " SELECT $1 || '-' || g, g, 'gho_' || g, false, now(), now()"
        " FROM unnest($2::int[]) AS g RETURNING id",
        tag,
        [next(st.github_ids) for _ in range(n)],
    )
    user_ids = sorted(int(row["id"]) for row in users)
    await st.pool.execute(
        "INSERT INTO user_emails (user_id, email, created_at, updated_at)"
        " SELECT u, $2 || '-' || u || '@example.com', now(), now() FROM unnest($1::bigint[]) AS u",
        user_ids,
        tag,
    )
    repositories = await local_repositories(st, 10)
    # Half the commits spell the email in upper case: the match is case-insensitive.
    await st.pool.execute(
        "INSERT INTO commits (repository_id, sha, author_name, author_email, message,"
        " clone_status, created_at, updated_at)"
        " SELECT ($2::bigint[])[1 + (u + k) % 10], md5(u || ':' || k) || '00000000', 'Dev',"
        " CASE WHEN k % 2 = 0 THEN upper(e.email) ELSE e.email END, 'bench', 2, now(), now()"
        " FROM unnest($1::bigint[]) AS u JOIN user_emails e ON e.user_id = u,"
        " generate_series(1, $3) AS k",
        user_ids,
        repositories,
        per_user,
    )

    async def check() -> None:
        await expect(
            st,
            "commits linked to their author",
            "SELECT count(*) FROM commits WHERE user_id = ANY($1)",
            user_ids,
            want=n * per_user,
        )

    return Prepared([{"user_id": i} for i in user_ids], check)


async def update_organization_repos(st: Stage, n: int) -> Prepared:
    for repo in st.fake.repos():  # an earlier run's organization
        st.fake.delete_repo(repo.name)
    tag, renames = st.tag(), itertools.count()
    newest = [st.fake.add_repos(st.sizes.org_repositories, prefix=tag)[-1].name]

    def rename_newest() -> None:
        """Change the listing's first page: the next refresh gets it all, not a 304."""
        renamed = f"{tag}-renamed-{next(renames)}"
        st.fake.rename_repo(newest[0], renamed)
        newest[0] = renamed

    async def check() -> None:
        status = await st.redis.get(contracts.ORG_REPOS_STATUS)
        items = json.loads(await st.redis.get(contracts.ORG_REPOS_ITEMS) or "[]")
        if status != b"present" or len(items) != st.sizes.org_repositories:
            raise BenchError(f"organization listing: status {status!r}, {len(items)} items")

    return Prepared([{} for _ in range(n)], check, dedupe=False, during=rename_newest)


async def update_repo_permissions(st: Stage, n: int) -> Prepared:
    members, tenth = st.sizes.collaborators, max(1, st.sizes.collaborators // 10)
    remotes = st.fake.add_repos(n, prefix=st.tag())
    for remote in remotes:
        listed = st.fake.add_collaborators(remote.name, members, first_id=FIRST_MEMBER)
        for member in listed[:tenth]:
            st.fake.add_collaborator(remote.name, member, f"user{member}", "admin")
    ids = await insert_repositories(st, [r.name for r in remotes], [r.id for r in remotes])
    # Stored: shifted by a tenth (a tenth to insert, a tenth to delete), the second tenth
    # stored as admins (to update); the rest is already right.
    admin, write = (level_from_github(ROLE_PERMISSIONS[role]) for role in ("admin", "write"))
    await st.pool.execute(
        "INSERT INTO repository_members (repository_id, github_member_id, level, created_at,"
        " updated_at) SELECT r, $2::int + k,"
        " CASE WHEN k < 2 * $3::int THEN $4::int ELSE $5::int END, now(), now()"
        " FROM unnest($1::bigint[]) AS r, generate_series($3, $6::int + $3 - 1) AS k",
        ids,
        FIRST_MEMBER,
        tenth,
        admin,
        write,
        members,
    )

    async def check() -> None:
        await expect(
            st,
            "members, admins, members GitHub does not list",
            "SELECT count(*), count(*) FILTER (WHERE level = $2),"
            " count(*) FILTER (WHERE github_member_id >= $3)"
            " FROM repository_members WHERE repository_id = ANY($1)",
            ids,
            admin,
            FIRST_MEMBER + members,
            want=(n * members, n * tenth, 0),
        )

    return Prepared([{"repository_id": i} for i in ids], check)


async def update_user_permissions(st: Stage, n: int) -> Prepared:
    tag = st.tag()
    remotes = st.fake.add_repos(st.sizes.user_repositories, prefix=tag)
    await insert_repositories(st, [r.name for r in remotes], [r.id for r in remotes])
    logins, github_ids, tokens = [], [], []
    for i in range(n):
        login = f"{tag}-user{i}"
        tokens.append(st.fake.add_user(login))
        github_ids.append(st.fake.user(login).id)
        logins.append(login)
        for j, remote in enumerate(remotes):
            st.fake.grant(login, remote.name, ROLES[(i + j) % len(ROLES)])
    rows = await st.pool.fetch(
        "INSERT INTO users (login, github_id, github_token, admin, created_at, updated_at)"
        " SELECT l, g, t, false, now(), now()"
        " FROM unnest($1::text[], $2::int[], $3::text[]) WITH ORDINALITY AS u(l, g, t, o)"
        " ORDER BY o RETURNING id",
        logins,
        github_ids,
        tokens,
    )

    async def check() -> None:
        await expect(
            st,
            "memberships of the users",
            "SELECT count(*) FROM repository_members WHERE github_member_id = ANY($1)",
            github_ids,
            want=n * len(remotes),
        )

    return Prepared([{"user_id": int(row["id"])} for row in rows], check)


Prepare = Callable[[Stage, int], Awaitable[Prepared]]

#: The ten jobs, in the order they run.
SCENARIOS: dict[str, Prepare] = {
    prepare.__name__: prepare
    for prepare in (
        compute_repository_commits_size,
        update_commits_author,
        process_coverage,
        request_cache_eviction,
        destroy_repository,
        update_repo_permissions,
        update_user_permissions,
        update_organization_repos,
        process_commit,
        initialize_repository,
    )
}
#: Worker concurrency forced for a job (its lock lets only one run at a time).
FIXED_CONCURRENCY = {"update_organization_repos": 1}


# The driver ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Sample:
    """What one poll saw: when, jobs finished, CPU of the workers, SQL counters."""

    at: float
    finished: int
    cpu_seconds: float
    sql: dict[str, dict[str, int]]


@dataclass
class Drain:
    """One measured run: jobs drained by one engine's worker process(es)."""

    engine: str
    job: str
    jobs: int
    concurrency: int
    processes: int
    load_average: float
    enqueue_seconds: float
    window: Window
    #: Jobs that completed, by name (follow-ups included); ours only.
    jobs_run: dict[str, int] = field(default_factory=dict)
    #: Runs that ended re-queued (a retry, or deferred behind a busy lock); ours only.
    requeued: int = 0

    @property
    def start(self) -> Sample:
        return self.window.start

    @property
    def end(self) -> Sample:
        return self.window.end

    @property
    def measured(self) -> int:
        return self.end.finished - self.start.finished

    @property
    def rate(self) -> float:
        return self.measured / (self.end.at - self.start.at)

    @property
    def cpu_ms_per_job(self) -> float:
        return (self.end.cpu_seconds - self.start.cpu_seconds) / self.measured * 1000

    def sql_counts(self) -> dict[str, dict[str, int]]:
        """Per role: each SQL counter's increase over the window."""
        return {
            ROLE_NAMES.get(role, role or "unnamed"): {
                kind: value - self.start.sql.get(role, {}).get(kind, 0)
                for kind, value in counters.items()
            }
            for role, counters in self.end.sql.items()
        }

    def as_dict(self) -> dict[str, Any]:
        return {
            "engine": self.engine,
            "job": self.job,
            "jobs": self.jobs,
            "concurrency": self.concurrency,
            "processes": self.processes,
            "load_average_1m_before": round(self.load_average, 2),
            "enqueue_jobs_per_s": round(self.jobs / self.enqueue_seconds, 1),
            "measured_jobs": self.measured,
            "measured_seconds": round(self.end.at - self.start.at, 4),
            "jobs_per_s": round(self.rate, 1),
            "worker_cpu_ms_per_job": round(self.cpu_ms_per_job, 3),
            "peak_connections": self.window.peak_connections,
            "jobs_run": self.jobs_run,
            "requeued": self.requeued,
        }


#: Connections to the bench database whose ``application_name`` is $1 (``LIKE``).
_CONNECTIONS = (
    "SELECT count(*) FROM pg_stat_activity"
    " WHERE datname = current_database() AND application_name LIKE $1"
)


class Window(NamedTuple):
    """The measured window of a run, and the most connections its workers held."""

    start: Sample
    end: Sample
    peak_connections: int


class Progress(NamedTuple):
    """What a poll of an engine's state says."""

    finished: int
    #: Every job finished (ours: the queue is empty, follow-ups included).
    done: bool
    #: PostgreSQL connections the worker processes hold.
    connections: int


Probe = Callable[[], Awaitable[Progress]]


async def drive(
    argvs: list[list[str]],
    env: dict[str, str],
    probe: Probe,
    jobs: int,
    log_path: Path,
    *,
    burst: bool,
    proxy: CountingProxy | None = None,
    during: Callable[[], None] | None = None,
) -> Window:
    """Start the worker processes and poll ``probe`` until every job is done: the measured
    window and the most connections seen. The window opens at the first poll that sees
    :data:`WINDOW_START` of the jobs finished or, when SQL is counted (``proxy``: a relay of
    this run only), at the start, so that every job's statements are counted. Burst workers
    must then exit 0 on their own; the others (Sidekiq) are killed once the window closed."""
    opening = max(1, math.ceil(jobs * WINDOW_START))
    with log_path.open("ab") as log:
        processes = [
            await asyncio.create_subprocess_exec(
                *argv, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT
            )
            for argv in argvs
        ]
        try:
            try:
                window = await _watch(processes, probe, opening, proxy, during)
            except BenchError as exc:
                raise BenchError(f"{exc}; the log ends with:\n{_tail(log_path)}") from None
            for process in processes:
                if not burst:  # every job is done: nothing to wait for
                    process.kill()
            for process in processes:
                await asyncio.wait_for(process.wait(), RUN_TIMEOUT)
        finally:
            for process in processes:
                if process.returncode is None:
                    process.kill()
                    await process.wait()
    failed = [p.returncode for p in processes if burst and p.returncode != 0]
    if failed:
        raise BenchError(f"a worker exited with {failed[0]}:\n{_tail(log_path)}")
    if window.end.at == window.start.at:
        raise BenchError(f"{jobs} jobs finished within one poll: too few to measure")
    return window


async def _watch(
    processes: list[asyncio.subprocess.Process],
    probe: Probe,
    opening: int,
    proxy: CountingProxy | None,
    during: Callable[[], None] | None,
) -> Window:
    def sample(finished: int) -> Sample:
        cpu = tree_cpu([p.pid for p in processes])
        return Sample(time.monotonic(), finished, cpu, proxy.snapshot() if proxy else {})

    deadline = time.monotonic() + RUN_TIMEOUT
    start = sample(0) if proxy else None
    peak = 0
    while True:
        now = await probe()
        peak = max(peak, now.connections)
        if start is None and now.finished >= opening:
            start = sample(now.finished)
        if now.done and start is not None:
            return Window(start, sample(now.finished), peak)
        if any(p.returncode is not None for p in processes):
            raise BenchError(f"a worker process exited with {now.finished} job(s) finished")
        if time.monotonic() > deadline:
            raise BenchError(f"not drained within {RUN_TIMEOUT:.0f} s ({now.finished} finished)")
        if during is not None:
            during()
        await asyncio.sleep(POLL_INTERVAL)


def _tail(path: Path) -> str:
    return path.read_text(errors="replace")[-3000:]


# Our worker --------------------------------------------------------------------------------------

_QUEUE_STATE = f"""
SELECT count(*) FILTER (WHERE entrypoint = $1), count(*), count(*) FILTER (WHERE status = 'failed'),
       ({_CONNECTIONS.replace("$1", "$2")})
FROM pgqueuer
"""


def queue_probe(st: Stage, job: str, jobs: int) -> Probe:
    """Jobs of ``job`` finished: those no longer in ``pgqueuer``; done: the queue is empty."""

    async def probe() -> Progress:
        left, total, failed, connections = await st.pool.fetchrow(_QUEUE_STATE, job, "cocov-jobs%")
        if failed:
            raise BenchError(f"{failed} job(s) failed")
        return Progress(jobs - int(left), total == 0, connections)

    return probe


async def last_failure(st: Stage) -> str:
    """The newest error in the queue's log: why a run was retried or failed."""
    row = await st.pool.fetchrow(
        "SELECT entrypoint, traceback::text FROM pgqueuer_log"
        " WHERE traceback IS NOT NULL ORDER BY id DESC LIMIT 1"
    )
    if row is None:
        return "none"
    error = json.loads(row[1])
    return f"{row[0]}: {error.get('exception_type')}: {error.get('exception_message')}"


async def enqueue_ours(st: Stage, job: str, prepared: Prepared) -> float:
    """Insert the jobs as production does, ``ENQUEUE_BATCH`` per transaction; seconds taken."""
    definition = st.services.registry.resolve(job)
    new = [
        NewJob(definition, definition.validate(a), dedupe=prepared.dedupe) for a in prepared.args
    ]
    started = time.perf_counter()
    for offset in range(0, len(new), ENQUEUE_BATCH):
        async with st.services.sessions.begin() as session:
            ids = await insert_jobs(session, new[offset : offset + ENQUEUE_BATCH])
        if None in ids:
            raise BenchError(f"{job}: a job was de-duplicated at enqueue")
    return time.perf_counter() - started


async def vacuum(st: Stage) -> None:
    """Empty the queue's log and refresh the statistics: every run starts alike."""
    await st.pool.execute("TRUNCATE pgqueuer_log")
    await st.pool.execute("VACUUM ANALYZE pgqueuer")
    await st.pool.execute("ANALYZE")


async def run_ours(
    st: Stage,
    job: str,
    prepared: Prepared,
    *,
    concurrency: int,
    processes: int = 1,
    proxy: CountingProxy | None = None,
) -> Drain:
    """Enqueue ``prepared`` and drain it with ``cocov-jobs worker --burst``; check the data."""
    await vacuum(st)
    enqueue_seconds = await enqueue_ours(st, job, prepared)
    url = proxy.url(st.database_url) if proxy else st.database_url
    argv = [*CLI, "worker", "--burst", "--concurrency", str(concurrency)]
    argv += ["--processes", str(processes)]
    load = os.getloadavg()[0]
    jobs = len(prepared.args)
    await st.services.engine.dispose()  # the driver's connections are not the worker's
    try:
        window = await drive(
            [argv],
            st.worker_env(url, processes),
            queue_probe(st, job, jobs),
            jobs,
            st.log_path,
            burst=True,
            proxy=proxy,
            during=prepared.during,
        )
    except BenchError as exc:
        raise BenchError(f"{exc}\nthe last failure recorded: {await last_failure(st)}") from None
    await prepared.check()
    ran = await st.pool.fetch(
        "SELECT entrypoint, count(*) FILTER (WHERE status = 'successful'),"
        " count(*) FILTER (WHERE status = 'picked') - count(*) FILTER (WHERE status = 'successful')"
        " FROM pgqueuer_log GROUP BY entrypoint ORDER BY entrypoint"
    )
    return Drain(
        "ours",
        job,
        jobs,
        concurrency,
        processes,
        load,
        enqueue_seconds,
        window,
        {str(row[0]): int(row[1]) for row in ran},
        sum(int(row[2]) for row in ran),
    )


# Sidekiq -----------------------------------------------------------------------------------------


@dataclass
class SidekiqSide:
    """Sidekiq's Redis (db 0 of the private server; ours uses db 1) and its log."""

    redis_url: str
    log_path: Path


async def run_sidekiq(
    st: Stage,
    side: SidekiqSide,
    ids: list[int],
    *,
    concurrency: int,
    processes: int = 1,
    proxy: CountingProxy | None = None,
) -> Drain:
    """Push ``compute_repository_commits_size`` of ``ids`` (consecutive) with ``push_bulk``
    and drain them with ``processes`` × ``sidekiq -c concurrency``."""
    if ids != list(range(ids[0], ids[0] + len(ids))):
        raise BenchError("the compared repositories' ids are not consecutive")
    await vacuum(st)
    client = aioredis.Redis.from_url(side.redis_url)
    try:
        await client.flushdb()
        url = asyncpg_dsn(proxy.url(st.database_url) if proxy else st.database_url)
        env = {
            **os.environ,
            "BENCH_REDIS_URL": side.redis_url,
            "BENCH_DATABASE_URL": url + ("&" if "?" in url else "?") + "application_name=sidekiq",
            "BENCH_BATCH": str(ENQUEUE_BATCH),
        }
        enqueue_seconds = await asyncio.to_thread(
            sidekiq_push, SIDEKIQ_SCRIPT, [str(ids[0]), str(len(ids))], env
        )

        async def probe() -> Progress:
            async with client.pipeline(transaction=False) as pipe:
                pipe.get("bench:finished")
                pipe.zcard("retry")
                finished, retries = await pipe.execute()
            if retries:
                raise BenchError(f"Sidekiq: {retries} job(s) failed")
            connections = await st.pool.fetchval(_CONNECTIONS, "sidekiq")
            return Progress(int(finished or 0), int(finished or 0) >= len(ids), connections)

        argv = ["sidekiq", "-r", str(SIDEKIQ_SCRIPT), "-q", "default", "-c", str(concurrency)]
        load = os.getloadavg()[0]
        window = await drive(
            [argv] * processes, env, probe, len(ids), side.log_path, burst=False, proxy=proxy
        )
        left = await client.llen("queue:default") + await client.zcard("dead")
        if left:
            raise BenchError(f"Sidekiq left {left} job(s) queued or dead")
    finally:
        await client.aclose()
    return Drain(
        "sidekiq", COMPARED_JOB, len(ids), concurrency, processes, load, enqueue_seconds, window
    )


# The runs --------------------------------------------------------------------------------------


SqlPerJob = dict[str, dict[str, float]]


async def count_sql(
    bench: Bench, run: Callable[[int, CountingProxy], Awaitable[Drain]], jobs: int, concurrency: int
) -> tuple[SqlPerJob, int]:
    """SQL per job, by role, and the jobs it was measured over: the difference between two
    runs through a relay each (counted from the start to the last job), of ``jobs`` and of
    about a quarter of them (at least one per worker slot), divided by the difference in jobs.
    What a worker sends once — its start-up checks, each new connection's set-up and type
    introspection — cancels out."""
    if jobs < 2:
        raise BenchError("counting SQL per job takes at least 2 jobs")
    small = max(1, min(jobs - 1, max(concurrency, jobs // 4)))
    counts = []
    for n in (small, jobs):
        async with CountingProxy(bench.admin_url).running() as proxy:
            drain = await run(n, proxy)
        counts.append((drain.measured, drain.sql_counts()))
    (few, before), (many, after) = counts
    per_job = {
        role: {
            kind: (value - before.get(role, {}).get(kind, 0)) / (many - few)
            for kind, value in counters.items()
        }
        for role, counters in after.items()
    }
    return per_job, many - few


@dataclass
class JobResult:
    """One job: its measured run and the SQL per job counted apart."""

    job: str
    timed: Drain
    sql: SqlPerJob
    sql_jobs: int

    def as_dict(self) -> dict[str, Any]:
        return {
            **self.timed.as_dict(),
            "follow_up_jobs_per_job": round(follow_ups(self.timed), 3),
            "sql_per_job": _rounded(self.sql),
            "sql_counted_over_jobs": self.sql_jobs,
        }


def follow_ups(drain: Drain) -> float:
    """Jobs of other names that ran, per job of the run's name (what the job enqueued)."""
    others = sum(count for name, count in drain.jobs_run.items() if name != drain.job)
    return others / drain.jobs


def _rounded(sql: SqlPerJob) -> SqlPerJob:
    return {role: {k: round(v, 3) for k, v in counters.items()} for role, counters in sql.items()}


async def bench_job(bench: Bench, job: str, concurrency: int) -> JobResult:
    """Prepare and drain ``job``'s jobs, then count the SQL of smaller batches."""
    prepare = SCENARIOS[job]
    concurrency = FIXED_CONCURRENCY.get(job, concurrency)
    jobs = bench.sizes.jobs(job)
    async with stage(bench) as st:
        timed = await run_ours(st, job, await prepare(st, jobs), concurrency=concurrency)

        async def counted(n: int, proxy: CountingProxy) -> Drain:
            prepared = await prepare(st, n)
            return await run_ours(st, job, prepared, concurrency=concurrency, proxy=proxy)

        sql, sql_jobs = await count_sql(
            bench, counted, min(jobs, bench.sizes.counted_jobs), concurrency
        )
    return JobResult(job, timed, sql, sql_jobs)


@dataclass
class Comparison:
    """The runs beside Sidekiq, and Sidekiq's SQL per job."""

    runs: list[Drain]
    sidekiq_sql: SqlPerJob
    sidekiq_sql_jobs: int


async def compare_with_sidekiq(
    bench: Bench, side: SidekiqSide, concurrencies: list[int], processes: int
) -> Comparison:
    """``compute_repository_commits_size`` on the same repositories, ours then Sidekiq at each
    concurrency, then ``processes`` processes of each at the first concurrency, then Sidekiq's
    SQL counted at the first concurrency. The repositories' sizes are reset before every run."""
    runs: list[Drain] = []
    async with stage(bench) as st:
        prepared = await compute_repository_commits_size(st, bench.sizes.compared_jobs)
        ids = [int(a["repository_id"]) for a in prepared.args]

        async def reset(repositories: list[int]) -> None:
            await st.pool.execute(
                "UPDATE repositories SET commits_size = 0 WHERE id = ANY($1)", repositories
            )

        settings = [(c, 1) for c in concurrencies]
        if processes > 1:
            settings.append((concurrencies[0], processes))
        for concurrency, count in settings:
            await reset(ids)
            ours = await run_ours(
                st, COMPARED_JOB, prepared, concurrency=concurrency, processes=count
            )
            await reset(ids)
            theirs = await run_sidekiq(st, side, ids, concurrency=concurrency, processes=count)
            await prepared.check()
            runs += [ours, theirs]
            print(
                f"  {COMPARED_JOB} c={concurrency} processes={count}: ours {ours.rate:6.0f}"
                f"  Sidekiq {theirs.rate:6.0f} jobs/s  (load {ours.load_average:.1f})",
                flush=True,
            )

        async def counted(n: int, proxy: CountingProxy) -> Drain:
            await reset(ids[:n])
            drain = await run_sidekiq(st, side, ids[:n], concurrency=concurrencies[0], proxy=proxy)
            await prepared.check()
            return drain

        jobs = min(len(ids), bench.sizes.counted_jobs)
        sql, sql_jobs = await count_sql(bench, counted, jobs, concurrencies[0])
    return Comparison(runs, sql, sql_jobs)


# Report --------------------------------------------------------------------------------------


def sql_cells(sql: SqlPerJob) -> tuple[str, str, str]:
    """(statements, round trips — each as job sessions+engine pool — and transactions)."""

    def pair(kind: str) -> str:
        job = sum(c[kind] for role, c in sql.items() if role != "engine")
        engine = sql.get("engine", {}).get(kind, 0.0)
        return f"{job:.1f}+{engine:.1f}"

    transactions = sum(c["transactions"] for c in sql.values())
    return pair("statements"), pair("round_trips"), f"{transactions:.1f}"


def report_jobs(results: list[JobResult]) -> None:
    print()
    print(
        "Each job through `cocov-jobs worker --burst` (one process): jobs/s between 1 % and"
        " 100 % finished, follow-up jobs included; worker CPU per job; SQL per job (job"
        " sessions+engine pool) counted through the relay:"
    )
    print(
        f"{'job':32} {'jobs':>6} {'c':>3} {'jobs/s':>8} {'cpu ms':>7} {'statements':>11}"
        f" {'round trips':>11} {'xacts':>5} {'follow-ups':>10} {'load':>5}"
    )
    for r in results:
        statements, round_trips, transactions = sql_cells(r.sql)
        print(
            f"{r.job:32} {r.timed.jobs:6d} {r.timed.concurrency:3d} {r.timed.rate:8.1f}"
            f" {r.timed.cpu_ms_per_job:7.2f} {statements:>11} {round_trips:>11}"
            f" {transactions:>5} {follow_ups(r.timed):10.2f} {r.timed.load_average:5.1f}"
        )


def _steps(rates: list[float]) -> tuple[str, bool]:
    """Each change of rate from one concurrency to the next; whether none is a fall."""
    steps = [after / before - 1 for before, after in itertools.pairwise(rates)]
    holds = all(step >= -FALL_TOLERANCE for step in steps)
    return " ".join(f"{step:+.0%}" for step in steps), holds


def report_comparison(comparison: Comparison, concurrencies: list[int]) -> dict[str, Any]:
    runs = comparison.runs
    print()
    print(f"{COMPARED_JOB} beside Sidekiq, same database and data, {runs[0].jobs} jobs:")
    print(
        f"{'processes':>9} {'c':>3} {'ours/s':>8} {'Sidekiq/s':>9} {'ours/Sidekiq':>12}"
        f" {'ours cpu ms':>11} {'Sidekiq cpu ms':>14} {'connections':>11} {'load':>5}"
    )
    rows = []
    for ours, theirs in zip(runs[0::2], runs[1::2], strict=True):
        ratio = ours.rate / theirs.rate
        rows.append(
            {
                "processes": ours.processes,
                "concurrency": ours.concurrency,
                "ours_jobs_per_s": round(ours.rate, 1),
                "sidekiq_jobs_per_s": round(theirs.rate, 1),
                "ratio_ours_to_sidekiq": round(ratio, 3),
                "ours_cpu_ms_per_job": round(ours.cpu_ms_per_job, 3),
                "sidekiq_cpu_ms_per_job": round(theirs.cpu_ms_per_job, 3),
                "ours_peak_connections": ours.window.peak_connections,
                "sidekiq_peak_connections": theirs.window.peak_connections,
            }
        )
        print(
            f"{ours.processes:9d} {ours.concurrency:3d} {ours.rate:8.0f} {theirs.rate:9.0f}"
            f" {ratio:12.2f} {ours.cpu_ms_per_job:11.3f} {theirs.cpu_ms_per_job:14.3f}"
            f" {ours.window.peak_connections:>5}/{theirs.window.peak_connections:<5}"
            f" {ours.load_average:5.1f}"
        )
    trend = {}
    for engine in ("ours", "sidekiq"):
        rates = [r.rate for r in runs if r.engine == engine and r.processes == 1]
        steps, holds = _steps(rates)
        trend[engine] = {"steps": steps, "does_not_fall": holds}
        print(
            f"{engine}: throughput from c={concurrencies[0]} to c={concurrencies[-1]}: {steps}"
            f" -> {'does not fall' if holds else 'FALLS'}"
            f" (a drop within {FALL_TOLERANCE:.0%} counts as noise)"
        )
    statements, round_trips, transactions = sql_cells(comparison.sidekiq_sql)
    print(
        f"Sidekiq's SQL per job (c={concurrencies[0]}): statements {statements}, round trips"
        f" {round_trips}, transactions {transactions}"
    )
    return {
        "rows": rows,
        "throughput_vs_concurrency": trend,
        "sidekiq_sql_per_job": _rounded(comparison.sidekiq_sql),
        "sidekiq_sql_counted_over_jobs": comparison.sidekiq_sql_jobs,
        "runs": [r.as_dict() for r in runs],
    }


# Main ----------------------------------------------------------------------------------------


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="bench/jobs.py", description=__doc__.split("\n")[0])
    parser.add_argument("--database-url", default=None)
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke run")
    parser.add_argument(
        "--size",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help=f"override a size ({', '.join(f.name for f in dataclasses.fields(Sizes))})",
    )
    parser.add_argument("--only", type=lambda t: t.split(","), default=list(SCENARIOS))
    parser.add_argument("--concurrency", type=int, default=10, help="of the ten jobs' runs")
    parser.add_argument("--compare-concurrency", type=_concurrencies, default=[10, 20, 40])
    parser.add_argument("--processes", type=int, default=2, help="of the multi-process pair")
    parser.add_argument("--no-sidekiq", action="store_true")
    parser.add_argument("--results", type=Path, default=RESULTS_PATH)
    args = parser.parse_args(argv)
    unknown = set(args.only) - set(SCENARIOS)
    if unknown:
        parser.error(f"unknown job(s): {', '.join(sorted(unknown))}")
    sizes = QUICK if args.quick else Sizes()
    try:
        overrides = {k: int(v) for k, v in (item.split("=", 1) for item in args.size)}
        args.sizes = dataclasses.replace(sizes, **overrides)
    except (ValueError, TypeError) as exc:
        parser.error(f"--size: {exc}")
    return args


async def run_all(
    args: argparse.Namespace, admin_url: str
) -> tuple[list[JobResult], Comparison | None]:
    """The ten jobs, then the comparison, on one bench database and one private Redis."""
    results: list[JobResult] = []
    comparison = None
    with tempfile.TemporaryDirectory(prefix="cocov-bench-jobs-") as tmp:
        work_dir = Path(tmp)
        async with scratch_database(admin_url, prefix="cocov_bench_jobs") as database_url:
            with private_redis(work_dir) as redis_url:  # Sidekiq's on db 0, ours on db 1
                ours_redis = redis_url.rsplit("/", 1)[0] + "/1"
                state = Bench(admin_url, database_url, ours_redis, work_dir, args.sizes)
                for job in (job for job in SCENARIOS if job in args.only):
                    result = await bench_job(state, job, args.concurrency)
                    results.append(result)
                    print(
                        f"  {job}: {result.timed.rate:.1f} jobs/s"
                        f" (load {result.timed.load_average:.1f})",
                        flush=True,
                    )
                if not args.no_sidekiq:
                    side = SidekiqSide(redis_url, work_dir / "sidekiq.log")
                    comparison = await compare_with_sidekiq(
                        state, side, args.compare_concurrency, args.processes
                    )
    return results, comparison


async def bench(args: argparse.Namespace, admin_url: str, source: str) -> int:
    installed = ensure_sidekiq_packages()  # redis-server serves our worker too
    if installed:
        print(f"installed: {' '.join(installed)}")
    started = datetime.now(UTC)
    info = machine(str(await _fetchval(admin_url, "SHOW server_version")), not args.no_sidekiq)
    print("Machine: " + ", ".join(f"{k}={v}" for k, v in info.items()), flush=True)
    results, comparison = await run_all(args, admin_url)
    report_jobs(results)
    compared = report_comparison(comparison, args.compare_concurrency) if comparison else None
    document = {
        "timestamp": started.isoformat(timespec="seconds"),
        "command": " ".join(["python", "bench/jobs.py", *sys.argv[1:]]),
        "machine": info,
        "load_average_1m_at_end": os.getloadavg()[0],
        "database": source,
        "sizes": dataclasses.asdict(args.sizes),
        "measured": (
            "jobs_per_s = jobs finished between the first poll (every 20 ms) that sees >= 1 %"
            " of them finished and the poll that sees all finished (ours: their rows gone"
            " from pgqueuer and the queue empty, follow-up jobs included; Sidekiq: the"
            " bench:finished counter its processes publish); worker_cpu_ms_per_job = user +"
            " system CPU of the worker process tree between the same two polls; sql_per_job"
            " = per application_name (job sessions, engine pool), the difference between two"
            " runs through a counting PostgreSQL wire relay (all jobs and about a quarter of"
            " them, each counted from the worker's start to the last job) divided by"
            " the difference in jobs"
        ),
        "jobs": [r.as_dict() for r in results],
        "sidekiq_comparison": compared,
    }
    write_results(args.results, document)
    return 0


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    return run_on_server(
        "bench/jobs.py", args.database_url, lambda url, source: bench(args, url, source)
    )


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
