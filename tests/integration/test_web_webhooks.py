"""``POST /v1/github/events`` over real HTTP with GitHub's payloads: checks, deliveries, every
row of the handler table, and handler failures retried by the engine."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import text
from tests.support.helpers import drain, insert, job_log, jobs
from tests.support.logs import JsonLogs
from tests.support.web import (
    DATA,
    closed_port,
    deliver,
    fixture_repository,
    payload,
    services_at,
    webhook_settings,
)

from cocov_jobs import contracts
from cocov_jobs.config import Settings
from cocov_jobs.engine import admin, queue
from cocov_jobs.engine.worker import Worker
from cocov_jobs.gitstore import repo_dir
from cocov_jobs.registration import canonical_coverage
from cocov_jobs.services import Services
from cocov_jobs.testing.processes import until
from cocov_jobs.testing.servers import http_client
from cocov_jobs.testing.webhooks import signature, webhook_headers

PUSH_SHA = "6858adf07e5cd43f9c5d87573369fa354d20a076"
#: GitHub ids of users in the payloads: the member/membership sender, the org member.
MEMBER_GITHUB_ID = 77198
ORG_MEMBER_GITHUB_ID = 39652351


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return webhook_settings(git_service_local_storage_path=tmp_path / "git")


@pytest.fixture
async def client(services: Services) -> AsyncIterator[httpx.AsyncClient]:
    async with http_client(services) as opened:
        yield opened


async def rows(services: Services, sql: str, **params: Any) -> list[dict[str, Any]]:
    async with services.engine.connect() as conn:
        return [dict(r._mapping) for r in await conn.execute(text(sql), params)]


async def queued(services: Services) -> list[tuple[str, dict[str, Any]]]:
    return [(job["entrypoint"], job["args"]) for job in await jobs(services)]


async def add_user(services: Services, github_id: int, login: str) -> int:
    return await insert(
        services, "users", login=login, github_id=github_id, github_token="gho_x", admin=False
    )


# Request checks --------------------------------------------------------------------------------


async def test_signed_push_is_applied(services: Services, client: httpx.AsyncClient) -> None:
    repo = await fixture_repository(services)
    response = await deliver(client, "push", payload("push"), delivery="d-1")
    assert response.status_code == 202
    assert response.json() == {"delivery_id": "d-1", "outcome": "applied"}
    [commit] = await rows(
        services, "SELECT id, sha, message, author_name, author_email FROM commits"
    )
    assert commit["sha"] == PUSH_SHA
    assert (commit["message"], commit["author_name"], commit["author_email"]) == (
        "WIP",
        "Victor Gama",
        "hey@vito.io",
    )
    assert await rows(services, "SELECT repository_id, name, head_id FROM branches") == [
        {"repository_id": repo, "name": "master", "head_id": commit["id"]}
    ]
    assert await queued(services) == [("process_commit", {"commit_id": commit["id"]})]
    assert [r.enqueued_by for r in await admin.list_jobs(services)] == ["webhook:d-1"]
    assert await rows(
        services, "SELECT delivery_id, event, action FROM cocov_jobs_webhook_deliveries"
    ) == [{"delivery_id": "d-1", "event": "push", "action": None}]
    assert await rows(services, "SELECT enqueued_by FROM cocov_jobs_job_origins") == [
        {"enqueued_by": "webhook:d-1"}
    ]


@pytest.mark.parametrize(
    ("header", "code"),
    [(None, 401), ("sha256=" + "0" * 64, 401), ("sha1=abc", 401), ("", 401)],
    ids=["missing", "wrong", "other-algorithm", "empty"],
)
async def test_bad_or_missing_signature_is_401_and_writes_nothing(
    services: Services, client: httpx.AsyncClient, header: str | None, code: int
) -> None:
    await fixture_repository(services)
    raw = (DATA / "push.json").read_bytes()
    headers = webhook_headers("push", raw)
    del headers["X-Hub-Signature-256"]
    if header is not None:
        headers["X-Hub-Signature-256"] = header
    response = await client.post("/v1/github/events", content=raw, headers=headers)
    assert response.status_code == code
    assert response.json()["code"] == "webhook.invalid_signature"
    assert await rows(services, "SELECT * FROM cocov_jobs_webhook_deliveries") == []
    assert await rows(services, "SELECT * FROM commits") == []


async def test_signature_of_another_body_is_refused(client: httpx.AsyncClient) -> None:
    raw = (DATA / "push.json").read_bytes()
    headers = webhook_headers("push", raw)
    response = await client.post("/v1/github/events", content=raw + b" ", headers=headers)
    assert response.status_code == 401


def _warnings(lines: list[dict[str, Any]]) -> list[str]:
    return [line["event"] for line in lines if line["level"] == "warning"]


async def test_without_a_secret_webhooks_are_refused_with_503_and_a_start_up_warning(
    settings: Settings,
    database_url: str,
    redis_url: str,
    json_logs: JsonLogs,
) -> None:
    """Anyone reaching the port could post ``repository deleted``: no secret, no webhooks."""
    json_logs.start()
    no_secret = settings.model_copy(update={"github_webhook_secret_key": ""})
    async with services_at(no_secret, database_url=database_url, redis_url=redis_url) as services:
        await fixture_repository(services)
        async with http_client(services) as client:
            [warning] = _warnings(json_logs.read())
            responses = [
                await client.post(
                    "/v1/github/events",
                    json=payload("repository_deleted"),
                    headers={"X-GitHub-Event": "repository", "X-GitHub-Delivery": f"u-{n}"},
                )
                for n in range(2)
            ]
        assert await rows(services, "SELECT * FROM cocov_jobs_webhook_deliveries") == []
        assert await jobs(services) == []
    assert "COCOV_GITHUB_WEBHOOK_SECRET_KEY" in warning
    for response in responses:
        assert response.status_code == 503
        assert response.json()["code"] == "webhook.secret_not_configured"
        assert "COCOV_GITHUB_WEBHOOK_SECRET_KEY" in response.json()["message"]
    assert _warnings(json_logs.read()) == []


async def test_unsigned_webhooks_are_accepted_only_when_opted_in_with_warnings(
    settings: Settings,
    database_url: str,
    redis_url: str,
    json_logs: JsonLogs,
) -> None:
    json_logs.start()
    opted_in = settings.model_copy(
        update={"github_webhook_secret_key": "", "github_webhook_allow_unsigned": True}
    )
    async with (
        services_at(opted_in, database_url=database_url, redis_url=redis_url) as services,
        http_client(services) as client,
    ):
        [at_start] = _warnings(json_logs.read())
        responses = [
            await client.post(
                "/v1/github/events",
                json=payload("ping") | {"zen": f"ping {n}"},
                headers={"X-GitHub-Event": "ping", "X-GitHub-Delivery": f"p-{n}"},
            )
            for n in range(3)
        ]
    assert [r.status_code for r in responses] == [202, 202, 202]
    assert "COCOV_GITHUB_WEBHOOK_ALLOW_UNSIGNED" in at_start
    [at_first_request] = _warnings(json_logs.read())
    assert "unsigned" in at_first_request


@pytest.mark.parametrize(
    ("missing", "code"),
    [
        ("X-GitHub-Event", "webhook.missing_event"),
        ("X-GitHub-Delivery", "webhook.missing_delivery"),
    ],
)
async def test_missing_github_headers_are_400(
    services: Services, client: httpx.AsyncClient, missing: str, code: str
) -> None:
    raw = (DATA / "push.json").read_bytes()
    headers = webhook_headers("push", raw)
    del headers[missing]
    response = await client.post("/v1/github/events", content=raw, headers=headers)
    assert (response.status_code, response.json()["code"]) == (400, code)
    assert await rows(services, "SELECT * FROM cocov_jobs_webhook_deliveries") == []


@pytest.mark.parametrize(
    ("raw", "code"),
    [
        (b"[1, 2]", "request.not_an_object"),
        (b'"push"', "request.not_an_object"),
        (b"{not json", "request.invalid_json"),
        (b"\xff\xfe", "request.invalid_json"),
    ],
)
async def test_body_must_be_a_json_object(
    services: Services, client: httpx.AsyncClient, raw: bytes, code: str
) -> None:
    response = await client.post(
        "/v1/github/events", content=raw, headers=webhook_headers("push", raw)
    )
    assert (response.status_code, response.json()["code"]) == (400, code)
    assert await rows(services, "SELECT * FROM cocov_jobs_webhook_deliveries") == []


async def test_malformed_push_is_422_and_writes_nothing(
    services: Services, client: httpx.AsyncClient
) -> None:
    await fixture_repository(services)
    body = payload("push")
    body["head_commit"]["id"] = "not-a-sha"
    response = await deliver(client, "push", body)
    assert (response.status_code, response.json()["code"]) == (422, "webhook.malformed_payload")
    assert await rows(services, "SELECT * FROM cocov_jobs_webhook_deliveries") == []
    assert await rows(services, "SELECT * FROM commits") == []


# Deliveries ------------------------------------------------------------------------------------


async def test_redelivery_is_a_no_op(services: Services, client: httpx.AsyncClient) -> None:
    await fixture_repository(services)
    first = await deliver(client, "push", payload("push"), delivery="same")
    await insert(
        services,
        "repositories",
        name="other",
        default_branch="main",
        token="crt_other",
        github_id=1,
    )
    again = await deliver(client, "push", payload("push"), delivery="same")
    assert (first.status_code, first.json()["outcome"]) == (202, "applied")
    assert (again.status_code, again.json()["outcome"]) == (200, "duplicate")
    assert len(await jobs(services)) == 1
    assert len(await rows(services, "SELECT id FROM commits")) == 1


async def test_the_same_signed_body_under_a_new_delivery_id_is_a_duplicate(
    services: Services, client: httpx.AsyncClient
) -> None:
    """The signature covers the body, not ``X-GitHub-Delivery``: a captured delivery replayed
    under a new id must not apply again."""
    await fixture_repository(services)
    raw = json.dumps(payload("push")).encode()
    answers = [
        await client.post(
            "/v1/github/events", content=raw, headers=webhook_headers("push", raw, delivery)
        )
        for delivery in ("original", "replayed")
    ]
    assert [(a.status_code, a.json()["outcome"]) for a in answers] == [
        (202, "applied"),
        (200, "duplicate"),
    ]
    deliveries = await rows(services, "SELECT delivery_id FROM cocov_jobs_webhook_deliveries")
    assert deliveries == [{"delivery_id": "original"}]
    assert len(await jobs(services)) == 1


def push(before: str, after: str, *, forced: bool = False, branch: str = "master") -> Any:
    """GitHub's push payload moving ``branch`` from ``before`` to ``after``."""
    body = payload("push")
    body.update(ref=f"refs/heads/{branch}", before=before, after=after, forced=forced)
    body["head_commit"] = body["head_commit"] | {"id": after}
    return body


async def head_of(services: Services, branch: str = "master") -> str | None:
    found = await rows(
        services,
        "SELECT c.sha FROM branches b JOIN commits c ON c.id = b.head_id WHERE b.name = :b",
        b=branch,
    )
    return found[0]["sha"] if found else None


async def test_a_push_never_moves_a_head_backwards(
    services: Services, client: httpx.AsyncClient
) -> None:
    """A push moves the head only from its ``before`` (or onto an unknown branch, or when
    forced); any other is recorded with the reason and its commit registered, the head kept."""
    await fixture_repository(services)
    c0, c1, c2, c3 = (f"{n}" * 40 for n in range(4))
    assert (await deliver(client, "push", push(c0, c1))).status_code == 202  # new branch
    assert (await deliver(client, "push", push(c1, c2))).status_code == 202  # from its head
    assert await head_of(services) == c2
    stale = await deliver(client, "push", push(c0, c1) | {"compare": "replayed"}, "stale")
    assert (stale.status_code, stale.json()["outcome"]) == (202, "applied")
    assert await head_of(services) == c2
    [note] = await rows(
        services, "SELECT note FROM cocov_jobs_webhook_deliveries WHERE delivery_id = 'stale'"
    )
    assert note["note"] == (
        f"head of master not moved to {c1}: the push starts from {c0}, the head is {c2}"
    )
    other_branch = await deliver(client, "push", push(c0, c3, branch="topic"))
    assert other_branch.status_code == 202 and await head_of(services, "topic") == c3
    assert (await deliver(client, "push", push(c0, c3, forced=True))).status_code == 202
    assert await head_of(services) == c3
    notes = await rows(services, "SELECT note FROM cocov_jobs_webhook_deliveries WHERE note > ''")
    assert len(notes) == 1


async def test_concurrent_duplicate_deliveries_apply_exactly_once(
    services: Services, client: httpx.AsyncClient, redis: Any
) -> None:
    repo = await fixture_repository(services)
    held = {"app/models/user.rb": "AAAxHjEeMQ=="}
    await redis.set(contracts.deferred_coverage_key(repo, PUSH_SHA), canonical_coverage(held))
    responses = await asyncio.gather(
        *(deliver(client, "push", payload("push"), delivery="dup") for _ in range(20))
    )
    outcomes = sorted((r.status_code, r.json()["outcome"]) for r in responses)
    assert outcomes == [(200, "duplicate")] * 19 + [(202, "applied")]
    assert sorted(name for name, _ in await queued(services)) == [
        "process_commit",
        "process_coverage",
    ]
    assert len(await rows(services, "SELECT id FROM commits")) == 1
    assert len(await rows(services, "SELECT id FROM cocov_jobs_coverage_uploads")) == 1
    assert await redis.get(contracts.deferred_coverage_key(repo, PUSH_SHA)) is None


async def test_distinct_deliveries_of_one_push_register_the_commit_once(
    services: Services, client: httpx.AsyncClient
) -> None:
    await fixture_repository(services)
    bodies = [payload("push") | {"compare": f"c{n}"} for n in range(10)]  # not replays
    responses = await asyncio.gather(*(deliver(client, "push", body) for body in bodies))
    assert {r.status_code for r in responses} == {202}
    assert len(await rows(services, "SELECT id FROM commits")) == 1
    assert len(await rows(services, "SELECT id FROM branches")) == 1


# Handler table ---------------------------------------------------------------------------------


async def test_push_reuses_a_processed_commit_and_only_moves_the_head(
    services: Services, client: httpx.AsyncClient
) -> None:
    await fixture_repository(services)
    await deliver(client, "push", payload("push"))
    [commit] = await rows(services, "SELECT id FROM commits")
    async with services.sessions.begin() as session:
        await session.execute(text("DELETE FROM pgqueuer"))
        await session.execute(text("UPDATE commits SET clone_status = 2"))
        await session.execute(
            text(
                "INSERT INTO check_sets (commit_id, status, created_at, updated_at)"
                " VALUES (:id, 3, now(), now())"
            ),
            {"id": commit["id"]},
        )
    other_branch = payload("push") | {"ref": "refs/heads/release"}
    assert (await deliver(client, "push", other_branch)).status_code == 202
    assert await queued(services) == []
    heads = await rows(services, "SELECT name, head_id FROM branches ORDER BY name")
    assert heads == [
        {"name": "master", "head_id": commit["id"]},
        {"name": "release", "head_id": commit["id"]},
    ]


async def test_push_with_an_empty_message_registers_the_commit(
    services: Services, client: httpx.AsyncClient
) -> None:
    await fixture_repository(services)
    body = payload("push")
    body["head_commit"]["message"] = ""
    assert (await deliver(client, "push", body)).status_code == 202
    assert await rows(services, "SELECT message FROM commits") == [{"message": ""}]


@pytest.mark.parametrize("name", ["push_branch_deleted", "push_tag"])
async def test_branch_deletion_and_tag_pushes_change_nothing(
    services: Services, client: httpx.AsyncClient, name: str
) -> None:
    await fixture_repository(services)
    response = await deliver(client, "push", payload(name))
    assert (response.status_code, response.json()["outcome"]) == (202, "applied")
    assert await rows(services, "SELECT id FROM commits") == []
    assert await rows(services, "SELECT id FROM branches") == []
    assert await jobs(services) == []


async def test_events_for_unknown_repositories_and_users_are_no_ops(
    services: Services, client: httpx.AsyncClient
) -> None:
    for event, name in [
        ("push", "push"),
        ("delete", "delete"),
        ("repository", "repository_deleted"),
        ("repository", "repository_renamed"),
        ("member", "member_added"),
        ("membership", "membership_added"),
        ("organization", "organization_member_added"),
        ("repository", "repository_created"),
    ]:
        response = await deliver(client, event, payload(name))
        assert response.status_code == 202, (event, name)
    assert await jobs(services) == []
    assert await rows(services, "SELECT id FROM commits") == []


async def test_delete_removes_the_branch_and_its_histories(
    services: Services, client: httpx.AsyncClient
) -> None:
    repo = await fixture_repository(services)
    commit = await insert(
        services,
        "commits",
        repository_id=repo,
        sha="a" * 40,
        author_name="A",
        author_email="a@x",
        message="m",
        clone_status=2,
    )
    branches = {
        name: await insert(services, "branches", repository_id=repo, name=name, head_id=commit)
        for name in ("test", "master")
    }
    for branch_id in branches.values():
        for _ in range(3):
            await insert(
                services,
                "coverage_histories",
                repository_id=repo,
                branch_id=branch_id,
                percentage=1.0,
            )
            await insert(
                services, "issue_histories", repository_id=repo, branch_id=branch_id, quantity=1
            )
    response = await deliver(client, "delete", payload("delete"))  # ref "test", ref_type branch
    assert response.status_code == 202
    assert await rows(services, "SELECT name FROM branches") == [{"name": "master"}]
    for history in ("coverage_histories", "issue_histories"):
        remaining = await rows(services, f"SELECT DISTINCT branch_id FROM {history}")
        assert remaining == [{"branch_id": branches["master"]}]
    tag = payload("delete") | {"ref": "master", "ref_type": "tag"}
    assert (await deliver(client, "delete", tag)).status_code == 202
    assert await rows(services, "SELECT name FROM branches") == [{"name": "master"}]


@pytest.mark.parametrize(
    ("event", "name"),
    [
        ("repository", "repository_archived"),
        ("public", "public"),
        ("team_add", "team_add"),
    ],
)
async def test_repository_permission_events_enqueue_update_repo_permissions(
    services: Services, client: httpx.AsyncClient, event: str, name: str
) -> None:
    repo = await fixture_repository(services)
    assert (await deliver(client, event, payload(name))).status_code == 202
    assert await queued(services) == [("update_repo_permissions", {"repository_id": repo})]


async def test_repository_deleted_enqueues_destroy_only(
    services: Services, client: httpx.AsyncClient
) -> None:
    repo = await fixture_repository(services)
    assert (await deliver(client, "repository", payload("repository_deleted"))).status_code == 202
    assert await queued(services) == [("destroy_repository", {"repository_id": repo})]


@pytest.mark.parametrize(
    ("name", "description", "default_branch"),
    [
        ("repository_edit_description", "Cocov's API", "master"),
        ("repository_edit_default_branch", "Cocov's API", "master"),
    ],
)
async def test_repository_edited_copies_description_and_default_branch(
    services: Services,
    client: httpx.AsyncClient,
    name: str,
    description: str,
    default_branch: str,
) -> None:
    repo = await fixture_repository(services, default_branch="main", description="old")
    assert (await deliver(client, "repository", payload(name))).status_code == 202
    assert await rows(services, "SELECT description, default_branch FROM repositories") == [
        {"description": description, "default_branch": default_branch}
    ]
    assert await queued(services) == [("update_repo_permissions", {"repository_id": repo})]


async def test_repository_edited_without_relevant_changes_copies_nothing(
    services: Services, client: httpx.AsyncClient
) -> None:
    await fixture_repository(services, default_branch="main", description="old")
    body = payload("repository_edit_description") | {"changes": {"homepage": {"from": ""}}}
    assert (await deliver(client, "repository", body)).status_code == 202
    assert await rows(services, "SELECT description, default_branch FROM repositories") == [
        {"description": "old", "default_branch": "main"}
    ]


async def test_repository_renamed_sets_the_name_and_moves_stored_clones(
    services: Services, client: httpx.AsyncClient
) -> None:
    repo = await fixture_repository(services, name="foo")
    assert (await deliver(client, "repository", payload("repository_renamed"))).status_code == 202
    assert await rows(services, "SELECT name FROM repositories") == [{"name": "renamed"}]
    assert await queued(services) == [
        ("update_repo_permissions", {"repository_id": repo}),
        ("move_repository_storage", {"repository_id": repo, "old_name": "foo"}),
    ]


async def test_rename_onto_a_name_another_repository_holds_fails_once_with_the_reason(
    services: Services, client: httpx.AsyncClient
) -> None:
    await fixture_repository(services, name="foo")
    other = await fixture_repository(services, name="Renamed", github_id=424242)
    response = await deliver(client, "repository", payload("repository_renamed"))
    assert (response.status_code, response.json()["outcome"]) == (202, "deferred")
    await drain(services)
    [job] = await jobs(services)
    assert (job["entrypoint"], job["status"], job["attempts"]) == ("process_webhook", "failed", 0)
    reason = (await job_log(services, job["id"]))[-1]["traceback"]["exception_message"]
    assert f"already the name of repository {other}" in reason
    assert await rows(services, "SELECT name FROM repositories ORDER BY id") == [
        {"name": "foo"},
        {"name": "Renamed"},
    ]


def _store_clone(settings: Settings, repo_name: str, sha: str) -> Path:
    """A published commit in local storage: its tree and archive pair."""
    base = settings.git_service_local_storage_path / repo_dir(repo_name)
    (base / sha).mkdir(parents=True)
    (base / sha / "README.md").write_text("hello")
    (base / f"{sha}.tar.zst").write_bytes(b"zstd")
    (base / f"{sha}.tar.zst.shasum").write_text("sha256:00")
    return base


@pytest.mark.parametrize(
    ("other_repository", "moved"), [(None, True), ("foo", False)], ids=["moved", "name-taken"]
)
async def test_move_repository_storage_moves_clones_to_the_current_name(
    services: Services, settings: Settings, other_repository: str | None, moved: bool
) -> None:
    repo = await fixture_repository(services, name="renamed-again")
    if other_repository is not None:  # a new repository took the old name: its clones stay
        await insert(
            services,
            "repositories",
            name=other_repository,
            default_branch="main",
            token="crt_taken",
            github_id=5,
        )
    old = _store_clone(settings, "foo", PUSH_SHA)
    async with services.sessions.begin() as session:
        await queue.enqueue(session, "move_repository_storage", repository_id=repo, old_name="foo")
    await drain(services)
    new = settings.git_service_local_storage_path / repo_dir("renamed-again")
    assert (new / PUSH_SHA / "README.md").exists() is moved
    assert (new / f"{PUSH_SHA}.tar.zst.shasum").exists() is moved
    assert old.exists() is not moved
    assert await jobs(services) == []


async def test_member_enqueues_repository_and_user_permissions(
    services: Services, client: httpx.AsyncClient
) -> None:
    repo = await fixture_repository(services)
    user = await add_user(services, MEMBER_GITHUB_ID, "heyvito")
    assert (await deliver(client, "member", payload("member_added"))).status_code == 202
    assert await queued(services) == [
        ("update_repo_permissions", {"repository_id": repo}),
        ("update_user_permissions", {"user_id": user}),
    ]


async def test_membership_enqueues_user_permissions(
    services: Services, client: httpx.AsyncClient
) -> None:
    user = await add_user(services, MEMBER_GITHUB_ID, "heyvito")
    assert (await deliver(client, "membership", payload("membership_added"))).status_code == 202
    assert await queued(services) == [("update_user_permissions", {"user_id": user})]


@pytest.mark.parametrize(
    ("action", "enqueued"),
    [
        ("member_added", True),
        ("member_removed", True),
        ("member_invited", False),
        ("renamed", False),
        ("deleted", False),
    ],
)
async def test_organization_enqueues_user_permissions_for_membership_actions(
    services: Services, client: httpx.AsyncClient, action: str, enqueued: bool
) -> None:
    user = await add_user(services, ORG_MEMBER_GITHUB_ID, "hacktocat")
    body = payload("organization_member_added") | {"action": action}
    assert (await deliver(client, "organization", body)).status_code == 202
    expected = [("update_user_permissions", {"user_id": user})] if enqueued else []
    assert await queued(services) == expected


@pytest.mark.parametrize("event", ["ping", "pull_request", "installation"])
async def test_other_events_are_recorded_and_ignored(
    services: Services, client: httpx.AsyncClient, event: str
) -> None:
    await fixture_repository(services)
    response = await deliver(client, event, payload("ping"), delivery=f"{event}-1")
    assert (response.status_code, response.json()["outcome"]) == (202, "applied")
    assert await jobs(services) == []
    assert await rows(services, "SELECT event FROM cocov_jobs_webhook_deliveries") == [
        {"event": event}
    ]


# Handler failures ------------------------------------------------------------------------------


async def test_failing_handler_is_deferred_to_a_job_the_engine_retries(
    services: Services, settings: Settings
) -> None:
    """Redis is down while the push registers: nothing half-written, a job retries it."""
    repo = await fixture_repository(services)
    with closed_port() as redis_port:
        async with (
            services_at(
                settings,
                database_url=services.database_url,
                redis_url=f"redis://127.0.0.1:{redis_port}/0",
            ) as broken,
            http_client(broken) as client,
        ):
            response = await deliver(client, "push", payload("push"), delivery="r-1")
            again = await deliver(client, "push", payload("push"), delivery="r-1")
            [job] = await jobs(services)
            await _run_worker_until(broken, lambda: _job_attempts(services, job["id"], 1))
    assert (response.status_code, response.json()["outcome"]) == (202, "deferred")
    assert (again.status_code, again.json()["outcome"]) == (200, "duplicate")
    assert (job["entrypoint"], job["args"]["delivery_id"]) == ("process_webhook", "r-1")
    assert await rows(services, "SELECT id FROM commits") == []
    assert await rows(services, "SELECT id FROM branches") == []

    # Redis is back: the retry applies the push.
    async def applied() -> bool:
        return bool(await rows(services, "SELECT id FROM branches"))

    await _run_worker_until(services, applied)
    [commit] = await rows(services, "SELECT id FROM commits")
    assert await rows(services, "SELECT repository_id, head_id FROM branches") == [
        {"repository_id": repo, "head_id": commit["id"]}
    ]
    assert await rows(
        services, "SELECT DISTINCT entrypoint FROM pgqueuer_log WHERE entrypoint = 'process_commit'"
    ) == [{"entrypoint": "process_commit"}]


async def _job_attempts(services: Services, job_id: int, attempts: int) -> bool:
    found = await rows(services, "SELECT attempts FROM pgqueuer WHERE id = :id", id=job_id)
    return bool(found) and found[0]["attempts"] >= attempts


async def _run_worker_until(services: Services, condition: Any) -> None:
    """Run a worker on ``services`` until ``condition()`` holds, then stop it."""
    worker = Worker(services, concurrency=1)
    running = asyncio.create_task(worker.run())
    try:
        await until(condition)
    finally:
        worker.stop()
        await running


async def test_payload_recorded_for_the_job_is_the_delivered_one(
    services: Services, settings: Settings
) -> None:
    await fixture_repository(services)
    with closed_port() as redis_port:
        async with (
            services_at(
                settings,
                database_url=services.database_url,
                redis_url=f"redis://127.0.0.1:{redis_port}/0",
            ) as broken,
            http_client(broken) as client,
        ):
            raw = (DATA / "push.json").read_bytes()
            headers = webhook_headers("push", raw, "r-2")
            assert headers["X-Hub-Signature-256"] == signature(raw)
            await client.post("/v1/github/events", content=raw, headers=headers)
    [job] = await jobs(services)
    assert job["args"] == {"delivery_id": "r-2", "event": "push", "payload": json.loads(raw)}
