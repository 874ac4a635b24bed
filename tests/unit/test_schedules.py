"""The periodic jobs (declared with ``@job(every=…)``) and their cron expressions."""

from __future__ import annotations

import pytest
from croniter import croniter
from tests.support.settings import make_settings

from cocov_jobs import jobs
from cocov_jobs.engine.schedules import cron_every, periodic_schedules

PERIODIC = {"update_organization_repos", "reconcile_stuck_work", "prune_history"}


@pytest.mark.parametrize(
    ("minutes", "cron"),
    [
        (1, "*/1 * * * *"),
        (5, "*/5 * * * *"),
        (59, "*/59 * * * *"),
        (60, "0 */1 * * *"),
        (90, "0 */1 * * *"),
        (360, "0 */6 * * *"),
        (1440, "0 0 */1 * *"),
        (2880, "0 0 */2 * *"),
    ],
)
def test_cron_every(minutes: int, cron: str) -> None:
    assert cron_every(minutes) == cron
    assert croniter.is_valid(cron)


def test_cron_every_refuses_a_non_positive_period() -> None:
    with pytest.raises(ValueError, match="positive"):
        cron_every(0)


def test_periodic_jobs_come_from_settings_and_zero_disables() -> None:
    settings = make_settings(org_repos_refresh_minutes=0, reconcile_minutes=5, prune_minutes=0)
    assert periodic_schedules(jobs.registry(), settings) == {"reconcile_stuck_work": "*/5 * * * *"}
    defaults = periodic_schedules(jobs.registry(), make_settings(github_app_id="1"))
    assert set(defaults) == PERIODIC


def test_github_jobs_wait_for_the_app() -> None:
    without_app = periodic_schedules(jobs.registry(), make_settings(github_app_id=""))
    assert set(without_app) == PERIODIC - {"update_organization_repos"}


def test_every_periodic_job_is_registered_without_arguments() -> None:
    for name in PERIODIC:
        assert jobs.registry().resolve(name).params == ()
