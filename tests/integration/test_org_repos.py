"""``update_organization_repos`` against the GitHub fake over HTTP and real Redis/PostgreSQL."""

from __future__ import annotations

import json
import re
import time
from datetime import datetime

import pytest
from tests.support.helpers import drain, job_log, jobs
from tests.support.settings import make_settings

from cocov_jobs import contracts
from cocov_jobs.config import Settings
from cocov_jobs.engine import queue
from cocov_jobs.services import Services
from cocov_jobs.testing import FakeGitHub

ORG_REPOS = "/orgs/acme/repos"
RAILS_TIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")
OLD_UPDATED_AT = "2020-01-01T00:00:00+00:00"


@pytest.fixture
def settings(fake_github: FakeGitHub) -> Settings:
    return make_settings(**fake_github.settings_fields())


async def enqueue(services: Services) -> int | None:
    async with services.sessions.begin() as session:
        return await queue.enqueue(session, "update_organization_repos")


async def refresh(services: Services, *, horizon: float = 5.0) -> None:
    await enqueue(services)
    await drain(services, horizon=horizon)


async def cached(services: Services) -> dict[str, str | None]:
    keys = {
        "status": contracts.ORG_REPOS_STATUS,
        "etag": contracts.ORG_REPOS_ETAG,
        "updated_at": contracts.ORG_REPOS_UPDATED_AT,
        "items": contracts.ORG_REPOS_ITEMS,
    }
    values = await services.cache_redis.mget(list(keys.values()))
    return {name: v.decode() if v else None for name, v in zip(keys, values, strict=True)}


def listing_calls(fake: FakeGitHub) -> list[int]:
    return [status for _, path, status in fake.request_log if path == ORG_REPOS]


async def failed_jobs(services: Services) -> list[dict[str, object]]:
    return [row for row in await jobs(services) if row["status"] == "failed"]


async def test_lists_every_page_into_cocovs_cache_keys(
    services: Services, fake_github: FakeGitHub
) -> None:
    fake_github.add_repos(248)
    fake_github.add_repos(1, prefix="Zebra")
    described = fake_github.add_repo("api", description="The API <&>", files={})
    await services.cache_redis.set(contracts.ORG_REPOS_STATUS, "updating")
    await refresh(services)

    assert listing_calls(fake_github) == [200, 200, 200]
    cache = await cached(services)
    assert cache["status"] == "present"
    assert cache["etag"] is not None and cache["etag"].startswith("pages:")
    assert cache["updated_at"] is not None
    assert datetime.fromisoformat(cache["updated_at"]).utcoffset() is not None
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[+-]\d\d:\d\d", cache["updated_at"])
    items = json.loads(cache["items"] or "null")
    assert len(items) == 250
    names = [item["name"] for item in items]
    assert names[0] == "Zebra-0"  # byte-wise: upper case first
    assert names.index("repo-10") < names.index("repo-2")
    assert names == sorted(names, key=str.encode)
    api = next(item for item in items if item["name"] == "api")
    assert list(api) == ["id", "name", "description", "created_at", "pushed_at"]
    assert api["id"] == described.id and api["description"] == "The API <&>"
    assert RAILS_TIME.fullmatch(api["created_at"]) and RAILS_TIME.fullmatch(api["pushed_at"])
    assert await failed_jobs(services) == []


async def test_unchanged_listing_costs_one_304_and_refreshes_only_the_date(
    services: Services, fake_github: FakeGitHub
) -> None:
    fake_github.add_repos(5)
    await refresh(services)
    first = await cached(services)
    assert first["etag"] is not None and first["etag"].startswith("page1:")
    await services.cache_redis.mset(
        {contracts.ORG_REPOS_STATUS: "updating", contracts.ORG_REPOS_UPDATED_AT: OLD_UPDATED_AT}
    )
    fake_github.clear_log()

    await refresh(services)

    assert fake_github.request_log == [("GET", ORG_REPOS, 304)]
    second = await cached(services)
    assert second["status"] == "present"
    assert second["updated_at"] != OLD_UPDATED_AT
    assert (second["etag"], second["items"]) == (first["etag"], first["items"])


async def test_a_changed_listing_is_stored_again(
    services: Services, fake_github: FakeGitHub
) -> None:
    fake_github.add_repos(2)
    await refresh(services)
    fake_github.add_repos(1, prefix="new")
    await refresh(services)
    cache = await cached(services)
    assert [item["name"] for item in json.loads(cache["items"] or "[]")] == [
        "new-0",
        "repo-0",
        "repo-1",
    ]
    assert listing_calls(fake_github) == [200, 200]


async def test_server_error_is_retried_then_succeeds(
    services: Services, fake_github: FakeGitHub
) -> None:
    fake_github.add_repos(3)
    fake_github.fail_next("GET", ORG_REPOS, 502)
    await refresh(services)
    assert listing_calls(fake_github) == [502, 200]
    assert (await cached(services))["status"] == "present"
    assert await failed_jobs(services) == []


async def test_rate_limit_defers_until_retry_after(
    services: Services, fake_github: FakeGitHub
) -> None:
    fake_github.add_repos(3)
    fake_github.rate_limit_next(ORG_REPOS, kind="secondary", retry_after=1, status=429)
    job_id = await enqueue(services)
    assert job_id is not None
    started = time.monotonic()
    await drain(services, horizon=5.0)
    assert time.monotonic() - started >= 1.0
    assert listing_calls(fake_github) == [429, 200]
    assert (await cached(services))["status"] == "present"
    statuses = [entry["status"] for entry in await job_log(services, job_id)]
    assert "queued" in statuses[1:] and statuses[-1] == "successful"


async def test_failure_restores_present_when_an_earlier_listing_is_stored(
    services: Services, fake_github: FakeGitHub
) -> None:
    fake_github.add_repos(2)
    await refresh(services)
    before = await cached(services)
    await services.cache_redis.set(contracts.ORG_REPOS_STATUS, "updating")
    fake_github.fail_next("GET", ORG_REPOS, 403, body={"message": "Resource not accessible"})

    await refresh(services)

    failed = await failed_jobs(services)
    assert len(failed) == 1
    reason = str((await job_log(services, int(str(failed[0]["id"]))))[-1]["traceback"])
    assert "403" in reason and "Resource not accessible" in reason
    assert await cached(services) == before


async def test_failure_without_a_stored_listing_clears_the_updating_status(
    services: Services, fake_github: FakeGitHub
) -> None:
    await services.cache_redis.set(contracts.ORG_REPOS_STATUS, "updating")
    fake_github.fail_next("GET", ORG_REPOS, 404)
    await refresh(services)
    assert len(await failed_jobs(services)) == 1
    assert await cached(services) == dict.fromkeys(("status", "etag", "updated_at", "items"))


async def test_only_one_copy_waits(services: Services, fake_github: FakeGitHub) -> None:
    assert await enqueue(services) is not None
    assert await enqueue(services) is None
    assert [row["entrypoint"] for row in await jobs(services)] == ["update_organization_repos"]
