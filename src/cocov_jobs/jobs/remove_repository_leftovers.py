"""``remove_repository_leftovers(repository_id, repository_name)`` — follow-up of
``destroy_repository`` (docs/architecture.md §5.2).

After the destroy committed, removes what lives outside PostgreSQL:

* the stored clones: ``<base>/sha1(name)`` locally, the ``sha1(name)/`` prefix on S3
  (:meth:`~cocov_jobs.gitstore.CommitStorage.destroy_repository`). Skipped when another
  repository carries that name by now: the directory is keyed by name, so it holds *its*
  clones;
* the repository's Redis keys: deferred coverage ``commit:coverage:<id>:*`` (found with SCAN,
  deleted in batches of :data:`SCAN_BATCH`) and the eviction-in-flight marker.

Every step is idempotent, so retries are safe. Shares its lock with
``move_repository_storage`` so a rename's move and this removal never interleave.
"""

from __future__ import annotations

from sqlalchemy import text

from cocov_jobs import contracts
from cocov_jobs.engine.context import JobContext
from cocov_jobs.engine.registry import job

#: Keys asked per SCAN call and deleted per DEL.
SCAN_BATCH = 500

_NAME_TAKEN = text("SELECT EXISTS (SELECT 1 FROM repositories WHERE name = CAST(:name AS citext))")


@job(lock="repository-storage:{repository_id}", dedupe="{repository_id}", internal=True)
async def remove_repository_leftovers(
    ctx: JobContext, repository_id: int, repository_name: str
) -> None:
    """Remove a destroyed repository's stored clones and Redis keys."""
    await _remove_clones(ctx, repository_name)
    removed = await _remove_keys(ctx, repository_id)
    ctx.log.info("repository leftovers removed", repository_id=repository_id, redis_keys=removed)


async def _remove_clones(ctx: JobContext, name: str) -> None:
    async with ctx.db() as session:
        taken = await session.scalar(_NAME_TAKEN, {"name": name})
    if taken:
        ctx.log.info("another repository now has this name; clones kept", name=name)
        return
    await ctx.services.storage.destroy_repository(name)


async def _remove_keys(ctx: JobContext, repository_id: int) -> int:
    """Delete the repository's keys; return how many existed."""
    removed = await ctx.redis.delete(contracts.eviction_in_flight_key(repository_id))
    pattern = contracts.deferred_coverage_key(repository_id, "*")
    batch: list[bytes] = []
    async for key in ctx.redis.scan_iter(match=pattern, count=SCAN_BATCH):
        batch.append(key)
        if len(batch) >= SCAN_BATCH:
            removed += await ctx.redis.delete(*batch)
            batch.clear()
    if batch:
        removed += await ctx.redis.delete(*batch)
    return int(removed)
