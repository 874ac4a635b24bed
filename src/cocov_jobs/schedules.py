"""Periodic jobs: which job runs every how many minutes, from settings (DESIGN §4.14).

:data:`PERIODIC` maps a job's task name to the :class:`~cocov_jobs.config.Settings` field giving
its period in minutes; 0 disables it. :func:`periodic_schedules` turns the table into cron
expressions for the scheduler (PgQueuer's ``SchedulerManager`` takes standard five-field cron):

* ``m < 60`` → ``*/m * * * *`` (minutes divisible by ``m`` — periods that do not divide 60 get
  one shorter gap at each hour);
* ``60 ≤ m < 1440`` → every ``m // 60`` hours, on the hour (``0 */h * * *``);
* ``m ≥ 1440`` → every ``m // 1440`` days at midnight UTC (``0 0 */d * *``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

from cocov_jobs.config import Settings

#: Task name → ``Settings`` field holding its period in minutes (0 = disabled).
PERIODIC: Final[Mapping[str, str]] = {
    "update_organization_repos": "org_repos_refresh_minutes",
    "reconcile_stuck_work": "reconcile_minutes",
    "prune_history": "prune_minutes",
}

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


#: Periodic jobs that talk to GitHub: not scheduled until the GitHub App is configured.
NEEDS_GITHUB: Final = frozenset({"update_organization_repos"})


def periodic_schedules(settings: Settings) -> dict[str, str]:
    """Task name → cron expression of every enabled periodic job."""
    periods = {
        name: int(getattr(settings, field))
        for name, field in PERIODIC.items()
        if settings.github_app_id or name not in NEEDS_GITHUB
    }
    return {name: cron_every(minutes) for name, minutes in periods.items() if minutes > 0}
