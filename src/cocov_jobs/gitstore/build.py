"""Build one commit (checkout, archive, digest) inside a private work directory.

Both storages build the same way and differ only in how they publish the result.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from cocov_jobs.gitstore.artifacts import Build, build_artifacts
from cocov_jobs.gitstore.clone import CloneError, base_env, fetch_commit

#: Seconds a whole build (fetch, checkout, archive) may take before it is killed.
CLONE_TIMEOUT = 600.0
#: Name of git's private ``HOME`` inside the work directory (cannot collide with a sha).
HOME_DIR_NAME = ".home"


async def build_commit(
    work: Path, *, remote: str, sha: str, token: str, time_limit: float = CLONE_TIMEOUT
) -> Build:
    """Fetch ``sha`` from ``remote`` into ``work/<sha>`` and build its artifacts next to it.

    ``work`` must be an existing empty directory; the caller removes it. Raise
    :class:`CloneError`, transient when the build exceeds ``time_limit`` seconds (every child
    process is then killed).
    """
    home = work / HOME_DIR_NAME
    await asyncio.to_thread(home.mkdir)
    try:
        async with asyncio.timeout(time_limit):
            mtime = await fetch_commit(work / sha, remote=remote, sha=sha, token=token, home=home)
            return await build_artifacts(work, sha, mtime=mtime, env=base_env(home))
    except TimeoutError as exc:
        raise CloneError(
            f"clone of {sha} timed out after {time_limit:g} s", transient=True
        ) from exc
