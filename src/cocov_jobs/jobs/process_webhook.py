"""``process_webhook(delivery_id, event, payload)`` — a webhook whose handler failed in the request.

``POST /v1/github/events`` applies deliveries inline; when a handler raises there, the delivery
is recorded with this job instead (:mod:`cocov_jobs.web.webhooks`). The job applies the same
handler table (:mod:`cocov_jobs.web.github_events`) in one transaction, so the engine's retry
policy covers webhook failures: transient errors are retried with backoff, a malformed payload
fails at once with its reason.
"""

from __future__ import annotations

from typing import Any

from cocov_jobs.engine.context import JobContext
from cocov_jobs.engine.registry import job
from cocov_jobs.github_events import apply_event


@job(internal=True)
async def process_webhook(
    ctx: JobContext, delivery_id: str, event: str, payload: dict[str, Any]
) -> None:
    """Apply a recorded GitHub delivery's effects (retried until they are all written).

    The handler table: docs/architecture.md §6.10.
    """
    async with ctx.db.begin() as session:
        effects = await apply_event(session, ctx.redis, event, payload, delivery_id)
    await effects.after_commit()
    ctx.log.info(
        "webhook applied", delivery_id=delivery_id, github_event=event, handlers=effects.handlers
    )
