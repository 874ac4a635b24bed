"""``python -m cocov_jobs`` is ``cocov-jobs``."""

from __future__ import annotations

from cocov_jobs.cli.main import main

main()
