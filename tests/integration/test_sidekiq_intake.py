"""The Sidekiq intake, fed by Ruby's own clients: Cocov's ten jobs enqueued with
``perform_later`` through ActiveJob's Sidekiq adapter become our jobs and have their effects;
other wire formats, scheduled jobs, bad payloads, replays after a crash, and the import of
Sidekiq's ``retry`` and ``dead`` sets."""

from __future__ import annotations

import json
import time
from pathlib import Path

import httpx
import pytest
import redis.asyncio as aioredis
from sqlalchemy import text
from tests.support.helpers import drain, insert, insert_repository, job_log, jobs, service_token
from tests.support.pipeline import (
    AUTHOR_EMAIL,
    CRYPTO_KEY,
    UI,
    artifacts_over_quota,
    push_repository,
    row,
    rows,
)
from tests.support.settings import make_settings
from tests.support.sidekiq import enqueue_ruby

from cocov_jobs import contracts
from cocov_jobs.config import Settings
from cocov_jobs.db.models import CloneStatus, CoverageStatus
from cocov_jobs.engine import admin
from cocov_jobs.engine.metrics import REGISTRY
from cocov_jobs.services import Services
from cocov_jobs.sidekiq import leftovers
from cocov_jobs.sidekiq.intake import INFLIGHT_PREFIX, PROCESSES, SCHEDULE, Intake
from cocov_jobs.testing import FakeGitHub
from cocov_jobs.testing.coverage import covered
from cocov_jobs.web.app import create_app

DATA = Path(__file__).parent.parent / "data" / "sidekiq"
FILES = {
    ".cocov.yaml": 'version: "0.1.alpha"\nchecks:\n  - plugin: cocov/rubocop:v1\n',
    "lib/a.rb": "1\n2\n3\n4\n",
}
#: ``COCOV_REPOSITORY_CACHE_MAX_SIZE`` (bytes) of these tests: three artifacts of 60 exceed it.
CACHE_QUOTA = 100


@pytest.fixture
def settings(fake_github: FakeGitHub, tmp_path: Path, redis_url: str) -> Settings:
    return make_settings(
        **fake_github.settings_fields(),
        git_service_local_storage_path=tmp_path / "storage",
        cryptographic_key=CRYPTO_KEY,
        ui_base_url=UI,
        repository_cache_max_size=CACHE_QUOTA,
        cache_service_url="http://127.0.0.1:9/cache",
        sidekiq_redis_url=redis_url,
    )


async def take_in(services: Services) -> int:
    """Everything waiting in Sidekiq's Redis, taken in by one intake."""
    return await Intake(services).drain()


async def sidekiq_keys(redis: aioredis.Redis) -> list[bytes]:
    """Sidekiq and intake keys left in Redis (Sidekiq's ``queues`` set aside)."""
    keys = await redis.keys("queue:*") + await redis.keys("cocov-jobs:intake:*")
    return sorted(keys + [k for k in (SCHEDULE.encode(),) if await redis.exists(k)])


async def test_the_ten_jobs_enqueued_by_activejob_run_with_their_effects(
    services: Services, fake_github: FakeGitHub, redis: aioredis.Redis, redis_url: str
) -> None:
    fake = fake_github
    # ProcessCommitJob, ProcessCoverageJob: a registered commit of a repository on the fake.
    web = await push_repository(services, fake, FILES)
    # InitializeRepositoryJob: a repository on the fake, no commit yet.
    fake.add_repo("init", files={**FILES, "README.md": "another commit\n"})
    init = await insert_repository(services, "init", github_id=fake.repo("init").id)
    # ComputeRepositoryCommitsSizeJob, UpdateCommitsAuthorJob: a cloned commit of a repository
    # nobody processes, authored by the user below.
    sizes = await insert_repository(services, "sizes")
    sized = await insert(
        services,
        "commits",
        repository_id=sizes,
        sha="c" * 40,
        author_name="Dev",
        author_email=AUTHOR_EMAIL.upper(),
        message="m",
        clone_status=2,
        clone_size=123,
    )
    dev = await insert(services, "users", login="dev", github_id=501, github_token="t", admin=False)
    await insert(services, "user_emails", user_id=dev, email="dev@example.com")
    # RequestCacheEvictionJob: three artifacts of 60 bytes over a quota of 100.
    cached = await insert_repository(services, "cached")
    await artifacts_over_quota(services, cached)
    # DestroyRepositoryJob: a repository with nothing else.
    gone = await insert_repository(services, "gone")
    # UpdateRepoPermissionsJob: collaborators on the fake.
    (perm_remote,) = fake.add_repos(1)
    fake.add_collaborator(perm_remote.name, 1, "ada", "admin")
    fake.add_collaborator(perm_remote.name, 2, "bob", "write")
    perm = await insert_repository(services, perm_remote.name, github_id=perm_remote.id)
    # UpdateUserPermissionsJob: a user whose token sees one repository as admin.
    token = fake.add_user("eve", 777)
    eve = await insert(
        services, "users", login="eve", github_id=777, github_token=token, admin=False
    )
    fake.grant("eve", perm_remote.name, "admin")
    data = json.dumps({"lib/a.rb": covered(3, 1)})

    jids = await enqueue_ruby(
        redis_url,
        [
            {"class": "ComputeRepositoryCommitsSizeJob", "args": [sizes]},
            {"class": "DestroyRepositoryJob", "args": [gone]},
            {"class": "InitializeRepositoryJob", "args": [init]},
            {"class": "ProcessCommitJob", "args": [web.commit_id]},
            {"class": "ProcessCoverageJob", "args": [web.repository_id, web.sha, data]},
            {"class": "RequestCacheEvictionJob", "args": [cached]},
            {"class": "UpdateCommitsAuthorJob", "args": [dev]},
            {"class": "UpdateOrganizationReposJob", "args": []},
            {"class": "UpdateRepoPermissionsJob", "args": [perm]},
            {"class": "UpdateUserPermissionsJob", "args": [eve]},
        ],
    )
    assert await take_in(services) == 10
    assert await sidekiq_keys(redis) == []
    async with services.engine.connect() as conn:
        taken = set(await conn.scalars(text("SELECT key FROM cocov_jobs_sidekiq_taken")))
    assert taken == set(jids)
    await drain(services)
    assert [j for j in await jobs(services) if j["status"] == "failed"] == []

    size = await row(services, "SELECT commits_size FROM repositories WHERE id = :r", r=sizes)
    assert size == {"commits_size": 123}
    assert await row(services, "SELECT id FROM repositories WHERE id = :r", r=gone) is None
    head = await row(
        services,
        "SELECT c.sha, c.clone_status FROM branches b JOIN commits c ON c.id = b.head_id"
        " WHERE b.repository_id = :r AND b.name = 'main'",
        r=init,
    )
    assert head == {"sha": fake.head("init"), "clone_status": CloneStatus.completed}
    commit = await row(services, "SELECT clone_status FROM commits WHERE id = :c", c=web.commit_id)
    assert commit == {"clone_status": CloneStatus.completed}
    descriptors = [json.loads(d) for d in await redis.lrange(contracts.CHECKS_QUEUE, 0, -1)]
    assert sorted(d["sha"] for d in descriptors) == sorted([web.sha, fake.head("init")])
    assert {s["context"] for s in fake.statuses(web.name, web.sha)} >= {"cocov"}
    coverage = await row(
        services,
        "SELECT ci.status, ci.percent_covered FROM coverage_infos ci WHERE ci.commit_id = :c",
        c=web.commit_id,
    )
    assert coverage == {"status": CoverageStatus.completed, "percent_covered": 75.0}
    tasks = [json.loads(t) for t in await redis.lrange(contracts.HOUSEKEEPING_QUEUE, 0, -1)]
    assert {"evict-artifact"} <= {t["task"] for t in tasks if t.get("repository") == cached}
    linked = await row(services, "SELECT user_id FROM commits WHERE id = :c", c=sized)
    assert linked == {"user_id": dev}
    assert await services.cache_redis.exists(contracts.ORG_REPOS_ITEMS)
    members = await rows(
        services,
        "SELECT github_member_id, level FROM repository_members WHERE repository_id = :r"
        " ORDER BY github_member_id",
        r=perm,
    )
    assert [m["github_member_id"] for m in members] == [1, 2, 777]


@pytest.mark.parametrize(
    "fixture",
    [
        "rails_6_1_adapter.json",
        "sidekiq_7_3_wrapper.json",
        "sidekiq_8_milliseconds.json",
        "plain_sidekiq.json",
    ],
)
async def test_every_wire_format_becomes_the_job(
    services: Services, redis: aioredis.Redis, fixture: str
) -> None:
    await redis.lpush("queue:default", (DATA / fixture).read_bytes())
    assert await take_in(services) == 1
    (job,) = await jobs(services)
    assert (job["entrypoint"], job["args"], job["status"]) == (
        "process_commit",
        {"commit_id": 42},
        "queued",
    )


async def test_plain_sidekiq_client_and_other_queues_are_taken_in(
    services: Services, redis: aioredis.Redis, redis_url: str
) -> None:
    settings = services.settings.model_copy(update={"sidekiq_queues": "critical,default"})
    services.settings = settings
    await enqueue_ruby(redis_url, [{"class": "ProcessCommitJob", "args": [7], "plain": True}])
    await redis.lpush(
        "queue:critical", json.dumps({"class": "UpdateCommitsAuthorJob", "args": [3], "jid": "c"})
    )
    await redis.lpush("queue:other", json.dumps({"class": "ProcessCommitJob", "args": [9]}))
    assert await take_in(services) == 2
    assert sorted((j["entrypoint"], j["args"]) for j in await jobs(services)) == [
        ("process_commit", {"commit_id": 7}),
        ("update_commits_author", {"user_id": 3}),
    ]
    assert await redis.llen("queue:other") == 1  # not a queue we take in
    async with services.engine.connect() as conn:
        origins = await conn.scalars(text("SELECT enqueued_by FROM cocov_jobs_job_origins"))
        assert "sidekiq:c" in set(origins)  # what enqueued each job: its Sidekiq jid


async def test_scheduled_jobs_become_jobs_due_at_their_time(
    services: Services, redis: aioredis.Redis, redis_url: str
) -> None:
    await enqueue_ruby(redis_url, [{"class": "ProcessCommitJob", "args": [5], "wait": 3600}])
    # Sidekiq 8: score in float seconds too, payload times in milliseconds; due a minute ago.
    past = json.loads((DATA / "sidekiq_8_milliseconds.json").read_text())
    past["args"][0]["arguments"] = [6]
    await redis.zadd(SCHEDULE, {json.dumps(past): time.time() - 60})
    assert await take_in(services) == 2
    assert await redis.exists(SCHEDULE) == 0
    async with services.engine.connect() as conn:
        due = dict(
            (
                await conn.execute(
                    text(
                        "SELECT convert_from(payload, 'UTF8')::json->>'commit_id',"
                        " extract(epoch FROM execute_after - now()) FROM pgqueuer"
                    )
                )
            ).all()
        )
    assert 3590 < due["5"] <= 3600
    assert due["6"] <= 0


async def test_bad_payloads_are_kept_with_the_reason_and_the_queue_goes_on(
    services: Services, redis: aioredis.Redis, redis_url: str
) -> None:
    await enqueue_ruby(redis_url, [{"class": "HardWorker", "args": [1], "plain": True}])
    await redis.lpush("queue:default", b"{not json")
    await redis.lpush(
        "queue:default",
        json.dumps({"class": "ProcessCoverageJob", "args": [1, "a" * 40, '{"../x": "MQ=="}']}),
    )
    await enqueue_ruby(redis_url, [{"class": "ProcessCommitJob", "args": [8]}])
    before = {
        reason: _sample("cocov_jobs_sidekiq_kept_total", reason=reason)
        for reason in ("unknown_class", "invalid_json", "invalid_arguments")
    }
    assert await take_in(services) == 4
    failed = await admin.list_jobs(services, state="failed")
    reasons = sorted(r.error_text for r in failed)
    assert reasons == [
        "PayloadError: 'HardWorker' is not one of Cocov's jobs",
        "PayloadError: ProcessCoverageJob: Invalid coverage file path '../x': empty, '.' or '..'"
        " component",
        "PayloadError: not JSON: Expecting property name enclosed in double quotes: line 1"
        " column 2 (char 1)",
    ]
    assert {r.job for r in failed} == {"sidekiq_payload"}
    assert b"{not json" in {r.arguments["payload"].encode() for r in failed}
    queued = [j for j in await jobs(services) if j["status"] == "queued"]
    assert [(j["entrypoint"], j["args"]) for j in queued] == [("process_commit", {"commit_id": 8})]
    for reason, count in before.items():
        assert _sample("cocov_jobs_sidekiq_kept_total", reason=reason) == count + 1


async def test_a_payload_that_breaks_its_batch_is_kept_and_the_others_are_taken(
    services: Services, redis: aioredis.Redis, redis_url: str
) -> None:
    # An id beyond PostgreSQL's bigint fails the batch's transaction; stored one by one, the
    # others go in and this one is kept with the database's error.
    await enqueue_ruby(
        redis_url,
        [
            {"class": "ProcessCommitJob", "args": [1]},
            {"class": "ProcessCoverageJob", "args": [2**70, "e" * 40, '{"a.rb": "MQ=="}']},
            {"class": "ProcessCommitJob", "args": [2]},
        ],
    )
    assert await take_in(services) == 3
    assert await sidekiq_keys(redis) == []
    (kept,) = await admin.list_jobs(services, state="failed")
    assert kept.error_text.startswith("PayloadError: could not be stored: DBAPIError(")
    queued = sorted(j["args"]["commit_id"] for j in await jobs(services) if j["status"] == "queued")
    assert queued == [1, 2]


async def test_a_kept_payload_runs_once_what_stopped_it_is_fixed(
    services: Services, redis: aioredis.Redis, redis_url: str
) -> None:
    pushed_sha = "d" * 40
    data = json.dumps({"lib/a.rb": covered(1, 1)})
    await enqueue_ruby(
        redis_url, [{"class": "ProcessCoverageJob", "args": [4242, pushed_sha, data]}]
    )
    assert await take_in(services) == 1
    (kept,) = await admin.list_jobs(services, state="failed")
    assert kept.error_text == ("PayloadError: ProcessCoverageJob: repository 4242 does not exist")
    async with services.sessions.begin() as session:
        await session.execute(
            text(
                "INSERT INTO repositories (id, name, default_branch, token, github_id,"
                " created_at, updated_at) VALUES (4242, 'late', 'main', 't', 1, now(), now())"
            )
        )
    assert await admin.retry(services, kept.id)
    await drain(services, horizon=0)
    assert await admin.list_jobs(services, state="failed") == []
    held = await services.redis.get(contracts.deferred_coverage_key(4242, pushed_sha))
    assert held is not None and json.loads(held) == json.loads(data)


async def test_a_payload_replayed_after_its_commit_inserts_nothing(
    services: Services, redis: aioredis.Redis, redis_url: str
) -> None:
    (jid,) = await enqueue_ruby(redis_url, [{"class": "ProcessCommitJob", "args": [11]}])
    payload = await redis.lindex("queue:default", 0)
    assert await take_in(services) == 1
    # A process killed after its commit, before its acknowledgement, left the payload in its
    # in-flight list; it has no heartbeat any more.
    await redis.sadd(PROCESSES, "dead-host:1:abc")
    await redis.lpush(INFLIGHT_PREFIX + "dead-host:1:abc", payload)
    # And one killed before its commit left another payload.
    (other,) = await enqueue_ruby(redis_url, [{"class": "ProcessCommitJob", "args": [12]}])
    await redis.rpoplpush("queue:default", INFLIGHT_PREFIX + "dead-host:1:abc")
    assert await take_in(services) == 2
    assert await sidekiq_keys(redis) == []
    assert await redis.smembers(PROCESSES) == set()
    assert sorted(j["args"]["commit_id"] for j in await jobs(services)) == [11, 12]
    async with services.engine.connect() as conn:
        assert set(await conn.scalars(text("SELECT key FROM cocov_jobs_sidekiq_taken"))) == {
            jid,
            other,
        }


async def test_a_live_process_keeps_its_payloads_in_flight(
    services: Services, redis: aioredis.Redis, redis_url: str
) -> None:
    await redis.set("cocov-jobs:intake:heartbeat:busy:1:abc", "busy:1:abc", px=30_000)
    await redis.sadd(PROCESSES, "busy:1:abc")
    await redis.lpush(INFLIGHT_PREFIX + "busy:1:abc", b'{"class": "ProcessCommitJob"}')
    assert await take_in(services) == 0
    assert await redis.llen(INFLIGHT_PREFIX + "busy:1:abc") == 1


async def test_sidekiq_import_moves_retry_and_dead_sets_once(
    services: Services, redis: aioredis.Redis, redis_url: str
) -> None:
    retried, dead = await enqueue_ruby(
        redis_url,
        [
            {
                "class": "ProcessCommitJob",
                "args": [21],
                "fail": "retry",
                "retry_count": 2,
                "error": "clone failed",
            },
            {
                "class": "DestroyRepositoryJob",
                "args": [22],
                "fail": "dead",
                "retry_count": 24,
                "error": "it is\u0000gone",
            },
        ],
    )
    await redis.zadd("dead", {b'{"class": "HardWorker", "args": [], "jid": "zz"}': time.time()})
    (retry_at,) = [score for _, score in await redis.zrange("retry", 0, -1, withscores=True)]
    preview = await leftovers.preview(services)
    assert [(e.source, e.payload.key) for e in preview] == [
        ("retry", retried),
        ("dead", dead),
        ("dead", "zz"),
    ]
    assert await redis.zcard("retry") == 1  # a dry run changes nothing

    moved = await leftovers.move(services)
    assert (moved.taken, moved.kept, moved.replayed) == (
        {"retry": 1, "dead": 1},
        {"retry": 0, "dead": 1},
        {"retry": 0, "dead": 0},
    )
    assert await redis.exists("retry", "dead") == 0
    by_job = {j["entrypoint"]: j for j in await jobs(services)}
    commit = by_job["process_commit"]
    # Sidekiq counts retries: retry_count 3 (2 given, plus this failure) is 4 failed runs.
    assert (commit["args"], commit["status"], commit["attempts"]) == (
        {"commit_id": 21},
        "queued",
        4,
    )
    assert commit["execute_after"].timestamp() == pytest.approx(retry_at, abs=1)
    (last,) = [r for r in await job_log(services, commit["id"]) if r["traceback"]]
    assert (last["status"], last["traceback"]["exception_type"]) == ("queued", "ArgumentError")
    assert last["traceback"]["exception_message"] == "clone failed"
    destroy = by_job["destroy_repository"]
    # Dead after Sidekiq's default 25 retries: 26 failed runs.
    assert (destroy["args"], destroy["status"], destroy["attempts"]) == (
        {"repository_id": 22},
        "failed",
        26,
    )
    failed = {r.job: r.error_text for r in await admin.list_jobs(services, state="failed")}
    assert failed == {
        "destroy_repository": "ArgumentError: it is\N{REPLACEMENT CHARACTER}gone",
        "sidekiq_payload": "PayloadError: 'HardWorker' is not one of Cocov's jobs",
    }

    # Interrupted after its commit, before the sets were emptied: run again, nothing doubles.
    await redis.zadd(
        "retry", {json.dumps({"class": "ProcessCommitJob", "args": [21], "jid": retried}): 1}
    )
    again = await leftovers.move(services)
    assert (again.taken["retry"], again.replayed["retry"]) == (0, 1)
    assert len(await jobs(services)) == 3


async def test_metrics_and_readiness_show_the_intake(
    services: Services, redis: aioredis.Redis, redis_url: str
) -> None:
    await enqueue_ruby(
        redis_url,
        [
            {"class": "ProcessCommitJob", "args": [31]},
            {"class": "ProcessCommitJob", "args": [32], "wait": 600},
        ],
    )
    await redis.sadd(PROCESSES, "gone:1:x")
    await redis.lpush(INFLIGHT_PREFIX + "gone:1:x", b"{}", b"{}")
    before = _sample("cocov_jobs_sidekiq_taken_total", ruby_class="ProcessCommitJob")
    transport = httpx.ASGITransport(app=create_app(services))
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        text_ = (await client.get("/metrics")).text
        assert 'cocov_jobs_sidekiq_waiting{queue="default"} 1.0' in text_
        assert 'cocov_jobs_sidekiq_waiting{queue="schedule"} 1.0' in text_
        assert "cocov_jobs_sidekiq_inflight 2.0" in text_
        lag = _sample("cocov_jobs_sidekiq_intake_lag_seconds")
        assert 0 <= lag < 60
        ready = (await client.get("/system/probes/readiness")).json()
        assert ready["checks"]["sidekiq_redis"] is True
        headers = {"Authorization": f"bearer {await service_token(services)}"}
        overview = (await client.get("/dashboard", headers=headers)).text
        assert "Sidekiq intake" in overview
        assert "queue:default<b>1</b>" in overview and "in flight<b>2</b>" in overview
        await redis.delete(INFLIGHT_PREFIX + "gone:1:x")
        await take_in(services)
        text_ = (await client.get("/metrics")).text
        assert 'cocov_jobs_sidekiq_waiting{queue="default"} 0.0' in text_
        assert "cocov_jobs_sidekiq_intake_lag_seconds 0.0" in text_
    assert _sample("cocov_jobs_sidekiq_taken_total", ruby_class="ProcessCommitJob") == before + 2


async def test_readiness_is_503_when_sidekiqs_redis_is_down(services: Services) -> None:
    assert services.sidekiq_redis is not None
    await services.sidekiq_redis.aclose()
    services.sidekiq_redis = aioredis.Redis.from_url("redis://127.0.0.1:9/0")
    transport = httpx.ASGITransport(app=create_app(services))
    headers = {"Authorization": f"bearer {await service_token(services)}"}
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        answer = await client.get("/system/probes/readiness")
        overview = await client.get("/dashboard", headers=headers)
    assert answer.status_code == 503
    assert answer.json()["checks"]["sidekiq_redis"] is False
    assert overview.status_code == 200
    assert "Sidekiq&#39;s Redis cannot be read (ConnectionError)" in overview.text


def _sample(name: str, **labels: str) -> float:
    value = REGISTRY.get_sample_value(name, labels)
    return value if value is not None else 0.0
