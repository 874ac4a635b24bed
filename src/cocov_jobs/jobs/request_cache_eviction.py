"""``request_cache_eviction(repository_id)`` — docs/architecture.md §5.6, §7.3."""

from __future__ import annotations

import json

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from cocov_jobs import contracts
from cocov_jobs.db.models import CacheArtifact, Repository
from cocov_jobs.engine.context import JobContext
from cocov_jobs.engine.registry import job

#: Seconds after which an unanswered eviction request no longer blocks a new one.
IN_FLIGHT_TTL = 3600

# Mark the request in flight and queue it for the Cache service in one atomic step.
_PUSH_ONCE = """
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'EX', ARGV[2]) then
  redis.call('RPUSH', KEYS[2], ARGV[3])
  return 1
end
return 0
"""


@job(lock="cache-eviction:{repository_id}", dedupe="{repository_id}")
async def request_cache_eviction(ctx: JobContext, repository_id: int) -> None:
    """Ask the Cache service to evict least-recently-used artifacts over the quota.

    Artifacts are taken globally by ``last_used_at`` ascending (never used first, then by id)
    until their sizes cover ``cache_size - COCOV_REPOSITORY_CACHE_MAX_SIZE``; one
    ``evict-artifact`` task with their ``name_hash`` strings is pushed. While an earlier request
    still has artifacts in the table (the Cache service has not deleted them yet), no new one is
    sent. Quota 0 (unlimited) or a missing repository: nothing to do.
    """
    quota = ctx.settings.repository_cache_max_size
    if quota <= 0:
        return
    key = contracts.eviction_in_flight_key(repository_id)
    async with ctx.db() as session:
        cache_size = await session.scalar(
            select(Repository.cache_size).where(Repository.id == repository_id)
        )
        if cache_size is None or cache_size <= quota:
            return
        pending = await ctx.redis.get(key)
        if pending is not None:
            if await _still_present(session, repository_id, json.loads(pending)):
                ctx.log.info("eviction already in flight", repository_id=repository_id)
                return
            await ctx.redis.delete(key)
        victims = await _least_recently_used(session, repository_id, cache_size - quota)
    if not victims:
        return
    hashes = [name_hash for name_hash, _ in victims]
    pushed = await ctx.redis.eval(
        _PUSH_ONCE,
        2,
        key,
        contracts.HOUSEKEEPING_QUEUE,
        json.dumps(hashes),
        IN_FLIGHT_TTL,
        contracts.evict_artifact_task(repository_id, hashes),
    )
    ctx.log.info(
        f"Evicting {len(victims)} item(s), reducing {sum(s for _, s in victims)} byte(s)",
        repository_id=repository_id,
        pushed=bool(pushed),
    )


async def _still_present(session: AsyncSession, repository_id: int, hashes: list[str]) -> bool:
    count = await session.scalar(
        select(func.count())
        .select_from(CacheArtifact)
        .where(CacheArtifact.repository_id == repository_id, CacheArtifact.name_hash.in_(hashes))
    )
    return bool(count)


async def _least_recently_used(
    session: AsyncSession, repository_id: int, excess: int
) -> list[tuple[str, int]]:
    """``(name_hash, size)`` in LRU order, stopping once the sizes reach ``excess``."""
    order = (CacheArtifact.last_used_at.asc().nulls_first(), CacheArtifact.id.asc())
    running = func.sum(CacheArtifact.size).over(order_by=order).label("running")
    ranked = (
        select(CacheArtifact.name_hash, CacheArtifact.size, running)
        .where(CacheArtifact.repository_id == repository_id)
        .subquery()
    )
    rows = await session.execute(
        select(ranked.c.name_hash, ranked.c.size)
        .where(ranked.c.running - ranked.c.size < excess)
        .order_by(ranked.c.running)
    )
    return [(str(h), int(s)) for h, s in rows]
