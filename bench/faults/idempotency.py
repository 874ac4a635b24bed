"""Scenario 5 of issue 7 — idempotency: each of the ten jobs, run twice in a row on the same
input, leaves the same final state as one run.

Runs ``tests/integration/test_idempotency.py`` (one case per job, real PostgreSQL, Redis, git
and the GitHub fake on loopback; the comparison covers every table, every Redis key, the clone
storage and the commit statuses) and reports one trial per job; a failure names the job.

Usage: ``python bench/faults/idempotency.py``
"""

from __future__ import annotations

import re
import sys
import time

import pytest
from common import ROOT, summary

TEST_FILE = ROOT / "tests" / "integration" / "test_idempotency.py"
CASE_ID = re.compile(r"\[(?P<job>[a-z_]+)\]$")


class Outcomes:
    """A pytest plugin recording each case's outcome by job name."""

    def __init__(self) -> None:
        self.by_job: dict[str, str] = {}

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        match = CASE_ID.search(report.nodeid)
        if match and (report.when == "call" or report.outcome != "passed"):
            self.by_job[match["job"]] = report.outcome


def main() -> int:
    outcomes = Outcomes()
    started = time.monotonic()
    pytest.main(
        ["-q", "-p", "no:cacheprovider", "--rootdir", str(ROOT), str(TEST_FILE)],
        plugins=[outcomes],
    )
    failed = sorted(job for job, outcome in outcomes.by_job.items() if outcome != "passed")
    return summary(
        "idempotency",
        len(outcomes.by_job),
        len(failed),
        jobs=len(outcomes.by_job),
        failed_jobs=",".join(failed) or "none",
        seconds=round(time.monotonic() - started, 1),
    )


if __name__ == "__main__":
    sys.exit(main())
