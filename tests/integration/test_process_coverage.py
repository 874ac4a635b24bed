"""``process_coverage`` and ``post_coverage_status`` end to end (docs/architecture.md §5.5, §7.8):
manifests, minimums, exclusions, rejected files, idempotent history, status retries, a clone
shared with ``process_commit``, and S3 storage. Real git (GitHub fake), PostgreSQL, Redis.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest
import redis.asyncio as aioredis
from tests.support.helpers import drain, jobs
from tests.support.pipeline import (
    UI,
    Pushed,
    enqueue,
    push_repository,
    row,
    rows,
    run_job,
    settings,
    store_upload,
)

from cocov_jobs import contracts
from cocov_jobs.db.models import CheckSetStatus, CloneStatus, CoverageStatus
from cocov_jobs.services import Services
from cocov_jobs.testing import FakeGitHub
from cocov_jobs.testing.coverage import covered

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

__all__ = ["settings"]

#: 33 of 35 lines covered: 94.2857… %.
UPLOAD = {"lib/a.rb": covered(30, 2), "lib/b.rb": covered(3, 0)}
MANIFEST = 'version: "0.1.alpha"\n'
#: Path of the git request that starts every fetch.
GIT_REFS = r"/web\.git/info/refs"
#: Bucket of the S3 test (moto's server lives for the whole session).
BUCKET = "pipeline-clones"


async def process(services: Services, pushed: Pushed, data: dict[str, Any]) -> int:
    upload_id = await store_upload(services, pushed, data)
    await run_job(
        services,
        "process_coverage",
        repository_id=pushed.repository_id,
        sha=pushed.sha,
        upload_id=upload_id,
    )
    return upload_id


async def coverage(services: Services, pushed: Pushed) -> dict[str, Any]:
    found = await row(
        services,
        "SELECT i.status, i.lines_total, i.lines_covered, i.percent_covered,"
        " c.coverage_percent, c.minimum_coverage FROM coverage_infos i"
        " JOIN commits c ON c.id = i.commit_id WHERE i.commit_id = :id",
        id=pushed.commit_id,
    )
    assert found is not None
    return found


def coverage_statuses(fake: FakeGitHub, pushed: Pushed) -> list[tuple[str, str]]:
    return [
        (s["state"], s["description"])
        for s in fake.statuses(pushed.name, pushed.sha)
        if s["context"] == "cocov/coverage"
    ]


async def history(services: Services, pushed: Pushed) -> list[dict[str, Any]]:
    return await rows(
        services,
        "SELECT b.name, h.percentage FROM coverage_histories h"
        " JOIN branches b ON b.id = h.branch_id WHERE h.repository_id = :r ORDER BY b.name",
        r=pushed.repository_id,
    )


async def test_coverage_without_manifest_is_recorded_and_reported(
    services: Services, fake_github: FakeGitHub
) -> None:
    pushed = await push_repository(
        services, fake_github, {"README.md": "hi"}, branches=("main", "release")
    )
    await process(services, pushed, UPLOAD)

    info = await coverage(services, pushed)
    assert info["status"] == CoverageStatus.completed
    assert (info["lines_total"], info["lines_covered"]) == (35, 33)
    assert info["percent_covered"] == pytest.approx(33 / 35 * 100)
    assert (info["coverage_percent"], info["minimum_coverage"]) == (94, None)
    files = await rows(
        services,
        "SELECT file, lines_total, lines_covered, lines_missed, percent_covered"
        " FROM coverage_files ORDER BY file",
    )
    assert files == [
        {
            "file": "lib/a.rb",
            "lines_total": 32,
            "lines_covered": 30,
            "lines_missed": 2,
            "percent_covered": 93,
        },
        {
            "file": "lib/b.rb",
            "lines_total": 3,
            "lines_covered": 3,
            "lines_missed": 0,
            "percent_covered": 100,
        },
    ]
    assert [h["name"] for h in await history(services, pushed)] == ["main", "release"]
    branches = await rows(services, "SELECT coverage FROM branches")
    assert branches == [{"coverage": 94}, {"coverage": 94}]
    [status] = fake_github.statuses(pushed.name, pushed.sha)
    assert (status["state"], status["context"], status["description"]) == (
        "success",
        "cocov/coverage",
        "94.29% covered",
    )
    assert status["target_url"] == f"{UI}/repos/web/commits/{pushed.sha}/coverage"


@pytest.mark.parametrize(
    ("section", "expected"),
    [
        (
            "coverage:\n  min_percent: 95\n",
            ("failure", "94.29% covered (at least 95% is required)"),
        ),
        ("coverage:\n  min_percent: 94\n", ("success", "94.29% covered")),
        ("coverage: {}\n", ("success", "94.29% covered")),
        ("", ("success", "94.29% covered")),
    ],
    ids=["below-minimum", "at-minimum", "empty-section", "no-section"],
)
async def test_manifest_minimum_decides_the_status(
    services: Services, fake_github: FakeGitHub, section: str, expected: tuple[str, str]
) -> None:
    pushed = await push_repository(services, fake_github, {".cocov.yaml": MANIFEST + section})
    await process(services, pushed, UPLOAD)

    assert coverage_statuses(fake_github, pushed) == [expected]
    minimum = (await coverage(services, pushed))["minimum_coverage"]
    assert minimum == (int(section.split(": ")[-1]) if "min_percent" in section else None)


async def test_all_files_excluded_is_zero_percent(
    services: Services, fake_github: FakeGitHub
) -> None:
    manifest = MANIFEST + "exclude_paths:\n  - lib/\n"
    pushed = await push_repository(services, fake_github, {".cocov.yaml": manifest})
    await process(services, pushed, UPLOAD)

    info = await coverage(services, pushed)
    assert (info["status"], info["lines_total"], info["percent_covered"]) == (
        CoverageStatus.completed,
        0,
        0.0,
    )
    assert await rows(services, "SELECT id FROM coverage_files") == []
    assert coverage_statuses(fake_github, pushed) == [("success", "0.0% covered")]


async def test_traversal_path_is_rejected_and_the_rest_processed(
    services: Services, fake_github: FakeGitHub
) -> None:
    pushed = await push_repository(services, fake_github, {"README.md": "hi"})
    upload_id = await process(
        services, pushed, {"../../etc/passwd": covered(1, 0), "lib/b.rb": covered(3, 1)}
    )

    assert [f["file"] for f in await rows(services, "SELECT file FROM coverage_files")] == [
        "lib/b.rb"
    ]
    result = await row(
        services,
        "SELECT rejected FROM cocov_jobs_coverage_results WHERE upload_id = :id",
        id=upload_id,
    )
    assert result is not None
    [rejected] = result["rejected"]
    assert rejected["file"] == "../../etc/passwd"
    assert "'..' component" in rejected["reason"]
    assert coverage_statuses(fake_github, pushed) == [("success", "75.0% covered")]


async def test_running_an_upload_twice_records_it_once(
    services: Services, fake_github: FakeGitHub
) -> None:
    pushed = await push_repository(services, fake_github, {"README.md": "hi"})
    upload_id = await process(services, pushed, UPLOAD)
    await run_job(
        services,
        "process_coverage",
        repository_id=pushed.repository_id,
        sha=pushed.sha,
        upload_id=upload_id,
    )

    assert len(await history(services, pushed)) == 1
    assert len(coverage_statuses(fake_github, pushed)) == 1
    assert len(await rows(services, "SELECT id FROM coverage_files")) == 2


async def test_an_older_upload_is_superseded_by_a_newer_one(
    services: Services, fake_github: FakeGitHub
) -> None:
    pushed = await push_repository(services, fake_github, {"README.md": "hi"})
    older = await store_upload(services, pushed, {"lib/a.rb": covered(1, 1)})
    await store_upload(services, pushed, UPLOAD)
    await run_job(
        services,
        "process_coverage",
        repository_id=pushed.repository_id,
        sha=pushed.sha,
        upload_id=older,
    )

    assert await history(services, pushed) == []
    assert coverage_statuses(fake_github, pushed) == []


async def test_status_failure_is_retried_alone_and_never_flips_coverage(
    services: Services, fake_github: FakeGitHub
) -> None:
    pushed = await push_repository(services, fake_github, {"README.md": "hi"})
    fake_github.fail_next("POST", "/statuses/", 502)
    await process(services, pushed, UPLOAD)

    assert (await coverage(services, pushed))["status"] == CoverageStatus.completed
    assert coverage_statuses(fake_github, pushed) == [("success", "94.29% covered")]
    assert len(await history(services, pushed)) == 1
    retried = await rows(
        services,
        "SELECT entrypoint, count(*) AS runs FROM pgqueuer_log WHERE status = 'picked'"
        " AND entrypoint LIKE '%coverage%' GROUP BY entrypoint ORDER BY entrypoint",
    )
    assert retried == [
        {"entrypoint": "post_coverage_status", "runs": 2},
        {"entrypoint": "process_coverage", "runs": 1},
    ]


async def test_status_refused_for_good_leaves_coverage_completed(
    services: Services, fake_github: FakeGitHub
) -> None:
    pushed = await push_repository(services, fake_github, {"README.md": "hi"})
    fake_github.fail_next("POST", "/statuses/", 404)
    await process(services, pushed, UPLOAD)

    assert (await coverage(services, pushed))["status"] == CoverageStatus.completed
    [failed] = await jobs(services)
    assert (failed["entrypoint"], failed["status"]) == ("post_coverage_status", "failed")


async def test_invalid_manifest_fails_coverage_for_good(
    services: Services, fake_github: FakeGitHub
) -> None:
    pushed = await push_repository(services, fake_github, {".cocov.yaml": "version: 1\n"})
    await process(services, pushed, UPLOAD)

    assert (await coverage(services, pushed))["status"] == CoverageStatus.errored
    [failed] = await jobs(services)
    assert (failed["entrypoint"], failed["status"], failed["attempts"]) == (
        "process_coverage",
        "failed",
        0,
    )


async def test_transient_clone_failure_keeps_coverage_in_progress_until_it_succeeds(
    services: Services, fake_github: FakeGitHub
) -> None:
    pushed = await push_repository(services, fake_github, {"README.md": "hi"})
    fake_github.fail_next(None, GIT_REFS, 502)
    await process(services, pushed, UPLOAD)

    assert (await coverage(services, pushed))["status"] == CoverageStatus.completed
    assert coverage_statuses(fake_github, pushed) == [("success", "94.29% covered")]


async def test_unregistered_commit_fails_and_missing_upload_is_a_no_op(
    services: Services, fake_github: FakeGitHub
) -> None:
    pushed = await push_repository(services, fake_github, {"README.md": "hi"})
    other = Pushed(pushed.repository_id, pushed.name, "c" * 40, pushed.commit_id)
    upload_id = await store_upload(services, other, UPLOAD)
    await enqueue(
        services,
        "process_coverage",
        repository_id=pushed.repository_id,
        sha=other.sha,
        upload_id=upload_id,
    )
    await enqueue(
        services,
        "process_coverage",
        repository_id=pushed.repository_id,
        sha=pushed.sha,
        upload_id=upload_id + 1,
    )
    await drain(services)

    [failed] = await jobs(services)
    assert failed["args"]["sha"] == other.sha and failed["status"] == "failed"


async def test_commit_cloned_concurrently_by_both_jobs_is_cloned_once(
    services: Services, fake_github: FakeGitHub, redis: aioredis.Redis
) -> None:
    pushed = await push_repository(
        services, fake_github, {".cocov.yaml": MANIFEST + "checks:\n  - plugin: a/b:c\n"}
    )
    upload_id = await store_upload(services, pushed, UPLOAD)
    fake_github.delay_next(GIT_REFS, 1.0)  # the first clone holds the lock a while
    await enqueue(services, "process_commit", commit_id=pushed.commit_id)
    await enqueue(
        services,
        "process_coverage",
        repository_id=pushed.repository_id,
        sha=pushed.sha,
        upload_id=upload_id,
    )
    await drain(services, concurrency=4)

    fetches = [r for r in fake_github.requests if r.path.endswith("/web.git/info/refs")]
    assert len(fetches) == 1
    picks = await rows(
        services,
        "SELECT job_id FROM pgqueuer_log WHERE status = 'picked'"
        " AND entrypoint IN ('process_commit', 'process_coverage')",
    )
    assert len(picks) == 3, "one job found the clone in progress and was re-queued"
    state = await row(
        services,
        "SELECT c.clone_status, s.status AS check_set FROM commits c"
        " JOIN check_sets s ON s.commit_id = c.id WHERE c.id = :id",
        id=pushed.commit_id,
    )
    assert state == {"clone_status": CloneStatus.completed, "check_set": CheckSetStatus.queued}
    assert (await coverage(services, pushed))["status"] == CoverageStatus.completed
    assert await jobs(services) == []
    assert await redis.llen(contracts.CHECKS_QUEUE) == 1


@pytest.mark.parametrize(
    "settings",
    [{"git_service_storage_mode": "s3", "git_service_s3_storage_bucket_name": BUCKET}],
    indirect=True,
    ids=["s3"],
)
async def test_pipeline_on_s3_storage(
    services: Services,
    fake_github: FakeGitHub,
    redis: aioredis.Redis,
    s3: S3Client,
    aws_env: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", aws_env)
    s3.create_bucket(Bucket=BUCKET)
    manifest = MANIFEST + "coverage:\n  min_percent: 95\nchecks:\n  - plugin: a/b:c\n"
    pushed = await push_repository(services, fake_github, {".cocov.yaml": manifest})
    await run_job(services, "process_commit", commit_id=pushed.commit_id)
    await process(services, pushed, UPLOAD)

    descriptor = await redis.lindex(contracts.CHECKS_QUEUE, 0)
    assert descriptor is not None
    storage_path = services.storage.commit_path(pushed.name, pushed.sha)
    assert f'"git_storage":{{"mode":"s3","path":"{storage_path}"}}'.encode() in descriptor
    assert storage_path.endswith(f"/{pushed.sha}") and not storage_path.startswith("/")
    keys = {o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET).get("Contents", [])}
    assert f"{storage_path}.tar.zst.shasum" in keys
    assert coverage_statuses(fake_github, pushed) == [
        ("failure", "94.29% covered (at least 95% is required)")
    ]
