"""The GitHub client against the fake over real HTTP, with the token cache in real Redis."""

from __future__ import annotations

import asyncio
import json
import logging
import ssl
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
import redis.asyncio as aioredis

from cocov_jobs import contracts
from cocov_jobs.config import Settings
from cocov_jobs.engine.retry import Deferred, JobError, PermanentError, TransientError
from cocov_jobs.github import (
    GitHubClient,
    GitHubError,
    GitHubRateLimited,
    GitHubUnavailable,
    InstallationTokenProvider,
    installation_client,
    level_from_github,
    user_client,
)
from cocov_jobs.github.auth import TOKEN_LOCK
from cocov_jobs.testing import FakeGitHub

SHORT_TIMEOUT = httpx.Timeout(0.3, connect=0.3)


def settings_for(fake: FakeGitHub) -> Settings:
    return Settings(**fake.settings_fields())  # type: ignore[arg-type]


@pytest.fixture
def settings(fake_github: FakeGitHub) -> Settings:
    return settings_for(fake_github)


@pytest.fixture
def provider(settings: Settings, redis: aioredis.Redis) -> InstallationTokenProvider:
    return InstallationTokenProvider.from_settings(settings, redis)


@pytest.fixture
async def client(
    settings: Settings, redis: aioredis.Redis, provider: InstallationTokenProvider
) -> AsyncIterator[GitHubClient]:
    async with installation_client(settings, redis, provider=provider) as github:
        yield github


def api_calls(fake: FakeGitHub, path: str) -> list[int]:
    """Statuses of the requests the fake answered for ``path``."""
    return [status for _, seen, status in fake.request_log if seen == path]


# Pagination and ETags ---------------------------------------------------------------------------


async def test_paginate_reads_every_page(fake_github: FakeGitHub, client: GitHubClient) -> None:
    fake_github.add_repos(250)
    repos = await client.list_org_repos("acme")
    assert len(repos) == 250
    assert len({repo["id"] for repo in repos}) == 250
    assert api_calls(fake_github, "/orgs/acme/repos") == [200, 200, 200]
    assert client.rate_limit_remaining == 5000 - 4  # the mint and three pages


async def test_unchanged_single_page_listing_costs_one_request(
    fake_github: FakeGitHub, client: GitHubClient
) -> None:
    fake_github.add_repos(5)
    items, validator = await client.paginate_conditional("/orgs/acme/repos")
    assert items is not None and len(items) == 5
    assert validator.startswith("page1:W/")
    fake_github.clear_log()
    assert await client.paginate_conditional("/orgs/acme/repos", etag=validator) == (
        None,
        validator,
    )
    assert fake_github.request_log == [("GET", "/orgs/acme/repos", 304)]
    fake_github.add_repos(1, prefix="new")
    items, changed = await client.paginate_conditional("/orgs/acme/repos", etag=validator)
    assert items is not None and len(items) == 6
    assert changed != validator


async def test_a_change_on_page_two_is_never_missed(
    fake_github: FakeGitHub, client: GitHubClient
) -> None:
    fake_github.add_repos(150)  # newest first: repo-0 .. repo-49 are on page 2
    items, validator = await client.paginate_conditional("/orgs/acme/repos")
    assert items is not None and validator.startswith("pages:")
    fake_github.rename_repo("repo-0", "renamed")
    items, changed = await client.paginate_conditional("/orgs/acme/repos", etag=validator)
    assert items is not None and "renamed" in {repo["name"] for repo in items}
    assert changed != validator


async def test_a_full_first_page_is_not_trusted(
    fake_github: FakeGitHub, client: GitHubClient
) -> None:
    fake_github.add_repos(100)
    _, validator = await client.paginate_conditional("/orgs/acme/repos")
    assert validator.startswith("pages:")
    fake_github.add_repos(1, prefix="late")
    items, _ = await client.paginate_conditional("/orgs/acme/repos", etag=validator)
    assert items is not None and len(items) == 101


async def test_foreign_etags_are_never_sent(fake_github: FakeGitHub, client: GitHubClient) -> None:
    fake_github.add_repos(3)
    # What Cocov stored: a raw ETag, here even page 1's own.
    raw = await client.request("GET", "/orgs/acme/repos", params={"per_page": 100})
    cocov_style = raw.headers["ETag"]
    items, validator = await client.paginate_conditional("/orgs/acme/repos", etag=cocov_style)
    assert items is not None and len(items) == 3
    assert validator == "page1:" + cocov_style
    assert api_calls(fake_github, "/orgs/acme/repos") == [200, 200]


async def test_next_links_must_stay_on_the_api_host(
    fake_github: FakeGitHub, client: GitHubClient
) -> None:
    link = '<http://elsewhere.example/orgs/acme/repos?page=2>; rel="next"'
    fake_github.fail_next("GET", "/orgs/acme/repos", 200, body=[{"id": 1}], headers={"Link": link})
    with pytest.raises(PermanentError, match="leaves the API host"):
        await client.list_org_repos("acme")


# Endpoints --------------------------------------------------------------------------------------


async def test_collaborators_and_levels(fake_github: FakeGitHub, client: GitHubClient) -> None:
    repo = fake_github.add_repo("api", files={})
    fake_github.add_collaborator("api", 1, "ada", "admin")
    fake_github.add_collaborator("api", 2, "max", "maintain")
    fake_github.add_collaborators("api", 150, first_id=10, permissions="read")
    members = await client.list_collaborators(repo.id)
    levels = {member["id"]: level_from_github(member["permissions"]) for member in members}
    assert len(levels) == 152
    assert (levels[1], levels[2], levels[10]) == (2, 1, 0)


@pytest.mark.parametrize(
    ("permissions", "level"),
    [
        ({"admin": True, "maintain": True, "push": True}, 2),
        ({"admin": False, "maintain": True, "push": True}, 1),
        ({"admin": False, "maintain": False, "push": True, "triage": True, "pull": True}, 0),
        ({"pull": True}, 0),
    ],
)
def test_level_from_github(permissions: dict[str, bool], level: int) -> None:
    assert level_from_github(permissions) == level


async def test_latest_commit_follows_the_branch(
    fake_github: FakeGitHub, client: GitHubClient
) -> None:
    fake_github.add_repo("api")
    feature = fake_github.commit("api", {"f.txt": "1"}, message="On feature", branch="feature")
    fake_github.add_repo("empty", files={})
    commit = await client.latest_commit("acme", "api", "feature")
    assert commit is not None and commit["sha"] == feature
    assert commit["commit"]["message"] == "On feature"
    assert await client.latest_commit("acme", "empty", "main") is None
    assert api_calls(fake_github, "/repos/acme/api/commits") == [200]


async def test_create_status_omits_none_fields(
    fake_github: FakeGitHub, client: GitHubClient
) -> None:
    fake_github.add_repo("api")
    sha = fake_github.head("api")
    await client.create_status("acme", "api", sha, state="success", context="cocov")
    await client.create_status(
        "acme",
        "api",
        sha,
        state="failure",
        context="cocov/coverage",
        description="0.0% covered",
        target_url="http://ui/repos/api/commits/x/coverage",
    )
    first, second = fake_github.statuses("api", sha)
    assert (first["state"], first["description"], first["target_url"]) == ("success", None, None)
    assert (second["context"], second["description"]) == ("cocov/coverage", "0.0% covered")
    with pytest.raises(GitHubError) as caught:
        await client.create_status("acme", "api", sha, state="bogus", context="cocov")
    assert caught.value.status == 422


# Error classification ---------------------------------------------------------------------------


async def test_server_errors_are_transient(fake_github: FakeGitHub, client: GitHubClient) -> None:
    fake_github.fail_next("GET", "/orgs/acme/repos", 502)
    with pytest.raises(GitHubUnavailable) as caught:
        await client.list_org_repos("acme")
    assert isinstance(caught.value, TransientError) and caught.value.status == 502
    assert (
        str(caught.value)
        == "GitHub answered 502 Bad Gateway for GET /orgs/acme/repos: Injected 502"
    )


async def test_timeouts_and_refused_connections_are_transient(
    fake_github: FakeGitHub, settings: Settings, redis: aioredis.Redis
) -> None:
    fake_github.delay_next("/orgs/acme/repos", 5)
    async with installation_client(settings, redis, timeout=SHORT_TIMEOUT) as github:
        with pytest.raises(GitHubUnavailable, match=r"timed out .* for GET /orgs/acme/repos$"):
            await github.list_org_repos("acme")
    nowhere = settings.model_copy(update={"github_api_url": "http://127.0.0.1:9"})
    async with user_client(nowhere, "t") as github:
        with pytest.raises(GitHubUnavailable, match="could not be reached"):
            await github.list_org_repos("acme")


async def test_read_timeout_is_the_github_timeout_setting(
    fake_github: FakeGitHub, settings: Settings, redis: aioredis.Redis
) -> None:
    # Issue 7 (GitHub faults): workers must give up on a hung GitHub after COCOV_GITHUB_TIMEOUT
    # seconds, not a hard-coded 30, for both installation and user clients.
    short = settings.model_copy(update={"github_timeout": 0.3})
    fake_github.delay_next("/orgs/acme/repos", 5, times=2)
    token = fake_github.add_user("timeout-user")
    for github in (installation_client(short, redis), user_client(short, token)):
        started = time.monotonic()
        async with github:
            with pytest.raises(GitHubUnavailable, match="timed out"):
                await github.list_org_repos("acme")
        assert time.monotonic() - started < 3


async def test_not_found_is_permanent_with_a_short_reason(client: GitHubClient) -> None:
    with pytest.raises(GitHubError) as caught:
        await client.list_collaborators(5)
    assert isinstance(caught.value, PermanentError)
    assert caught.value.status == 404
    assert (
        str(caught.value) == "GitHub answered 404 Not Found for GET /repositories/5/collaborators"
    )


async def test_secondary_rate_limit_defers_for_retry_after(
    fake_github: FakeGitHub, client: GitHubClient
) -> None:
    fake_github.rate_limit_next("/orgs/", kind="secondary", retry_after=30, status=429)
    with pytest.raises(GitHubRateLimited) as caught:
        await client.list_org_repos("acme")
    assert isinstance(caught.value, Deferred)
    assert (caught.value.kind, caught.value.delay) == ("secondary", 30)
    message = {"message": "You have exceeded a secondary rate limit."}
    fake_github.fail_next("GET", "/orgs/", 403, body=message)
    with pytest.raises(GitHubRateLimited) as caught:
        await client.list_org_repos("acme")
    assert caught.value.delay == 60


async def test_primary_rate_limit_defers_until_reset(
    fake_github: FakeGitHub, client: GitHubClient
) -> None:
    fake_github.rate_limit_next("/orgs/", kind="primary", retry_after=120)
    with pytest.raises(GitHubRateLimited) as caught:
        await client.list_org_repos("acme")
    assert caught.value.kind == "primary"
    assert 119 <= caught.value.delay <= 122
    assert client.rate_limit_remaining == 0


async def test_forbidden_without_rate_limit_is_permanent(
    fake_github: FakeGitHub, client: GitHubClient
) -> None:
    fake_github.fail_next("GET", "/orgs/", 403, body={"message": "Resource not accessible"})
    with pytest.raises(GitHubError) as caught:
        await client.list_org_repos("acme")
    assert caught.value.status == 403


# Installation token -----------------------------------------------------------------------------


async def test_token_is_cached_in_cocovs_shape(
    fake_github: FakeGitHub, provider: InstallationTokenProvider, redis: aioredis.Redis
) -> None:
    token = await provider.token()
    assert await provider.token() == token
    raw = await redis.get(contracts.INSTALLATION_TOKEN)
    assert raw is not None
    cached = json.loads(raw)
    assert set(cached) == {"token", "expires_at"} and cached["token"] == token
    assert await redis.ttl(contracts.INSTALLATION_TOKEN) == -1
    assert fake_github.tokens_minted == 1


async def test_near_expiry_token_is_refreshed_once_across_processes(
    fake_github: FakeGitHub,
    settings: Settings,
    provider: InstallationTokenProvider,
    redis_url: str,
) -> None:
    fake_github.token_ttl = 120  # inside the five-minute refresh margin
    stale = await provider.token()
    fake_github.token_ttl = 3600
    other_redis = aioredis.Redis.from_url(redis_url)
    other_process = InstallationTokenProvider.from_settings(settings, other_redis)
    try:
        callers = [provider.token() for _ in range(20)] + [other_process.token() for _ in range(5)]
        tokens = await asyncio.gather(*callers)
    finally:
        await other_redis.aclose()
    assert len(set(tokens)) == 1 and tokens[0] != stale
    assert fake_github.tokens_minted == 2


async def test_waiting_for_another_process_then_taking_over(
    fake_github: FakeGitHub, settings: Settings, redis: aioredis.Redis
) -> None:
    impatient = InstallationTokenProvider(
        redis,
        api_url=settings.github_api_url,
        app_id=settings.github_app_id,
        private_key_pem=settings.github_app_private_key_pem,
        installation_id=settings.github_app_installation_id,
        lock_wait=0.2,
    )
    await redis.set(TOKEN_LOCK, "another-process", px=60_000)
    with pytest.raises(TransientError, match="another process"):
        await impatient.token()
    await redis.set(TOKEN_LOCK, "crashed-process", px=100)
    provider = InstallationTokenProvider.from_settings(settings, redis)
    assert (await provider.token()).startswith("ghs_")
    assert fake_github.tokens_minted == 1


async def test_waiter_uses_the_token_another_process_stored(
    fake_github: FakeGitHub, provider: InstallationTokenProvider, redis: aioredis.Redis
) -> None:
    await redis.set(TOKEN_LOCK, "another-process", px=60_000)
    waiter = asyncio.ensure_future(provider.token())
    done, _ = await asyncio.wait([waiter], timeout=0.3)
    assert not done  # blocked behind the other process's lock
    token = fake_github.issue_installation_token()
    expires = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 3600))
    await redis.set(
        contracts.INSTALLATION_TOKEN, json.dumps({"token": token, "expires_at": expires})
    )
    assert await waiter == token
    assert fake_github.tokens_minted == 0


async def test_rejected_token_is_replaced_and_the_request_retried_once(
    fake_github: FakeGitHub, client: GitHubClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    fake_github.add_repos(2)
    await client.list_org_repos("acme")
    revoked = fake_github.authorization_headers[-1].removeprefix("Bearer ")
    fake_github.expire_all_tokens()
    assert len(await client.list_org_repos("acme")) == 2
    assert api_calls(fake_github, "/orgs/acme/repos") == [200, 401, 200]
    assert fake_github.tokens_minted == 2
    assert "retrying once" in caplog.text and revoked not in caplog.text


async def test_uninstalled_app_is_permanent(fake_github: FakeGitHub, client: GitHubClient) -> None:
    await client.list_org_repos("acme")
    fake_github.revoke_installation()
    with pytest.raises(PermanentError):
        await client.list_org_repos("acme")
    assert api_calls(fake_github, "/orgs/acme/repos") == [200, 401]


async def test_revoked_user_token_is_permanent_with_a_clear_reason(
    fake_github: FakeGitHub, settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    token = fake_github.add_user("alice")
    fake_github.revoke_user_token(token)
    async with user_client(settings, token) as github:
        with pytest.raises(GitHubError) as caught:
            await github.list_org_repos("acme")
        assert token not in repr(github)
    assert caught.value.status == 401
    assert "user token was rejected" in str(caught.value)
    assert api_calls(fake_github, "/orgs/acme/repos") == [401]
    assert fake_github.tokens_minted == 0
    assert token not in str(caught.value) + repr(caught.value) + caplog.text


async def test_user_client_sees_the_users_permissions(
    fake_github: FakeGitHub, settings: Settings
) -> None:
    token = fake_github.add_user("alice", 77)
    fake_github.add_repo("visible", files={})
    fake_github.add_repo("hidden", files={})
    fake_github.grant("alice", "visible", "admin")
    async with user_client(settings, token) as github:
        repos = await github.list_org_repos("acme")
    assert [(r["name"], level_from_github(r["permissions"])) for r in repos] == [("visible", 2)]


# Secrets ----------------------------------------------------------------------------------------


async def test_tokens_never_appear_in_errors_or_logs(
    fake_github: FakeGitHub,
    client: GitHubClient,
    provider: InstallationTokenProvider,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    token = await provider.token()
    fake_github.fail_next("GET", "/orgs/", 500, body={"message": f"token {token} is odd"})
    fake_github.fail_next("GET", "/orgs/", 401)
    fake_github.fail_next("GET", "/orgs/", 401)
    failures: list[JobError] = []
    for _ in range(2):
        with pytest.raises((GitHubUnavailable, GitHubError)) as caught:
            await client.list_org_repos("acme")
        failures.append(caught.value)
    assert "[redacted]" in str(failures[0])
    current = await provider.token()
    for secret in (token, current):
        for failure in failures:
            assert secret not in str(failure) and secret not in repr(failure)
        assert secret not in caplog.text and secret not in repr(client) + repr(provider)


# GitHub Enterprise ------------------------------------------------------------------------------


async def test_enterprise_base_url_with_a_path_prefix(
    tmp_path: Path, redis: aioredis.Redis
) -> None:
    with FakeGitHub(tmp_dir=tmp_path, api_prefix="/api/v3") as fake:
        fake.add_repo("api")
        settings = settings_for(fake)
        assert settings.github_api_url.endswith("/api/v3")
        async with installation_client(settings, redis) as github:
            [repo] = await github.list_org_repos("acme")
            commit = await github.latest_commit("acme", "api", "main")
            assert commit is not None
            await github.create_status(
                "acme", "api", commit["sha"], state="pending", context="cocov"
            )
            with pytest.raises(GitHubError) as caught:
                await github.list_collaborators(999)
        assert repo["name"] == "api" and len(fake.statuses("api", commit["sha"])) == 1
        assert str(caught.value).endswith("for GET /repositories/999/collaborators")
        assert all(r.url.startswith(fake.api_url) for r in fake.requests)


def test_clients_share_one_tls_context(settings: Settings, redis: aioredis.Redis) -> None:
    # Building a TLS context loads the CA bundle (about 23 ms of CPU); a permission sync makes a
    # client per user token, so a context per client was most of that job's CPU.
    first, second = user_client(settings, "token-a"), user_client(settings, "token-b")
    installation = installation_client(settings, redis)
    contexts = [
        client._http._transport._pool._ssl_context  # type: ignore[attr-defined]
        for client in (first, second, installation)
    ]
    assert contexts[0] is contexts[1] is contexts[2]
    assert contexts[0].verify_mode is ssl.CERT_REQUIRED and contexts[0].check_hostname
