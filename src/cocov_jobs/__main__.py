"""``python -m cocov_jobs`` is ``cocov-jobs``."""

from __future__ import annotations

from cocov_jobs.cli import main

main()
