"""Benchmark: the permission jobs on large GitHub listings, and proof that their SQL is O(n + m).

Two jobs, each at two sizes (``--sizes``, default 2,000 and 20,000 collaborators for
``update_repo_permissions``; ``--user-sizes``, default 500 and 5,000 repositories for
``update_user_permissions``), each size in two phases:

* ``initial`` — no membership stored yet: every listed member is inserted;
* ``resync`` — then, on GitHub, a tenth of the members (repositories) lose access, a tenth
  change role and a tenth are new; the job deletes, updates and inserts accordingly.

Each job runs in this process exactly as a worker runs it (:func:`cocov_jobs.engine.context.execute`
with a :class:`~cocov_jobs.engine.context.JobContext`), against the GitHub fake over real HTTP
(100 items per page) and real PostgreSQL and Redis. After each run the stored memberships are
compared with what GitHub lists (exit status 1 on a mismatch).

Measured per run: wall time of the job; the SQL statements the job sent through SQLAlchemy
(counted with a ``before_cursor_execute`` listener on the engine, timed with
``after_cursor_execute``) and their total time; and, apart, the time of one more identical
GitHub listing through the same client (``GitHub s``: what the fake and the HTTP round trips
cost, which dominates the job's time). The engine's advisory lock and unlock (two
statements on its own locks) are not counted. The statement count must be the same at both
sizes: that is what "O(n + m), set-based" means here (no per-row statements); the SQL time
should grow about linearly with the size.

Stores: ``COCOV_TEST_DATABASE_URL`` / ``COCOV_TEST_REDIS_URL`` when set, else embedded ones in
a temporary directory; a fresh database ``cocov_bench_perm_<random>`` is created, migrated and
dropped. Figures go to stdout and ``bench/results/permissions.json``.

Usage: ``python bench/permissions.py [--sizes 2000,20000] [--user-sizes 500,5000]``
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import structlog
from machine import machine
from sqlalchemy import event, text

from cocov_jobs import jobs as product_jobs
from cocov_jobs.config import Settings
from cocov_jobs.embedded import stores
from cocov_jobs.engine.locks import Locks
from cocov_jobs.engine.worker import connect_locks
from cocov_jobs.github.levels import level_from_github
from cocov_jobs.services import Services, open_services
from cocov_jobs.testing import FakeGitHub
from cocov_jobs.testing.databases import scratch_database
from cocov_jobs.testing.github_fake import ROLE_PERMISSIONS
from cocov_jobs.testing.running import run_here

RESULTS_PATH = Path(__file__).parent / "results" / "permissions.json"
#: Default sizes: collaborators of one repository / repositories one user can see.
REPO_SIZES = (2_000, 20_000)
USER_SIZES = (500, 5_000)
#: Share of members that lose access, change role, and appear, between the two phases.
CHURN = 10
#: GitHub roles given in turn to listed members.
ROLES = tuple(ROLE_PERMISSIONS)
#: GitHub id of the benchmark user; collaborators get ids from FIRST_MEMBER_ID.
USER_GITHUB_ID = 7
FIRST_MEMBER_ID = 1_000_000


class BenchError(RuntimeError):
    """The stored memberships do not match GitHub: the job is wrong, not just slow."""


@dataclass
class Run:
    job: str
    size: int
    phase: str
    pages: int
    seconds: float
    listing_seconds: float
    sql_statements: int
    sql_seconds: float
    memberships: int


class StatementCounter:
    """Counts and times the statements an engine sends while :attr:`active`."""

    def __init__(self, services: Services) -> None:
        self.active = False
        self.count = 0
        self.seconds = 0.0
        self._started: float | None = None
        engine = services.engine.sync_engine
        event.listen(engine, "before_cursor_execute", self._before)
        event.listen(engine, "after_cursor_execute", self._after)

    def _before(self, *_: Any) -> None:
        if self.active:
            self.count += 1
            self._started = time.perf_counter()

    def _after(self, *_: Any) -> None:
        if self.active and self._started is not None:
            self.seconds += time.perf_counter() - self._started
            self._started = None

    @contextlib.contextmanager
    def measuring(self) -> Iterator[None]:
        self.count, self.seconds, self.active = 0, 0.0, True
        try:
            yield
        finally:
            self.active = False


# Stores -----------------------------------------------------------------------------------------


def bench_database(server_url: str) -> contextlib.AbstractAsyncContextManager[str]:
    """A fresh migrated database on ``server_url``'s server, dropped afterwards."""
    return scratch_database(server_url, prefix="cocov_bench_perm")


# Running a job ----------------------------------------------------------------------------------


async def run_job(
    services: Services, locks: Locks, counter: StatementCounter, name: str, **args: int
) -> tuple[float, int, float]:
    """Run job ``name`` as a worker would; return (seconds, statements, SQL seconds)."""
    started = time.perf_counter()
    with counter.measuring():
        await run_here(services, locks, name, **args)
    return time.perf_counter() - started, counter.count, counter.seconds


async def stored(services: Services, sql: str, **params: int) -> dict[int, int]:
    async with services.engine.connect() as conn:
        return {int(key): int(level) for key, level in await conn.execute(text(sql), params)}


def check(job: str, size: int, phase: str, got: dict[int, int], want: dict[int, int]) -> None:
    if got != want:
        missing, extra = len(want.keys() - got.keys()), len(got.keys() - want.keys())
        wrong = sum(1 for key in want.keys() & got.keys() if got[key] != want[key])
        raise BenchError(
            f"{job} size {size} {phase}: {missing} missing, {extra} extra, {wrong} wrong levels"
        )


async def timed(listing: Awaitable[object]) -> float:
    """Seconds one more identical GitHub listing takes (the fake's and the client's share)."""
    started = time.perf_counter()
    await listing
    return time.perf_counter() - started


def role(i: int, shift: int = 0) -> str:
    return ROLES[(i + shift) % len(ROLES)]


# update_repo_permissions ------------------------------------------------------------------------


async def bench_repo(
    services: Services,
    locks: Locks,
    counter: StatementCounter,
    fake: FakeGitHub,
    size: int,
) -> list[Run]:
    (remote,) = fake.add_repos(1, prefix=f"wide{size}")
    members = {FIRST_MEMBER_ID + i: role(i) for i in range(size)}
    for member, granted in members.items():
        fake.add_collaborator(remote.name, member, f"user{member}", granted)
    async with services.sessions.begin() as session:
        repo_id = await session.scalar(
            text(
                "INSERT INTO repositories (name, default_branch, token, github_id, created_at,"
                " updated_at) VALUES (:n, 'main', :t, :g, now(), now()) RETURNING id"
            ),
            {"n": remote.name, "t": f"crt_{remote.name}", "g": remote.id},
        )
    runs = []
    for phase in ("initial", "resync"):
        if phase == "resync":
            _churn(members, lambda m: fake.remove_collaborator(remote.name, m), size)
            for member in list(members)[: size // CHURN]:
                members[member] = role(member, shift=1)
                fake.add_collaborator(remote.name, member, f"user{member}", members[member])
            for member in range(FIRST_MEMBER_ID + size, FIRST_MEMBER_ID + size + size // CHURN):
                members[member] = role(member)
                fake.add_collaborator(remote.name, member, f"user{member}", members[member])
        seconds, statements, sql = await run_job(
            services, locks, counter, "update_repo_permissions", repository_id=repo_id
        )
        got = await stored(
            services,
            "SELECT github_member_id, level FROM repository_members WHERE repository_id = :r",
            r=repo_id,
        )
        want = {m: level_from_github(ROLE_PERMISSIONS[r]) for m, r in members.items()}
        check("update_repo_permissions", size, phase, got, want)
        listing = await timed(services.github().list_collaborators(remote.id))
        pages = -(-len(members) // 100)
        runs.append(
            Run(
                "update_repo_permissions",
                *(size, phase, pages, seconds, listing, statements, sql, len(got)),
            )
        )
    return runs


def _churn(members: dict[int, str], revoke: Callable[[int], None], size: int) -> None:
    """Revoke the last tenth of ``members`` (in insertion order)."""
    for member in list(members)[-(size // CHURN) :]:
        revoke(member)
        del members[member]


# update_user_permissions ------------------------------------------------------------------------


async def bench_user(
    services: Services,
    locks: Locks,
    counter: StatementCounter,
    fake: FakeGitHub,
    size: int,
) -> list[Run]:
    login = f"bench{size}"
    github_user = USER_GITHUB_ID + size
    token = fake.add_user(login, github_user)
    extra = size // CHURN
    remotes = fake.add_repos(size + extra, prefix=f"seen{size}")
    granted = {repo.id: role(i) for i, repo in enumerate(remotes[:size])}
    for repo in remotes[:size]:
        fake.grant(login, repo.name, granted[repo.id])
    async with services.sessions.begin() as session:
        await session.execute(
            text(
                "INSERT INTO repositories (name, default_branch, token, github_id, created_at,"
                " updated_at) SELECT n, 'main', 'crt_' || n, g, now(), now()"
                " FROM unnest(CAST(:names AS text[]), CAST(:ids AS integer[])) AS r(n, g)"
            ),
            {"names": [r.name for r in remotes], "ids": [r.id for r in remotes]},
        )
        user_id = await session.scalar(
            text(
                "INSERT INTO users (login, github_id, github_token, admin, created_at, updated_at)"
                " VALUES (:l, :g, :t, false, now(), now()) RETURNING id"
            ),
            {"l": login, "g": github_user, "t": token},
        )
    by_id = {repo.id: repo.name for repo in remotes}
    runs = []
    for phase in ("initial", "resync"):
        if phase == "resync":
            _churn(granted, lambda r: fake.remove_collaborator(by_id[r], github_user), size)
            for repo_id in list(granted)[:extra]:
                granted[repo_id] = role(repo_id, shift=1)
                fake.grant(login, by_id[repo_id], granted[repo_id])
            for repo in remotes[size:]:
                granted[repo.id] = role(repo.id)
                fake.grant(login, repo.name, granted[repo.id])
        seconds, statements, sql = await run_job(
            services, locks, counter, "update_user_permissions", user_id=int(user_id)
        )
        got = await stored(
            services,
            "SELECT r.github_id, m.level FROM repository_members m"
            " JOIN repositories r ON r.id = m.repository_id WHERE m.github_member_id = :g",
            g=github_user,
        )
        want = {r: level_from_github(ROLE_PERMISSIONS[role_]) for r, role_ in granted.items()}
        check("update_user_permissions", size, phase, got, want)
        async with services.user_github(token) as github:
            listing = await timed(github.list_org_repos(fake.org))
        pages = -(-len(granted) // 100)
        runs.append(
            Run(
                "update_user_permissions",
                *(size, phase, pages, seconds, listing, statements, sql, len(got)),
            )
        )
    return runs


# Report -----------------------------------------------------------------------------------------


def report(runs: list[Run]) -> dict[str, list[int]]:
    """Print the table; return the distinct statement counts per job."""
    print(
        f"{'job':26} {'size':>6} {'phase':8} {'pages':>5} {'job s':>7} {'GitHub s':>8}"
        f" {'stmts':>5} {'SQL ms':>7} {'rows':>6}"
    )
    for r in runs:
        print(
            f"{r.job:26} {r.size:6d} {r.phase:8} {r.pages:5d} {r.seconds:7.2f}"
            f" {r.listing_seconds:8.2f} {r.sql_statements:5d} {r.sql_seconds * 1000:7.1f}"
            f" {r.memberships:6d}"
        )
    counts: dict[str, list[int]] = {}
    for r in runs:
        counts.setdefault(r.job, [])
        if r.sql_statements not in counts[r.job]:
            counts[r.job].append(r.sql_statements)
    for job, seen in counts.items():
        verdict = "constant (set-based)" if len(seen) == 1 else "GROWS WITH SIZE"
        print(f"{job}: SQL statements per run {seen} -> {verdict}")
    return counts


async def bench(args: argparse.Namespace, database_url: str, redis_url: str) -> dict[str, Any]:
    with FakeGitHub(org="acme") as fake:
        settings = Settings(**fake.settings_fields())
        async with (
            bench_database(database_url) as url,
            open_services(
                settings,
                registry=product_jobs.registry(),
                database_url=url,
                redis_url=redis_url,
                redis_cache_url=redis_url,
            ) as services,
        ):
            locks = connect_locks(url)
            try:
                counter = StatementCounter(services)
                runs: list[Run] = []
                for size in args.sizes:
                    runs += await bench_repo(services, locks, counter, fake, size)
                for size in args.user_sizes:
                    runs += await bench_user(services, locks, counter, fake, size)
            finally:
                await locks.close()
    counts = report(runs)
    return {"runs": [asdict(run) for run in runs], "statements_per_run": counts}


def sizes(value: str) -> list[int]:
    return [int(part) for part in value.split(",") if part]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--sizes", type=sizes, default=list(REPO_SIZES))
    parser.add_argument("--user-sizes", type=sizes, default=list(USER_SIZES))
    parser.add_argument("--results", type=Path, default=RESULTS_PATH)
    args = parser.parse_args(argv)
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(30))
    info = machine()
    print("Machine: " + ", ".join(f"{k}={v}" for k, v in info.items()), flush=True)
    database = os.environ.get("COCOV_TEST_DATABASE_URL") or None
    redis = os.environ.get("COCOV_TEST_REDIS_URL", "")
    with (
        tempfile.TemporaryDirectory(prefix="cocov-bench-perm-") as tmp,
        stores(
            database_url=database, redis_url=redis, redis_cache_url="", data_dir=Path(tmp)
        ) as found,
    ):
        print(f"Stores: embedded {found.embedded or 'none'}", flush=True)
        try:
            result = asyncio.run(bench(args, found.database_url, found.redis_url))
        except BenchError as exc:
            print(f"FAILED: {exc}", file=sys.stderr)
            return 1
    document = {
        "timestamp": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": " ".join(["python", "bench/permissions.py", *(argv or sys.argv[1:])]),
        "machine": info,
        "stores": "embedded" if found.embedded else "COCOV_TEST_DATABASE_URL/REDIS_URL",
        "measured": (
            "seconds: wall time of one job run in-process (GitHub fake over HTTP included);"
            " listing_seconds: one more identical listing through the same client;"
            " sql_statements/sql_seconds: statements sent through the job's SQLAlchemy engine"
        ),
        **result,
    }
    args.results.parent.mkdir(parents=True, exist_ok=True)
    args.results.write_text(json.dumps(document, indent=2) + "\n")
    print(f"written {args.results}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
