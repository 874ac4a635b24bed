"""The service API over real HTTP, with a token issued by ``cocov-jobs tokens create``."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from sqlalchemy import text
from tests.support.helpers import drain, insert, jobs
from tests.support.logs import JsonLogs
from tests.support.web import fixture_repository

from cocov_jobs.crypto import new_service_token, service_token_digest
from cocov_jobs.engine import admin, queue
from cocov_jobs.services import Services
from cocov_jobs.testing.processes import CLI, WAIT, cli_env
from cocov_jobs.testing.servers import http_client


async def cocov_jobs(database_url: str, redis_url: str, *args: str) -> tuple[int, str, str]:
    """Run the ``cocov-jobs`` command against the test stores: (status, stdout, stderr)."""
    process = await asyncio.create_subprocess_exec(
        *CLI,
        *args,
        env=cli_env(COCOV_DATABASE_URL=database_url, COCOV_REDIS_URL=redis_url),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    async with asyncio.timeout(WAIT):
        out, err = await process.communicate()
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


@pytest.fixture
async def owner(services: Services) -> int:
    return await insert(
        services, "users", login="ci-bot", github_id=4242, github_token="gho_x", admin=True
    )


@pytest.fixture
async def token(services: Services, owner: int) -> str:
    issued = new_service_token()
    await insert(
        services,
        "service_tokens",
        token_hash=service_token_digest(issued),
        description="CI",
        owner_id=owner,
    )
    return issued


@pytest.fixture
async def client(services: Services, token: str) -> AsyncIterator[httpx.AsyncClient]:
    async with http_client(services) as opened:
        opened.headers["Authorization"] = f"bearer {token}"
        yield opened


async def token_row(services: Services) -> dict[str, Any]:
    async with services.engine.connect() as conn:
        row = (
            await conn.execute(
                text("SELECT token_hash, description, owner_id, last_used_at FROM service_tokens")
            )
        ).one()
    return dict(row._mapping)


async def token_id(services: Services) -> int:
    async with services.engine.connect() as conn:
        return int(await conn.scalar(text("SELECT id FROM service_tokens")))


# Tokens ----------------------------------------------------------------------------------------


async def test_tokens_create_prints_the_token_once_and_stores_its_digest(
    services: Services, database_url: str, redis_url: str, owner: int
) -> None:
    status, out, err = await cocov_jobs(
        database_url, redis_url, "tokens", "create", "--description", "CLI", "--owner", str(owner)
    )
    assert status == 0, err
    issued = out.strip()
    assert issued.startswith("cos_") and len(issued) == 68
    async with services.engine.connect() as conn:
        row = (
            await conn.execute(
                text(
                    "SELECT token_hash, owner_id, last_used_at FROM service_tokens"
                    " WHERE description = 'CLI'"
                )
            )
        ).one()
    assert tuple(row) == (service_token_digest(issued), owner, None)
    async with http_client(services) as client:
        response = await client.post(
            "/v1/jobs/update-organization-repos", headers={"Authorization": f"Bearer {issued}"}
        )
    assert response.status_code == 202


async def test_tokens_create_without_an_owner_uses_one_operator_user(
    services: Services, database_url: str, redis_url: str
) -> None:
    issued = []
    for _ in range(2):
        status, out, err = await cocov_jobs(database_url, redis_url, "tokens", "create")
        assert status == 0, err
        issued.append(out.strip())
    async with services.engine.connect() as conn:
        users = (await conn.execute(text("SELECT id, login, admin FROM users"))).all()
        owners = (await conn.execute(text("SELECT DISTINCT owner_id FROM service_tokens"))).all()
    assert [(u.login, u.admin) for u in users] == [("cocov-jobs-operator", True)]
    assert owners == [(users[0].id,)]
    async with http_client(services) as client:
        for token in issued:
            response = await client.get("/dashboard", headers={"Authorization": f"bearer {token}"})
            assert response.status_code == 200


async def test_tokens_create_refuses_an_unknown_owner(database_url: str, redis_url: str) -> None:
    status, out, err = await cocov_jobs(
        database_url, redis_url, "tokens", "create", "--description", "x", "--owner", "999"
    )
    assert (status, out) == (2, "")
    assert "no user with id 999" in err


@pytest.mark.parametrize(
    ("authorization", "code"),
    [
        (None, "auth.no_authorization"),
        ("token cos_whatever", "auth.invalid_token"),
        ("bearer", "auth.invalid_token"),
        ("bearer cos_" + "0" * 64, "auth.invalid_token"),
    ],
)
async def test_requests_without_a_valid_service_token_are_401(
    services: Services, client: httpx.AsyncClient, authorization: str | None, code: str
) -> None:
    del client.headers["Authorization"]
    headers = {"Authorization": authorization} if authorization else {}
    for method, path in [
        ("POST", "/v1/jobs/update-organization-repos"),
        ("POST", "/v1/events/user-logged-in"),
        ("GET", "/v1/jobs/1"),
    ]:
        response = await client.request(method, path, json={}, headers=headers)
        assert (response.status_code, response.json()["code"]) == (401, code), path
    assert await jobs(services) == []


async def test_use_stamps_last_used_at(services: Services, client: httpx.AsyncClient) -> None:
    response = await client.post("/v1/jobs/update-organization-repos")
    assert response.status_code == 202
    assert (await token_row(services))["last_used_at"] is not None


# POST /v1/jobs ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    [
        "compute-repository-commits-size",
        "compute_repository_commits_size",
        "ComputeRepositoryCommitsSizeJob",
    ],
)
async def test_enqueue_a_job_by_any_of_its_names(
    services: Services, client: httpx.AsyncClient, name: str
) -> None:
    response = await client.post(f"/v1/jobs/{name}", json={"repository_id": 7})
    assert response.status_code == 202
    [job] = await jobs(services)
    assert response.json() == {"job_id": job["id"]}
    assert (job["entrypoint"], job["args"]) == (
        "compute_repository_commits_size",
        {"repository_id": 7},
    )


async def test_a_deduplicated_enqueue_says_so(
    services: Services, client: httpx.AsyncClient
) -> None:
    first = await client.post("/v1/jobs/compute-repository-commits-size", json={"repository_id": 7})
    second = await client.post(
        "/v1/jobs/compute-repository-commits-size", json={"repository_id": 7}
    )
    assert first.status_code == second.status_code == 202
    assert second.json() == {"job_id": None, "deduplicated": True}
    assert len(await jobs(services)) == 1


async def test_unknown_job_is_404(client: httpx.AsyncClient) -> None:
    response = await client.post("/v1/jobs/make-coffee", json={})
    assert (response.status_code, response.json()["code"]) == (404, "jobs.unknown")
    assert "process-commit" in response.json()["message"]


@pytest.mark.parametrize(
    "body",
    [
        b"{}",
        b'{"repository_id": "seven"}',
        b'{"repository_id": 7, "extra": 1}',
        b"[7]",
        b'{"repository_id": true}',
        b'{"repository_id": "7"}',
        b'{"repository_id": 7.0}',
        b'{"repository_id": 1180591620717411303424}',
        b'{"repository_id": -9223372036854775809}',
    ],
    ids=[
        "missing",
        "wrong-type",
        "unknown-argument",
        "not-an-object",
        "bool-for-int",
        "string-for-int",
        "float-for-int",
        "beyond-bigint",
        "below-bigint",
    ],
)
async def test_bad_arguments_are_422_or_400(
    services: Services, client: httpx.AsyncClient, body: bytes
) -> None:
    response = await client.post("/v1/jobs/compute-repository-commits-size", content=body)
    expected = (400, "request.not_an_object") if body == b"[7]" else (422, "jobs.invalid_arguments")
    assert (response.status_code, response.json()["code"]) == expected
    assert await jobs(services) == []


# POST /v1/events -------------------------------------------------------------------------------


async def test_user_logged_in_enqueues_what_cocovs_login_path_does(
    services: Services, client: httpx.AsyncClient, owner: int
) -> None:
    response = await client.post("/v1/events/user-logged-in", json={"user_id": owner})
    assert response.status_code == 202
    queued = {job["entrypoint"]: job for job in await jobs(services)}
    assert set(queued) == {"update_commits_author", "update_user_permissions"}
    assert response.json() == {"jobs": {name: queued[name]["id"] for name in queued}}
    assert all(job["args"] == {"user_id": owner} for job in queued.values())


async def test_user_emails_updated_enqueues_the_author_update(
    services: Services, client: httpx.AsyncClient, owner: int
) -> None:
    response = await client.post("/v1/events/user-emails-updated", json={"user_id": owner})
    assert response.status_code == 202
    assert [(j["entrypoint"], j["args"]) for j in await jobs(services)] == [
        ("update_commits_author", {"user_id": owner})
    ]


@pytest.mark.parametrize(
    ("path", "body", "status", "code"),
    [
        ("/v1/events/user-logged-in", {"user_id": 999}, 404, "users.not_found"),
        ("/v1/events/user-logged-in", {"user_id": "me"}, 422, "events.invalid_arguments"),
        ("/v1/events/user-logged-in", {}, 422, "events.invalid_arguments"),
        ("/v1/events/user-renamed", {"user_id": 1}, 404, "events.unknown"),
    ],
)
async def test_event_errors(
    services: Services,
    client: httpx.AsyncClient,
    path: str,
    body: dict[str, Any],
    status: int,
    code: str,
) -> None:
    response = await client.post(path, json=body)
    assert (response.status_code, response.json()["code"]) == (status, code)
    assert await jobs(services) == []


# GET /v1/jobs/{id} -----------------------------------------------------------------------------


async def test_job_state_while_queued_then_after_success(
    services: Services, client: httpx.AsyncClient
) -> None:
    repo = await fixture_repository(services)
    job_id = (
        await client.post("/v1/jobs/compute-repository-commits-size", json={"repository_id": repo})
    ).json()["job_id"]
    queued = await client.get(f"/v1/jobs/{job_id}")
    assert queued.json() == {
        "id": job_id,
        "job": "compute_repository_commits_size",
        "state": "queued",
        "attempts": 0,
        "error": None,
        "enqueued_by": f"token:{await token_id(services)}",
    }
    await drain(services)
    done = await client.get(f"/v1/jobs/{job_id}")
    assert done.status_code == 200
    assert (done.json()["state"], done.json()["attempts"]) == ("successful", 1)


async def test_job_state_after_a_permanent_failure(
    services: Services, client: httpx.AsyncClient
) -> None:
    await fixture_repository(services)
    malformed = {
        "ref": "refs/heads/main",
        "head_commit": {"id": "zz"},
        "repository": {"id": 569446274},
    }
    async with services.sessions.begin() as session:
        job_id = await queue.enqueue(
            session, "process_webhook", delivery_id="x", event="push", payload=malformed
        )
    await drain(services)
    failed = (await client.get(f"/v1/jobs/{job_id}")).json()
    assert (failed["state"], failed["attempts"]) == ("failed", 1)
    assert failed["error"]["type"] == "MalformedPayload"
    assert "head_commit.id" in failed["error"]["message"]


async def test_unknown_job_id_is_404(client: httpx.AsyncClient) -> None:
    response = await client.get("/v1/jobs/123456")
    assert (response.status_code, response.json()["code"]) == (404, "jobs.not_found")


@pytest.mark.parametrize(
    ("method", "path", "body", "status"),
    [
        ("GET", "/v1/jobs/99999999999999999999999", None, 404),
        ("GET", "/v1/jobs/9223372036854775808", None, 404),
        ("POST", "/v1/events/user-logged-in", {"user_id": 2**70}, 422),
        ("POST", "/v1/events/user-logged-in", {"user_id": True}, 422),
        ("POST", "/v1/events/user-emails-updated", {"user_id": "2"}, 422),
    ],
)
async def test_out_of_range_or_mistyped_inputs_are_4xx_not_500(
    services: Services,
    client: httpx.AsyncClient,
    method: str,
    path: str,
    body: Any,
    status: int,
) -> None:
    response = await client.request(method, path, json=body)
    assert response.status_code == status, response.text
    assert await jobs(services) == []


# Who enqueued ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name", ["process-webhook", "move-repository-storage", "prune-history", "PostCoverageStatusJob"]
)
async def test_internal_jobs_cannot_be_enqueued_through_the_api(
    services: Services, client: httpx.AsyncClient, name: str
) -> None:
    response = await client.post(f"/v1/jobs/{name}", json={})
    assert (response.status_code, response.json()["code"]) == (403, "jobs.internal")
    assert await jobs(services) == []


async def test_the_token_that_enqueued_a_job_is_recorded_shown_and_logged(
    services: Services,
    client: httpx.AsyncClient,
    owner: int,
    database_url: str,
    redis_url: str,
    json_logs: JsonLogs,
) -> None:
    json_logs.start()
    by_token = f"token:{await token_id(services)}"
    job_id = (await client.post("/v1/jobs/update-commits-author", json={"user_id": owner})).json()[
        "job_id"
    ]
    event = await client.post("/v1/events/user-emails-updated", json={"user_id": owner})
    assert event.status_code == 202
    enqueued = [line for line in json_logs.read() if "enqueued_by" in line]
    assert [(line["job_id"], line["enqueued_by"]) for line in enqueued] == [
        (job_id, by_token),
        (event.json()["jobs"]["update_commits_author"], by_token),
    ]
    detail = await admin.show_job(services, job_id)
    assert detail is not None and detail.enqueued_by == by_token
    status, shown, _ = await cocov_jobs(database_url, redis_url, "jobs", "show", str(job_id))
    assert status == 0 and f"enqueued by {by_token}" in shown
    async with services.sessions.begin() as session:
        internal = await queue.enqueue(session, "update_commits_author", delay=60, user_id=2)
    assert (await client.get(f"/v1/jobs/{internal}")).json()["enqueued_by"] is None
