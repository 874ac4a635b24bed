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

from typing import Final

from cocov_jobs.config import Settings
from cocov_jobs.engine.registry import Registry

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
