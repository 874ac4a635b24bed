"""Periodic jobs: cron expressions for the jobs the registry declares with ``every=…``.

A job marked ``@job(every=lambda settings: minutes)`` runs every ``minutes`` minutes (0
disables it). :func:`periodic_schedules` turns the periods into cron expressions for the
scheduler (PgQueuer's ``SchedulerManager`` takes standard five-field cron):

* ``m < 60`` → ``*/m * * * *`` (minutes divisible by ``m`` — periods that do not divide 60 get
  one shorter gap at each hour);
* ``60 ≤ m < 1440`` → every ``m // 60`` hours, on the hour (``0 */h * * *``);
* ``m ≥ 1440`` → every ``m // 1440`` days at midnight UTC (``0 0 */d * *``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, Final

import asyncpg
import structlog
from pgqueuer.db import AsyncpgPoolDriver
from pgqueuer.queries import Queries
from pgqueuer.sm import SchedulerManager

from cocov_jobs.config import Settings
from cocov_jobs.engine.queue import enqueue, enqueued_by
from cocov_jobs.engine.registry import Registry
from cocov_jobs.services import Services

log = structlog.get_logger(__name__)

#: Seconds before the scheduler starts again after it failed (PostgreSQL went away).
RESTART_DELAY = 0.5

_MINUTES_PER_HOUR: Final = 60
_MINUTES_PER_DAY: Final = 1440


def cron_every(minutes: int) -> str:
    """A cron expression firing every ``minutes`` minutes (module rules); ``minutes`` > 0."""
    if minutes <= 0:
        raise ValueError(f"a period must be positive, got {minutes}")
    if minutes < _MINUTES_PER_HOUR:
        return f"*/{minutes} * * * *"
    if minutes < _MINUTES_PER_DAY:
        return f"0 */{minutes // _MINUTES_PER_HOUR} * * *"
    return f"0 0 */{minutes // _MINUTES_PER_DAY} * *"


def periodic_schedules(registry: Registry, settings: Settings) -> dict[str, str]:
    """Task name → cron expression of every enabled periodic job."""
    return {name: cron_every(minutes) for name, minutes in registry.periodic(settings).items()}


async def enqueue_periodic(services: Services, name: str) -> int | None:
    """Enqueue the periodic job ``name`` now, recorded as enqueued by ``schedule``."""
    async with services.sessions.begin() as session, enqueued_by("schedule"):
        return await enqueue(session, name)


async def run_periodic(services: Services, pool: Callable[[], asyncpg.Pool | None]) -> None:
    """Enqueue the periodic jobs when due, until cancelled.

    PgQueuer's schedules table makes each tick fire once across all processes; the job's
    dedupe key keeps at most one waiting copy if ticks outpace the runs. After a failure the
    scheduler starts again on the pool ``pool()`` returns then.
    """
    schedules = periodic_schedules(services.registry, services.settings)
    if not schedules:
        return

    async def on_tick(schedule: Any) -> None:
        job_id = await enqueue_periodic(services, str(schedule.entrypoint))
        log.info("periodic job enqueued", job=str(schedule.entrypoint), job_id=job_id)

    while True:
        current = pool()
        assert current is not None
        manager = SchedulerManager(Queries(AsyncpgPoolDriver(current)))
        for name, expression in schedules.items():
            manager.schedule(name, expression, clean_old=True)(on_tick)
        try:
            await manager.run()
            return
        except Exception as exc:
            log.warning("scheduler failed; restarting", error=repr(exc))
        finally:
            manager.shutdown.set()
        await asyncio.sleep(RESTART_DELAY)
