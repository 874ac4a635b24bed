"""Settings for tests."""

from __future__ import annotations

from typing import Any

from cocov_jobs.config import Settings


def make_settings(**overrides: Any) -> Settings:
    """Settings for tests: fast retries, short timeouts, plus ``overrides``."""
    values: dict[str, Any] = {
        "retry_base_seconds": 0.05,
        "retry_max_seconds": 0.2,
        "heartbeat_timeout": 30.0,
        "shutdown_timeout": 5.0,
        "github_org_name": "acme",
    }
    values.update(overrides)
    return Settings(**values)
