"""The ``cocov-jobs`` command as a separate process, and waiting on what other processes do.

Shared by the tests, the benchmarks and the fault scenarios.
"""

from __future__ import annotations

import asyncio
import inspect
import os
import socket
import sys
from collections.abc import Awaitable, Callable

from cocov_jobs.config import Settings

#: The ``cocov-jobs`` command, run by the current interpreter (so by this checkout's venv).
CLI = [sys.executable, "-m", "cocov_jobs"]
#: Upper bound, in seconds, for waiting on something another process or connection must reach.
WAIT = 60.0
#: Seconds between two looks at a condition.
POLL_INTERVAL = 0.05

#: The settings :func:`settings_env` carries to another process.
SETTINGS_FIELDS = (
    "github_api_url",
    "github_url",
    "github_app_id",
    "github_app_private_key",
    "github_app_installation_id",
    "github_org_name",
    "git_service_local_storage_path",
    "cryptographic_key",
    "max_attempts",
    "retry_base_seconds",
    "retry_max_seconds",
)


def cli_env(**values: str) -> dict[str, str]:
    """The parent environment without any ``COCOV_*`` variable, plus ``values``.

    ``cocov-jobs worker`` runs one process unless ``values`` asks for more (the supervisor
    has tests of its own).
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith("COCOV_")}
    env["COCOV_WORKER_PROCESSES"] = "1"
    env.update(values)
    return env


def settings_env(settings: Settings) -> dict[str, str]:
    """The ``COCOV_*`` variables that reproduce ``settings`` (GitHub, storage, retries) in
    another process."""
    return {f"COCOV_{name.upper()}": str(getattr(settings, name)) for name in SETTINGS_FIELDS}


def free_port() -> int:
    """A TCP port of 127.0.0.1 that nothing listens on (for a process that takes a port)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def until(condition: Callable[[], bool | Awaitable[bool]], within: float = WAIT) -> None:
    """Return once ``condition()`` holds; :class:`TimeoutError` after ``within`` seconds.

    For state kept by another process, connection or thread, which offers no event to await:
    the condition is polled every :data:`POLL_INTERVAL` seconds.
    """
    async with asyncio.timeout(within):
        while True:
            holds = condition()
            if inspect.isawaitable(holds):
                holds = await holds
            if holds:
                return
            await asyncio.sleep(POLL_INTERVAL)
