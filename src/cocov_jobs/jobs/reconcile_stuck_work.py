"""``reconcile_stuck_work()`` — the periodic sweep Cocov lacks (docs/architecture.md §4.8, §7.14).

A commit or check set is *stuck* when, for longer than :data:`STUCK_AFTER_MINUTES`:

* the commit's ``clone_status`` is ``in_progress``, or its check set is ``waiting`` (a run
  started and never finished), or ``queued`` while its descriptor is no longer in
  ``cocov:checks`` (the Worker popped it and never reported: it has no acknowledgements);
* and no ``process_commit`` job for the commit is in the queue table at all — queued, running
  *or failed*: a failed job is the operator's to retry (``cocov-jobs jobs retry``), the sweep
  does not loop on it.

Each stuck commit gets a new ``process_commit`` (deduplicated per commit), which clones it if
needed and dispatches its checks again. At most :data:`SWEEP_LIMIT` commits per sweep.
"""

from __future__ import annotations

from typing import Final

from sqlalchemy import text

from cocov_jobs.checks_dispatch import descriptor_waiting
from cocov_jobs.db.models import CheckSetStatus, CloneStatus
from cocov_jobs.engine import queue
from cocov_jobs.engine.context import JobContext
from cocov_jobs.engine.registry import job

#: Minutes without progress after which work counts as stuck.
STUCK_AFTER_MINUTES: Final = 15
#: Most commits re-enqueued by one sweep (the next sweep takes the rest).
SWEEP_LIMIT: Final = 500

_STUCK = text(
    """
    WITH known AS (
        SELECT DISTINCT (convert_from(payload, 'UTF8')::jsonb ->> 'commit_id')::bigint AS id
        FROM pgqueuer WHERE entrypoint = 'process_commit' AND payload IS NOT NULL
    ), cutoff AS (
        SELECT timezone('utc', now()) - make_interval(mins => :minutes) AS at
    ), stuck AS (
        SELECT c.id AS commit_id, NULL::bigint AS check_set_id, c.updated_at
        FROM commits c
        WHERE c.clone_status = :in_progress AND c.updated_at < (SELECT at FROM cutoff)
        UNION ALL
        SELECT s.commit_id, CASE WHEN s.status = :queued THEN s.id END, s.updated_at
        FROM check_sets s
        WHERE s.status IN (:waiting, :queued) AND s.updated_at < (SELECT at FROM cutoff)
    )
    SELECT commit_id, check_set_id FROM stuck
    WHERE commit_id NOT IN (SELECT id FROM known WHERE id IS NOT NULL)
    ORDER BY updated_at
    LIMIT :limit
    """
)


@job(
    lock="reconcile-stuck-work",
    dedupe="sweep",
    every=lambda s: s.reconcile_minutes,
    internal=True,
)
async def reconcile_stuck_work(ctx: JobContext) -> None:
    """Re-enqueue ``process_commit`` for commits whose clone or checks are stuck."""
    params = {
        "in_progress": int(CloneStatus.in_progress),
        "waiting": int(CheckSetStatus.waiting),
        "queued": int(CheckSetStatus.queued),
        "limit": SWEEP_LIMIT,
        "minutes": STUCK_AFTER_MINUTES,
    }
    async with ctx.db.begin() as session:
        rows = (await session.execute(_STUCK, params)).all()
        commits: set[int] = set()
        for commit_id, check_set_id in rows:
            if check_set_id is None or not await descriptor_waiting(ctx.redis, check_set_id):
                commits.add(int(commit_id))
        for commit_id in sorted(commits):
            await queue.enqueue(session, "process_commit", commit_id=commit_id)
    if commits:
        ctx.log.warning("re-enqueued stuck commits", commits=sorted(commits))
