"""Build one commit (checkout, archive, digest) inside a private work directory, publish it.

Both storages build the same way and differ only in how they publish the result.
"""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import Callable
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


async def build_and_publish(
    work: Path,
    publish: Callable[[Build], None],
    *,
    remote: str,
    sha: str,
    token: str,
    time_limit: float = CLONE_TIMEOUT,
) -> int:
    """Build in the empty directory ``work``, run ``publish(build)`` in a thread; return the size.

    ``work`` is removed in every case. After a successful build the publishing thread removes
    it itself, so a caller cancelled mid-publish cannot delete files still being published.
    """
    try:
        build = await build_commit(work, remote=remote, sha=sha, token=token, time_limit=time_limit)
    except BaseException:
        await asyncio.to_thread(remove_work_dir, work)
        raise
    await asyncio.to_thread(_publish_then_remove, publish, build, work)
    return build.size


def remove_work_dir(work: Path) -> None:
    """Remove a build's work directory, best effort (errors are ignored)."""
    shutil.rmtree(work, ignore_errors=True)


def _publish_then_remove(publish: Callable[[Build], None], build: Build, work: Path) -> None:
    try:
        publish(build)
    finally:
        remove_work_dir(work)
