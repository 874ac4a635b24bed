"""Helpers to run the ``cocov-jobs`` command as a separate process."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

CLI = [sys.executable, "-m", "cocov_jobs"]


def cli_env(**values: str) -> dict[str, str]:
    """The parent environment without any ``COCOV_*`` variable, plus ``values``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("COCOV_")}
    env.update(values)
    return env


@pytest.fixture
def cli(
    database_url: str, redis_url: str, tmp_path: Path
) -> Callable[..., subprocess.CompletedProcess[str]]:
    """Run ``cocov-jobs ARGS`` against the test database and Redis; return the result."""

    def run(*args: str, check: bool = True, **env: str) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [*CLI, *args],
            env=cli_env(
                **{
                    "COCOV_DATABASE_URL": database_url,
                    "COCOV_REDIS_URL": redis_url,
                    "COCOV_REDIS_CACHE_URL": redis_url,
                    "COCOV_DATA_DIR": str(tmp_path / "data"),
                    "COCOV_LOG_FORMAT": "json",
                    **env,  # overrides the defaults above
                }
            ),
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        if check and result.returncode != 0:
            raise AssertionError(f"cocov-jobs {' '.join(args)} failed:\n{result.stderr}")
        return result

    return run
