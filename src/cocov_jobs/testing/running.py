"""Run one job in this process, as a worker runs it (tests and benchmarks)."""

from __future__ import annotations

import structlog

from cocov_jobs.engine.context import JobContext, execute
from cocov_jobs.engine.locks import Locks
from cocov_jobs.services import Services


async def run_here(services: Services, locks: Locks, name: str, **args: object) -> None:
    """Run job ``name`` once through :func:`~cocov_jobs.engine.context.execute` (arguments
    validated, lock taken, retry decided); the jobs it enqueues stay in the queue."""
    definition = services.registry.resolve(name)
    ctx = JobContext(
        services=services,
        job_id=0,
        name=definition.name,
        attempts=0,
        locks=locks,
        log=structlog.get_logger(),
    )
    await execute(definition, ctx, args)
