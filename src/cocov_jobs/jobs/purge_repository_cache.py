"""``purge_repository_cache(repository_id)`` — follow-up of ``destroy_repository``.

Pushes Cocov's ``purge-repository`` housekeeping task (docs/architecture.md §5.2, §6.4) for a
destroyed repository to the Cache service, after the destroy committed. Exactly one task per
repository id, however often this job runs (retries, a worker killed after the push): the push and a
marker key :func:`purge_requested_key` are written together by one Lua script, and a second run
finds the marker. Repository ids are never reused, so the id is the idempotency key. Without
``COCOV_CACHE_SERVICE_URL`` (unset since the destroy) nothing is pushed.
"""

from __future__ import annotations

from cocov_jobs import contracts
from cocov_jobs.engine.context import JobContext
from cocov_jobs.engine.registry import job

#: Seconds the marker lives: far longer than a job can keep retrying.
PURGE_MARKER_TTL = 30 * 24 * 3600

# Set the marker and push the task in one atomic step, only if the marker was absent.
_PUSH_ONCE = """
if redis.call('SET', KEYS[1], '1', 'NX', 'EX', ARGV[1]) then
  redis.call('RPUSH', KEYS[2], ARGV[2])
  return 1
end
return 0
"""


def purge_requested_key(repository_id: int) -> str:
    """Our own key: set once the purge of a destroyed repository was pushed."""
    return f"cocov:jobs:purge_requested:{repository_id}"


@job(dedupe="{repository_id}", internal=True)
async def purge_repository_cache(ctx: JobContext, repository_id: int) -> None:
    """Ask the Cache service, once, to purge a destroyed repository's artifacts."""
    if not ctx.settings.cache_service_url:
        ctx.log.info("cache service not configured; no purge", repository_id=repository_id)
        return
    pushed = await ctx.redis.eval(
        _PUSH_ONCE,
        2,
        purge_requested_key(repository_id),
        contracts.HOUSEKEEPING_QUEUE,
        PURGE_MARKER_TTL,
        contracts.purge_repository_task(repository_id),
    )
    ctx.log.info("repository cache purge requested", repository_id=repository_id, new=bool(pushed))
