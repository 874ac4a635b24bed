"""Cocov's admin "Sidekiq" button: its exchange token opens the dashboard under ``/sidekiq``."""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import AsyncIterator

import httpx
import pytest
import redis.asyncio as aioredis
from sqlalchemy import text
from tests.support.admin import failed_job
from tests.support.helpers import insert
from tests.support.settings import make_settings

from cocov_jobs import crypto
from cocov_jobs.config import Settings
from cocov_jobs.services import Services
from cocov_jobs.web.app import create_app
from cocov_jobs.web.sessions import SESSION_COOKIE

KEY = "k" * 32


@pytest.fixture
def settings() -> Settings:
    return make_settings(cryptographic_key=KEY)


def client_for(services: Services) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=create_app(services))
    return httpx.AsyncClient(transport=transport, base_url="http://cocov.test")


@pytest.fixture
async def client(services: Services) -> AsyncIterator[httpx.AsyncClient]:
    async with client_for(services) as opened:
        yield opened


async def user(services: Services, *, admin: bool) -> int:
    return await insert(
        services,
        "users",
        login=f"u{secrets.token_hex(3)}",
        github_id=secrets.randbelow(10**6),
        github_token="x",
        admin=admin,
    )


async def exchange_token(redis: aioredis.Redis, user_id: int) -> str:
    """What Cocov's ``POST /v1/admin/sidekiq_panel_token`` stores and answers."""
    token = f"csp_{secrets.token_hex(32)}"
    digest = hashlib.sha256(token.encode()).hexdigest()
    value = crypto.encode64(crypto.encrypt(KEY.encode(), str(user_id).encode()))
    await redis.set(f"cocov:sidekiq_auth:{digest}", value, ex=60)
    return token


async def test_the_token_opens_the_dashboard_under_sidekiq_once(
    services: Services, redis: aioredis.Redis, client: httpx.AsyncClient
) -> None:
    token = await exchange_token(redis, await user(services, admin=True))
    answer = await client.get("/v1/admin/sidekiq_panel", params={"token": token})
    assert answer.status_code == 302 and answer.headers["location"] == "/sidekiq"
    assert "Path=/sidekiq" in answer.headers["set-cookie"]
    page = await client.get("/sidekiq")
    assert page.status_code == 200 and "Overview" in page.text
    assert 'href="/sidekiq/finished"' in page.text  # the links stay under /sidekiq
    assert (await client.get("/dashboard")).status_code == 303  # another prefix, another login
    again = await client.get("/v1/admin/sidekiq_panel", params={"token": token})
    assert again.status_code == 403  # single use
    assert await redis.keys("cocov:sidekiq_auth:*") == []


async def test_actions_work_under_sidekiq(
    services: Services, redis: aioredis.Redis, client: httpx.AsyncClient
) -> None:
    job_id = await failed_job(services)
    token = await exchange_token(redis, await user(services, admin=True))
    await client.get("/v1/admin/sidekiq_panel", params={"token": token})
    page = await client.get(f"/sidekiq/jobs/{job_id}")
    csrf = page.text.split('name="csrf_token" value="', 1)[1].split('"', 1)[0]
    done = await client.post(
        f"/sidekiq/jobs/{job_id}/delete",
        data={"csrf_token": csrf, "next": "/sidekiq/state/failed"},
    )
    assert done.status_code == 303 and done.headers["location"].startswith("/sidekiq/state/failed")
    assert (await client.get(f"/sidekiq/jobs/{job_id}")).status_code == 200  # history remains
    escaped = await client.post(
        f"/sidekiq/jobs/{job_id}/retry", data={"csrf_token": csrf, "next": "https://evil.test/"}
    )
    assert escaped.headers["location"].startswith("/sidekiq?")  # never leaves the prefix


@pytest.mark.parametrize("case", ["not admin", "unknown", "no prefix", "wrong key"])
async def test_anything_else_opens_nothing(
    services: Services, redis: aioredis.Redis, client: httpx.AsyncClient, case: str
) -> None:
    token = await exchange_token(redis, await user(services, admin=case != "not admin"))
    if case == "unknown":
        token = f"csp_{secrets.token_hex(32)}"
    elif case == "no prefix":
        token = token.removeprefix("csp_")
    elif case == "wrong key":
        digest = hashlib.sha256(token.encode()).hexdigest()
        other = crypto.encode64(crypto.encrypt(b"o" * 32, b"1"))
        await redis.set(f"cocov:sidekiq_auth:{digest}", other)
    answer = await client.get("/v1/admin/sidekiq_panel", params={"token": token})
    assert answer.status_code == 403 and "administration page" in answer.text
    assert SESSION_COOKIE not in answer.cookies
    assert (await client.get("/sidekiq")).headers["location"] == "/sidekiq/login"


async def test_the_session_ends_when_the_user_stops_being_an_admin(
    services: Services, redis: aioredis.Redis, client: httpx.AsyncClient
) -> None:
    user_id = await user(services, admin=True)
    await client.get(
        "/v1/admin/sidekiq_panel", params={"token": await exchange_token(redis, user_id)}
    )
    assert (await client.get("/sidekiq")).status_code == 200
    async with services.sessions.begin() as session:
        await session.execute(
            text("UPDATE users SET admin = false WHERE id = :id"), {"id": user_id}
        )
    async with client_for(services) as fresh:  # a process that has not checked the session yet
        fresh.cookies = client.cookies
        assert (await fresh.get("/sidekiq")).headers["location"] == "/sidekiq/login"
