"""Benchmark: the commit pipeline's two heavy jobs against the bare work they wrap.

(a) ``process_commit`` of the head of a repository of ``--files`` files and ``--commits``
    commits (the GitHub fake's big repository, plus one commit adding a ``.cocov.yaml`` with a
    coverage section and no checks), against ``git clone --depth 1`` of the same commit
    (:func:`clone.time_baseline`). Before each timed job the stored clone is moved aside and
    the commit set back to ``queued``, so every run fetches, archives and publishes it again. The
    storage's ``clone_commit`` alone (:func:`clone.time_ours`) is timed too, to tell the job's
    own cost from the clone's.
(b) ``process_coverage`` of an upload of ``--coverage-files`` files and ``--coverage-lines``
    lines in all (the wire format with hits, misses and neutral lines; the manifest's
    ``exclude_paths`` are matched against every path), against a bare ``COPY`` of the very
    ``coverage_files`` rows the job writes, committed, on one asyncpg connection. Each run
    stores a new upload first (untimed); the job loads it from PostgreSQL, decodes, measures,
    replaces the previous run's rows and records totals, history and branches.

Jobs run in this process exactly as a worker runs them (:func:`cocov_jobs.engine.context.execute`).
One untimed warm-up of each contender, then ``--runs`` timed runs of each, alternating which
goes first; medians and ratios (job / baseline; targets :data:`CLONE_TARGET` and
:data:`COVERAGE_TARGET`) are printed and written to ``bench/results/pipeline.json`` with the
machine's description.

Stores: ``COCOV_TEST_DATABASE_URL`` / ``COCOV_TEST_REDIS_URL`` when set, else embedded ones in a
temporary directory (a fresh database is created, migrated and dropped).

Usage: ``python bench/pipeline.py [--files 10000] [--commits 2000] [--runs 3]
[--coverage-files 5000] [--coverage-lines 2000000] [--scratch DIR]``
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

import asyncpg
import structlog
from clone import ORG, REPO, machine, time_baseline, time_ours
from permissions import bench_database
from sqlalchemy import text

from cocov_jobs import contracts
from cocov_jobs import jobs as product_jobs
from cocov_jobs.config import Settings
from cocov_jobs.coverage import NEUTRAL, Line, encode_lines, summarize
from cocov_jobs.coverage_results import COVERAGE_FILE_COLUMNS, file_records
from cocov_jobs.db.session import asyncpg_dsn
from cocov_jobs.embedded import stores
from cocov_jobs.engine.locks import Locks
from cocov_jobs.engine.worker import connect_locks
from cocov_jobs.gitstore import LocalStorage
from cocov_jobs.manifest import parse_manifest
from cocov_jobs.services import Services, open_services
from cocov_jobs.testing import FakeGitHub
from cocov_jobs.testing.running import run_here

RESULTS_PATH = Path(__file__).parent / "results" / "pipeline.json"
#: Largest acceptable ratio of ``process_commit`` to ``git clone --depth 1``.
CLONE_TARGET = 1.3
#: Largest acceptable ratio of ``process_coverage`` to a bare ``COPY`` of its rows.
COVERAGE_TARGET = 3.0
#: The manifest committed on top of the big repository.
MANIFEST = """\
version: "0.1.alpha"
coverage:
  min_percent: 80
exclude_paths:
  - vendor/**/*
  - "**/*_spec.py"
"""

Timer = Callable[[], Awaitable[float]]


async def alternate(contenders: dict[str, Timer], runs: int) -> dict[str, list[float]]:
    """One warm-up each, then ``runs`` timed runs each, alternating which goes first."""
    times: dict[str, list[float]] = {name: [] for name in contenders}
    for run in range(runs + 1):
        order = list(contenders) if run % 2 else list(reversed(contenders))
        for name in order:
            seconds = await contenders[name]()
            if run:
                times[name].append(seconds)
    return times


async def run_job(services: Services, locks: Locks, name: str, **args: object) -> float:
    """Seconds job ``name`` takes, run as a worker runs it."""
    started = time.perf_counter()
    await run_here(services, locks, name, **args)
    return time.perf_counter() - started


async def scalar(services: Services, sql: str, **params: object) -> Any:
    async with services.sessions.begin() as session:
        return await session.scalar(text(sql), params)


# (a) clone --------------------------------------------------------------------------------------


async def register(services: Services, fake: FakeGitHub, sha: str) -> tuple[int, int]:
    """Repository, commit (head of ``main``); return their ids."""
    repository_id = await scalar(
        services,
        "INSERT INTO repositories (name, default_branch, token, github_id, created_at, updated_at)"
        " VALUES (:n, 'main', 'crt_bench', :g, now(), now()) RETURNING id",
        n=REPO,
        g=fake.repo(REPO).id,
    )
    commit_id = await scalar(
        services,
        "INSERT INTO commits (repository_id, sha, author_name, author_email, message,"
        " clone_status, created_at, updated_at)"
        " VALUES (:r, :s, 'Dev', 'dev@example.com', 'bench', 0, now(), now()) RETURNING id",
        r=repository_id,
        s=sha,
    )
    await scalar(
        services,
        "INSERT INTO branches (repository_id, name, head_id, created_at, updated_at)"
        " VALUES (:r, 'main', :c, now(), now()) RETURNING id",
        r=repository_id,
        c=commit_id,
    )
    return int(repository_id), int(commit_id)


def clone_contenders(
    services: Services,
    locks: Locks,
    fake: FakeGitHub,
    commit: tuple[int, str],
    scratch: Path,
) -> dict[str, Timer]:
    """The job; the storage's ``clone_commit`` alone (to attribute the job's cost); git."""
    commit_id, sha = commit
    runs = iter(range(1_000_000))

    async def ours() -> float:
        # Move the last clone aside (deleting 10,000 files would load the disk while timing).
        stored = cast(LocalStorage, services.storage).repo_path(REPO)
        if stored.exists():
            stored.rename(scratch / f"old{next(runs)}")
        await scalar(
            services,
            "UPDATE commits SET clone_status = 0 WHERE id = :id RETURNING id",
            id=commit_id,
        )
        return await run_job(services, locks, "process_commit", commit_id=commit_id)

    async def storage_only() -> float:
        token = fake.issue_installation_token()
        return await time_ours(fake, sha, token, scratch / f"s{next(runs)}")

    async def baseline() -> float:
        token = fake.issue_installation_token()
        return await time_baseline(fake, token, scratch / f"b{next(runs)}")

    return {"process_commit": ours, "clone_commit": storage_only, "git_clone": baseline}


# (b) coverage -----------------------------------------------------------------------------------


def file_lines(index: int, count: int) -> list[Line]:
    """``count`` lines: a tenth neutral, a seventh missed, the rest hit 1–50 times."""
    return [
        NEUTRAL if (index + n) % 10 == 0 else 0 if (index + n) % 7 == 0 else (n % 50) + 1
        for n in range(count)
    ]


def upload_data(files: int, lines: int) -> dict[str, str]:
    per_file, extra = divmod(lines, files)
    return {
        f"src/dir{i % 100}/file{i}.py": base64.b64encode(
            encode_lines(file_lines(i, per_file + (1 if i < extra else 0)))
        ).decode()
        for i in range(files)
    }


def coverage_contenders(
    services: Services, locks: Locks, ids: tuple[int, int], sha: str, data: dict[str, str]
) -> dict[str, Timer]:
    repository_id, commit_id = ids
    payload = json.dumps(data)
    info = "INSERT INTO coverage_infos (commit_id, status, created_at, updated_at)"
    info += " VALUES (:c, 0, now(), now()) ON CONFLICT (commit_id) DO UPDATE SET status = 0"
    info += " RETURNING id"
    report = summarize(data, excluded=parse_manifest(MANIFEST).path_excluded)

    async def ours() -> float:
        upload_id = await scalar(
            services,
            "INSERT INTO cocov_jobs_coverage_uploads (repository_id, sha, data)"
            " VALUES (:r, :s, CAST(:d AS jsonb)) RETURNING id",
            r=repository_id,
            s=sha,
            d=payload,
        )
        return await run_job(
            services,
            locks,
            "process_coverage",
            repository_id=repository_id,
            sha=sha,
            upload_id=int(upload_id),
        )

    async def baseline() -> float:
        info_id = await scalar(services, info, c=commit_id)
        records = file_records(info_id, report)
        conn = await asyncpg.connect(asyncpg_dsn(services.database_url))
        try:
            started = time.perf_counter()
            async with conn.transaction():
                await conn.copy_records_to_table(
                    "coverage_files", records=records, columns=COVERAGE_FILE_COLUMNS
                )
            seconds = time.perf_counter() - started
            await conn.execute("DELETE FROM coverage_files WHERE created_at = $1", records[0][-1])
        finally:
            await conn.close()
        return seconds

    return {"process_coverage": ours, "copy": baseline}


# Main -------------------------------------------------------------------------------------------


def summary(
    times: dict[str, list[float]], job: str, baseline: str, target: float
) -> dict[str, Any]:
    """Medians, each contender's ratio to ``baseline``, and whether ``job`` meets ``target``."""
    medians = {name: statistics.median(values) for name, values in times.items()}
    ratio = medians[job] / medians[baseline]
    return {
        "runs": {name: [round(v, 4) for v in values] for name, values in times.items()},
        "median_seconds": {name: round(v, 4) for name, v in medians.items()},
        "ratios_to_baseline": {
            name: round(v / medians[baseline], 3) for name, v in medians.items() if name != baseline
        },
        "ratio": round(ratio, 3),
        "target_ratio": target,
        "meets_target": ratio <= target,
    }


async def bench(
    args: argparse.Namespace, scratch: Path, database: str, redis: str
) -> dict[str, Any]:
    with FakeGitHub(org=ORG, tmp_dir=scratch / "fake") as fake:
        fake.add_big_repo(REPO, files=args.files, commits=args.commits)
        sha = fake.commit(REPO, {".cocov.yaml": MANIFEST}, message="Add manifest")
        settings = Settings(
            **fake.settings_fields(), git_service_local_storage_path=scratch / "storage"
        )
        async with (
            bench_database(database) as url,
            open_services(
                settings,
                registry=product_jobs.registry(),
                database_url=url,
                redis_url=redis,
                redis_cache_url=redis,
            ) as services,
        ):
            await services.redis.delete(contracts.INSTALLATION_TOKEN)  # another fake's token
            locks = connect_locks(url)
            try:
                ids = await register(services, fake, sha)
                clone = await alternate(
                    clone_contenders(services, locks, fake, (ids[1], sha), scratch), args.runs
                )
                data = upload_data(args.coverage_files, args.coverage_lines)
                coverage = await alternate(
                    coverage_contenders(services, locks, ids, sha, data), args.runs
                )
            finally:
                await locks.close()
    return {
        "clone": {
            "repository": {"files": args.files, "commits": args.commits + 1},
            **summary(clone, "process_commit", "git_clone", CLONE_TARGET),
        },
        "coverage": {
            "upload": {
                "files": args.coverage_files,
                "lines": args.coverage_lines,
                "base64_bytes": sum(len(v) for v in data.values()),
            },
            **summary(coverage, "process_coverage", "copy", COVERAGE_TARGET),
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=10_000)
    parser.add_argument("--commits", type=int, default=2_000)
    parser.add_argument("--coverage-files", type=int, default=5_000)
    parser.add_argument("--coverage-lines", type=int, default=2_000_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--scratch", type=Path, default=None, help="where clones are written")
    args = parser.parse_args()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(30))
    info = machine()
    print("Machine: " + ", ".join(f"{k}={v}" for k, v in info.items()), flush=True)
    with (
        tempfile.TemporaryDirectory(prefix="bench-pipeline-", dir=args.scratch) as tmp,
        stores(
            database_url=os.environ.get("COCOV_TEST_DATABASE_URL") or None,
            redis_url=os.environ.get("COCOV_TEST_REDIS_URL", ""),
            redis_cache_url="",
            data_dir=Path(tmp) / "stores",
        ) as found,
    ):
        print(f"Stores: embedded {found.embedded or 'none'}", flush=True)
        result = asyncio.run(bench(args, Path(tmp), found.database_url, found.redis_url))
    document = {
        "timestamp": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": info,
        "stores": "embedded" if found.embedded else "COCOV_TEST_DATABASE_URL/REDIS_URL",
        **result,
    }
    for part, job in (("clone", "process_commit"), ("coverage", "process_coverage")):
        figures = result[part]
        print(
            f"{part}: {job} median {figures['median_seconds'][job]:.3f}s,"
            f" ratio {figures['ratio']:.2f}x (target <= {figures['target_ratio']}x:"
            f" {'met' if figures['meets_target'] else 'MISSED'})"
        )
    RESULTS_PATH.parent.mkdir(parents=True, exist_ok=True)
    RESULTS_PATH.write_text(json.dumps(document, indent=2) + "\n")
    print(f"written {RESULTS_PATH}")


if __name__ == "__main__":
    main()
