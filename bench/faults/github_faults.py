"""Scenario 4 (GitHub faults): jobs retry, defer to the reset time, or fail for good with a reason,
and the shared installation token is refreshed once, not by every job.

Two ``cocov-jobs worker`` processes (concurrency :data:`WORKER_CONCURRENCY` each,
``COCOV_GITHUB_TIMEOUT`` = :data:`GITHUB_TIMEOUT`) run ``update_repo_permissions`` jobs, which
list a repository's collaborators with the installation token, against the GitHub fake while it
injects one fault per case (each case has its own repository, so the faults hit only its job):

=====================  ==========================================  ===========================
case                   fault on ``GET …/collaborators``            expected
=====================  ==========================================  ===========================
``5xx_burst``          502 three times                             retried 3×, then succeeds
``timeout``            answer held longer than the client timeout  retried, then succeeds
``429_retry_after``    429 ``Retry-After: 3``                      deferred ≥ 3 s (one logged
                                                                   deferral), then succeeds
``secondary_limit``    403 "secondary rate limit", ``Retry-After``  same
``primary_limit``      403 ``X-RateLimit-Remaining: 0``, reset +3 s deferred to the reset time
``token_expires``      the token expires while the request is held  401, one new token, the
                                                                   request retried: success
                                                                   on the first attempt
``refresh_after_       every token expired, then                   one token minted for all
expiry``               :data:`CONCURRENT_JOBS` jobs at once        (both workers ran jobs)
``refresh_near_        the cached token within the refresh         one token minted for all
expiry``               margin, :data:`CONCURRENT_JOBS` jobs
``revoked``            the App uninstalled                         failed at once (one run),
                                                                   reason "404" recorded
=====================  ==========================================  ===========================

A succeeded job must also have written the repository's members (its collaborators).

Usage: ``python bench/faults/github_faults.py`` (about 30 s).
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Literal

from common import (
    bench_settings,
    migrated_database,
    private_postgres,
    private_redis,
    process_env,
    scratch_dir,
    start_worker,
    stop_process,
    summary,
    until,
)
from sqlalchemy import text

from cocov_jobs import contracts
from cocov_jobs import jobs as product_jobs
from cocov_jobs.engine import queue
from cocov_jobs.services import Services, open_services
from cocov_jobs.testing import FakeGitHub

SCENARIO = "github_faults"
#: Worker processes and the jobs each runs at once.
WORKERS = 2
WORKER_CONCURRENCY = 10
#: ``COCOV_GITHUB_TIMEOUT`` of the workers, seconds.
GITHUB_TIMEOUT = 2.0
#: Seconds the fake holds an answer to time the client out (longer than the timeout).
HUNG_SECONDS = 4.0
#: Seconds the fake holds the request during which the token expires (below the timeout).
EXPIRY_HOLD_SECONDS = 1.0
#: ``Retry-After`` / reset distance of the rate-limit cases, seconds.
LIMIT_SECONDS = 3
#: 5xx answers in a row of the burst case.
BURST = 3
#: GitHub-bound jobs started together in the token-refresh cases.
CONCURRENT_JOBS = 20
#: Collaborators of each repository (two pages of 100 would do too; one keeps it quick).
COLLABORATORS = 3
#: Seconds left on the cached token in the near-expiry case (inside the 300 s refresh margin).
NEAR_EXPIRY_SECONDS = 60
#: Longest wait for one case, seconds.
CASE_TIMEOUT = 60.0


@dataclass
class Outcome:
    """One job's ``pgqueuer_log`` rows (status, time, reason) and whether it is held failed."""

    job_id: int
    statuses: list[str]
    times: list[datetime]
    reasons: list[str | None]
    failed: bool

    @property
    def succeeded(self) -> bool:
        return "successful" in self.statuses

    @property
    def tracebacks(self) -> list[str]:
        return [reason for reason in self.reasons if reason]


@dataclass
class Case:
    name: str
    problems: list[str] = field(default_factory=list)
    figures: dict[str, object] = field(default_factory=dict)


class Bench:
    """The fake, the in-process services (to enqueue and look) and the worker processes."""

    def __init__(self, fake: FakeGitHub, services: Services, logs: list[Path]) -> None:
        self.fake = fake
        self.services = services
        self.logs = logs
        self.repos: list[tuple[int, int]] = []  # (repositories.id, github id), one per job

    async def seed(self, count: int) -> None:
        for repo in self.fake.add_repos(count, prefix="faulty"):
            self.fake.add_collaborators(repo.name, COLLABORATORS, first_id=repo.id * 10)
            async with self.services.sessions.begin() as session:
                local = await session.scalar(
                    text(
                        "INSERT INTO repositories (name, default_branch, token, github_id,"
                        " created_at, updated_at) VALUES (:n, 'main', :t, :g, now(), now())"
                        " RETURNING id"
                    ),
                    {"n": repo.name, "t": f"crt_{repo.id}", "g": repo.id},
                )
            self.repos.append((int(local), repo.id))

    def take(self, count: int = 1) -> list[tuple[int, int]]:
        taken, self.repos = self.repos[:count], self.repos[count:]
        return taken

    async def enqueue(self, repos: list[tuple[int, int]]) -> list[int]:
        async with self.services.sessions.begin() as session:
            ids = [
                await queue.enqueue(session, "update_repo_permissions", repository_id=local)
                for local, _ in repos
            ]
        return [job_id for job_id in ids if job_id is not None]

    async def outcome(self, job_id: int) -> Outcome:
        async with self.services.engine.connect() as conn:
            log = (
                await conn.execute(
                    text(
                        "SELECT status::text AS status, created, traceback::text AS tb"
                        " FROM pgqueuer_log WHERE job_id = :id ORDER BY id"
                    ),
                    {"id": job_id},
                )
            ).all()
            held = await conn.scalar(
                text("SELECT status::text FROM pgqueuer WHERE id = :id"), {"id": job_id}
            )
        return Outcome(
            job_id,
            [row.status for row in log],
            [row.created for row in log],
            [row.tb for row in log],
            failed=held == "failed",
        )

    async def finished(self, job_ids: list[int]) -> list[Outcome]:
        """Wait until every job succeeded or is held as failed; return their outcomes."""

        async def done() -> bool:
            async with self.services.engine.connect() as conn:
                waiting = await conn.scalar(
                    text(
                        "SELECT count(*) FROM pgqueuer WHERE id = ANY(:ids)"
                        " AND status::text <> 'failed'"
                    ),
                    {"ids": job_ids},
                )
            return bool(waiting == 0)

        await until(done, CASE_TIMEOUT)
        return [await self.outcome(job_id) for job_id in job_ids]

    def workers_that_ran(self, job_ids: list[int]) -> int:
        """How many worker processes logged a line for one of ``job_ids``."""
        wanted = set(job_ids)
        ran = 0
        for path in self.logs:
            for line in path.read_text().splitlines():
                if line.startswith("{") and json.loads(line).get("job_id") in wanted:
                    ran += 1
                    break
        return ran

    async def members(self, repository_id: int) -> int:
        async with self.services.engine.connect() as conn:
            count = await conn.scalar(
                text("SELECT count(*) FROM repository_members WHERE repository_id = :r"),
                {"r": repository_id},
            )
        return int(count or 0)

    async def check_success(
        self, case: Case, repos: list[tuple[int, int]], outcomes: list[Outcome]
    ) -> None:
        """Every job succeeded and wrote its repository's members."""
        for (local, _), outcome in zip(repos, outcomes, strict=True):
            if not outcome.succeeded:
                case.problems.append(f"job {outcome.job_id} did not succeed: {outcome.statuses}")
            elif await self.members(local) != COLLABORATORS:
                case.problems.append(f"job {outcome.job_id} succeeded without writing members")


def collaborators_path(github_id: int) -> str:
    return f"/repositories/{github_id}/collaborators$"


def errors(outcome: Outcome) -> int:
    """Runs that ended in an error or a deferral (each logs its reason)."""
    return len(outcome.tracebacks)


def wait_after_error(outcome: Outcome) -> float:
    """Seconds from the first logged error or deferral to the success."""
    first = next(t for t, tb in zip(outcome.times, outcome.reasons, strict=True) if tb)
    return (outcome.times[-1] - first).total_seconds()


# Cases -----------------------------------------------------------------------------------------


async def one_job(bench: Bench, case: Case, inject: Callable[[str], None]) -> Outcome:
    """Inject a fault on a fresh repository's listing, run its job, check it succeeded."""
    repos = bench.take()
    inject(collaborators_path(repos[0][1]))
    outcomes = await bench.finished(await bench.enqueue(repos))
    await bench.check_success(case, repos, outcomes)
    return outcomes[0]


async def server_errors(bench: Bench) -> Case:
    case = Case("5xx_burst")
    outcome = await one_job(
        bench, case, lambda path: bench.fake.fail_next("GET", path, 502, times=BURST)
    )
    case.figures["retries"] = errors(outcome)
    if errors(outcome) != BURST:
        case.problems.append(f"{errors(outcome)} failed runs, expected {BURST}")
    return case


async def timeout(bench: Bench) -> Case:
    case = Case("timeout")
    outcome = await one_job(bench, case, lambda path: bench.fake.delay_next(path, HUNG_SECONDS))
    case.figures["retries"] = errors(outcome)
    if errors(outcome) != 1 or "timed out" not in outcome.tracebacks[0]:
        case.problems.append(f"expected one timed-out run, got {outcome.tracebacks}")
    return case


def rate_limited(
    name: str, kind: Literal["primary", "secondary"], status: int
) -> Callable[[Bench], Awaitable[Case]]:
    async def run(bench: Bench) -> Case:
        case = Case(name)

        def inject(path: str) -> None:
            bench.fake.rate_limit_next(
                path,
                kind,
                retry_after=LIMIT_SECONDS,
                status=status,
            )

        outcome = await one_job(bench, case, inject)
        waited = wait_after_error(outcome) if outcome.tracebacks else 0.0
        case.figures["waited_s"] = round(waited, 2)
        if errors(outcome) != 1:
            case.problems.append(f"expected one deferral, got {outcome.tracebacks}")
        elif waited < LIMIT_SECONDS - 1:  # the reset header has whole seconds
            case.problems.append(f"ran again after {waited:.2f} s, before the limit's end")
        return case

    return run


async def token_expires_mid_job(bench: Bench) -> Case:
    case = Case("token_expires")
    minted = bench.fake.tokens_minted
    repos = bench.take()
    bench.fake.delay_next(collaborators_path(repos[0][1]), EXPIRY_HOLD_SECONDS)
    [job_id] = await bench.enqueue(repos)

    async def held() -> bool:  # picked: its request is being held by the fake
        return (await bench.outcome(job_id)).statuses[-1:] == ["picked"]

    await until(held, CASE_TIMEOUT)
    bench.fake.expire_all_tokens()
    outcomes = await bench.finished([job_id])
    await bench.check_success(case, repos, outcomes)
    case.figures["tokens_minted"] = bench.fake.tokens_minted - minted
    if bench.fake.tokens_minted - minted != 1 or errors(outcomes[0]):
        case.problems.append(
            f"{bench.fake.tokens_minted - minted} tokens minted, runs {outcomes[0].statuses}"
        )
    return case


async def concurrent_refresh(bench: Bench, case: Case) -> None:
    """Run :data:`CONCURRENT_JOBS` jobs at once; exactly one token may be minted."""
    minted = bench.fake.tokens_minted
    repos = bench.take(CONCURRENT_JOBS)
    outcomes = await bench.finished(await bench.enqueue(repos))
    await bench.check_success(case, repos, outcomes)
    case.figures["jobs"] = len(outcomes)
    case.figures["tokens_minted"] = bench.fake.tokens_minted - minted
    if bench.fake.tokens_minted - minted != 1:
        case.problems.append(f"{bench.fake.tokens_minted - minted} tokens minted, expected 1")
    ran_by = bench.workers_that_ran([o.job_id for o in outcomes])
    case.figures["workers"] = ran_by
    if ran_by < WORKERS:
        case.problems.append(f"only {ran_by} worker process(es) ran the jobs")


async def refresh_after_expiry(bench: Bench) -> Case:
    case = Case("refresh_after_expiry")
    bench.fake.expire_all_tokens()  # the cache still holds the token, as valid for an hour
    await concurrent_refresh(bench, case)
    return case


async def refresh_near_expiry(bench: Bench) -> Case:
    case = Case("refresh_near_expiry")
    raw = await bench.services.redis.get(contracts.INSTALLATION_TOKEN)
    cached = json.loads(raw or "{}")
    soon = datetime.now(UTC) + timedelta(seconds=NEAR_EXPIRY_SECONDS)
    cached["expires_at"] = soon.isoformat().replace("+00:00", "Z")
    await bench.services.redis.set(contracts.INSTALLATION_TOKEN, json.dumps(cached))
    await concurrent_refresh(bench, case)
    return case


async def revoked_installation(bench: Bench) -> Case:
    case = Case("revoked")
    bench.fake.revoke_installation()
    repos = bench.take()
    [outcome] = await bench.finished(await bench.enqueue(repos))
    reason = " ".join(outcome.tracebacks)
    case.figures["runs"] = outcome.statuses.count("picked")
    if not outcome.failed or "404" not in reason or errors(outcome) != 1:
        case.problems.append(f"expected one permanent failure naming 404, got {outcome}")
    return case


CASES: list[Callable[[Bench], Awaitable[Case]]] = [
    server_errors,
    timeout,
    rate_limited("429_retry_after", "secondary", 429),
    rate_limited("secondary_limit", "secondary", 403),
    rate_limited("primary_limit", "primary", 403),
    token_expires_mid_job,
    refresh_after_expiry,
    refresh_near_expiry,
    revoked_installation,  # last: the fake cannot reinstall the App
]
#: Repositories used: the warm-up job, one per single-job case, two batches of concurrent jobs.
REPOSITORIES = 1 + len(CASES) - 2 + 2 * CONCURRENT_JOBS


# Main ------------------------------------------------------------------------------------------


@asynccontextmanager
async def running(fake: FakeGitHub, scratch: Path) -> AsyncIterator[Bench]:
    settings = bench_settings(fake, scratch / "storage")
    with private_postgres(scratch / "pg") as pg, private_redis(scratch / "redis") as rd:
        async with migrated_database(pg.url) as database_url:
            env = process_env(
                settings,
                database_url,
                rd.url(0),
                COCOV_GITHUB_TIMEOUT=str(GITHUB_TIMEOUT),
                COCOV_ORG_REPOS_REFRESH_MINUTES="0",
                COCOV_RECONCILE_MINUTES="0",
            )
            logs = [scratch / f"worker-{n}.log" for n in range(WORKERS)]
            workers = [
                start_worker(env, "--concurrency", str(WORKER_CONCURRENCY), log=log) for log in logs
            ]
            try:
                async with open_services(
                    settings,
                    registry=product_jobs.registry(),
                    database_url=database_url,
                    redis_url=rd.url(0),
                    redis_cache_url=rd.url(0),
                ) as services:
                    bench = Bench(fake, services, logs)
                    await bench.seed(REPOSITORIES)
                    yield bench
            finally:
                for worker in workers:
                    stop_process(worker)


async def scenario(scratch: Path) -> list[Case]:
    with FakeGitHub(org="acme", tmp_dir=scratch / "fake") as fake:
        async with running(fake, scratch) as bench:
            # A first job warms the token cache, as in a running installation.
            await bench.finished(await bench.enqueue(bench.take()))
            cases = []
            for run in CASES:
                cases.append(await run(bench))
                done = cases[-1]
                verdict = "; ".join(done.problems) or "ok"
                print(f"{done.name}: {done.figures} {verdict}", flush=True)
            return cases


def main() -> int:
    started = time.monotonic()
    with scratch_dir(SCENARIO) as scratch:
        cases = asyncio.run(scenario(scratch))
    figures: dict[str, object] = {}
    for case in cases:
        figures.update({f"{case.name}.{key}": value for key, value in case.figures.items()})
    figures["seconds"] = round(time.monotonic() - started, 1)
    return summary(
        SCENARIO,
        trials=len(cases),
        failures=sum(1 for case in cases if case.problems),
        **figures,
    )


if __name__ == "__main__":
    sys.exit(main())
