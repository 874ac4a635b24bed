"""The ``cli`` fixture: the ``cocov-jobs`` command as a separate process, on the test stores."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from cocov_jobs.testing.processes import CLI, cli_env


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
