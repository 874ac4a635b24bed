"""``update_organization_repos()`` — docs/architecture.md §5.8, §6.2, §7.14.

Lists every repository of ``COCOV_GITHUB_ORG_NAME`` with the installation token and stores
Cocov's listing cache in the *cache* Redis (Cocov's db1), where Cocov's API reads it:

* ``cocov:github_org_repos:items``: JSON ``[{"id", "name", "description", "created_at",
  "pushed_at"}]`` sorted by name byte-wise (code-point order of ``str`` is UTF-8 byte order),
  timestamps as Rails encodes them (``2023-01-01T00:00:00.000Z``, UTC, milliseconds);
* ``…:etag``: the listing's validator (:meth:`~cocov_jobs.github.GitHubClient.
  paginate_conditional`); Cocov's API only passes it through;
* ``…:updated_at``: now, ISO-8601 with offset, seconds precision;
* ``…:status``: ``present``.

All four are written in one MSET. When the stored validator still holds (GitHub answers 304,
one request), only ``status`` and ``updated_at`` are written.

On failure the status is never left ``updating`` (the API sets it before enqueuing, and
Cocov's API never re-enqueues while it is set): the job restores ``present`` when a complete
earlier listing is stored (readers get slightly stale items instead of a spinner), else deletes
the status (readers see a cache miss, so the API asks again). A status other than ``updating``
is left alone. This happens on every failed attempt, transient ones included, before the retry.

At most one copy waits (dedupe) and runs never overlap (lock). Scheduled every
``COCOV_ORG_REPOS_REFRESH_MINUTES`` minutes (0 disables) besides on-demand requests.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

import redis.asyncio as aioredis

from cocov_jobs import contracts
from cocov_jobs.config import Settings
from cocov_jobs.engine.context import JobContext
from cocov_jobs.engine.registry import job

#: Status value of a complete listing.
PRESENT = "present"
#: Status value set by Cocov's API while a refresh is queued.
UPDATING = "updating"

# Atomically: only an ``updating`` status is touched; ``present`` needs the other three keys.
_RESTORE_STATUS = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
if redis.call('EXISTS', KEYS[2], KEYS[3], KEYS[4]) == 3 then
  redis.call('SET', KEYS[1], ARGV[2])
  return 1
end
redis.call('DEL', KEYS[1])
return 2
"""


def _every(settings: Settings) -> int:
    """``COCOV_ORG_REPOS_REFRESH_MINUTES``, once the GitHub App is configured."""
    return settings.org_repos_refresh_minutes if settings.github_app_id else 0


@job(lock="organization-repos", dedupe="organization", every=_every)
async def update_organization_repos(ctx: JobContext) -> None:
    """List and cache the organization's repositories in the cache Redis, where Cocov reads them."""
    cache = ctx.services.cache_redis
    try:
        await _refresh(ctx, cache)
    except BaseException:
        restored = await cache.eval(
            _RESTORE_STATUS,
            4,
            contracts.ORG_REPOS_STATUS,
            contracts.ORG_REPOS_ETAG,
            contracts.ORG_REPOS_UPDATED_AT,
            contracts.ORG_REPOS_ITEMS,
            UPDATING,
            PRESENT,
        )
        ctx.log.info("organization repositories refresh failed", status_restored=restored)
        raise


async def _refresh(ctx: JobContext, cache: aioredis.Redis) -> None:
    org = ctx.settings.github_org_name
    stored_etag = await _stored_etag(cache)
    repos, validator = await ctx.services.github().paginate_conditional(
        f"/orgs/{quote(org, safe='')}/repos", etag=stored_etag
    )
    fields = {contracts.ORG_REPOS_STATUS: PRESENT, contracts.ORG_REPOS_UPDATED_AT: _now()}
    if repos is not None:
        fields[contracts.ORG_REPOS_ETAG] = validator
        fields[contracts.ORG_REPOS_ITEMS] = encode_items(repos)
    await cache.mset(fields)
    ctx.log.info(
        "organization repositories cached",
        org=org,
        repositories=None if repos is None else len(repos),
        unchanged=repos is None,
    )


async def _stored_etag(cache: aioredis.Redis) -> str | None:
    """The stored validator, only when the items it validates are stored too."""
    async with cache.pipeline(transaction=False) as pipe:
        pipe.get(contracts.ORG_REPOS_ETAG)
        pipe.exists(contracts.ORG_REPOS_ITEMS)
        etag, has_items = await pipe.execute()
    if etag is None or not has_items:
        return None
    return etag.decode() if isinstance(etag, bytes) else str(etag)


def encode_items(repos: list[dict[str, Any]]) -> str:
    """The items JSON, as Cocov's Rails encoding writes it (compact, sorted by name)."""
    items = [
        {
            "id": repo["id"],
            "name": repo["name"],
            "description": repo.get("description"),
            "created_at": rails_time(repo.get("created_at")),
            "pushed_at": rails_time(repo.get("pushed_at")),
        }
        for repo in sorted(repos, key=lambda repo: str(repo["name"]))
    ]
    return json.dumps(items, separators=(",", ":"), ensure_ascii=False)


def rails_time(value: str | None) -> str | None:
    """A GitHub timestamp as Rails encodes times in JSON: ``2023-01-01T00:00:00.000Z`` (UTC)."""
    if not value:
        return None
    moment = datetime.fromisoformat(value).astimezone(UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")
