"""Commits stored under a local base directory (``COCOV_GIT_SERVICE_LOCAL_STORAGE_PATH``).

A clone is built in ``<base>/<sha1>/.tmp-<uuid>/`` (same filesystem as its destination) and
published by renames under an exclusive ``flock`` of ``<base>/<sha1>``: the tree first, then
the archive, then the ``.shasum``. A tree or a ``.shasum`` already in place is kept: trees
only ever arrive whole by rename, and a ``.shasum`` is only ever written after its archive.
The work directory is removed whatever happens, so a failed clone leaves nothing behind.
"""

from __future__ import annotations

import asyncio
import errno
import fcntl
import os
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from functools import partial
from pathlib import Path
from typing import Literal

from cocov_jobs.gitstore.artifacts import Build
from cocov_jobs.gitstore.build import CLONE_TIMEOUT, build_and_publish
from cocov_jobs.gitstore.clone import remote_url
from cocov_jobs.gitstore.layout import (
    SHASUM_SUFFIX,
    archive_name,
    check_sha,
    relative_parts,
    repo_dir,
    shasum_name,
)

#: Prefix of a clone's work directory inside the repository directory.
WORK_DIR_PREFIX = ".tmp-"


class LocalStorage:
    """Cloned commits under ``base``; a relative ``base`` is resolved once, against the CWD."""

    def __init__(self, base: Path | str, *, clone_timeout: float = CLONE_TIMEOUT) -> None:
        self.base = Path(base).resolve()
        self.clone_timeout = clone_timeout

    @property
    def mode(self) -> Literal["local"]:
        return "local"

    def repo_path(self, repo_name: str) -> Path:
        """``<base>/<sha1(repo_name)>``."""
        return self.base / repo_dir(repo_name)

    def commit_path(self, repo_name: str, sha: str) -> str:
        return str(self.repo_path(repo_name) / check_sha(sha))

    async def clone_commit(
        self, *, repo_name: str, sha: str, token: str, org: str, github_url: str
    ) -> int:
        check_sha(sha)
        repo_path = self.repo_path(repo_name)
        work = repo_path / f"{WORK_DIR_PREFIX}{uuid.uuid4().hex}"
        await asyncio.to_thread(work.mkdir, parents=True)
        return await build_and_publish(
            work,
            partial(_publish, repo_path, sha),
            remote=remote_url(github_url, org, repo_name),
            sha=sha,
            token=token,
            time_limit=self.clone_timeout,
        )

    async def commit_exists(self, repo_name: str, sha: str) -> bool:
        shasum = self.repo_path(repo_name) / shasum_name(check_sha(sha))
        return await asyncio.to_thread(shasum.is_file)

    async def read_file(self, repo_name: str, sha: str, path: str) -> bytes | None:
        tree = self.repo_path(repo_name) / check_sha(sha)
        return await asyncio.to_thread(_read_inside, tree, relative_parts(path))

    async def destroy_repository(self, repo_name: str) -> None:
        await asyncio.to_thread(_remove_tree, self.repo_path(repo_name))

    async def rename_repository(self, old_name: str, new_name: str) -> None:
        await asyncio.to_thread(
            _move_repository, self.repo_path(old_name), self.repo_path(new_name)
        )


@contextmanager
def _locked(directory: Path) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``directory`` (released when the descriptor closes)."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _publish(repo_path: Path, sha: str, build: Build) -> None:
    with _locked(repo_path):
        tree = repo_path / sha
        if not tree.exists():
            build.tree.rename(tree)
        shasum = repo_path / shasum_name(sha)
        if not shasum.exists():
            build.archive.replace(repo_path / archive_name(sha))
            build.shasum.replace(shasum)


def _read_inside(tree: Path, parts: tuple[str, ...]) -> bytes | None:
    target = tree.joinpath(*parts).resolve()
    if not target.is_relative_to(tree.resolve()):
        raise ValueError(f"path resolves outside the commit tree: {'/'.join(parts)!r}")
    try:
        return target.read_bytes()
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
        return None


def _remove_tree(path: Path) -> None:
    with suppress(FileNotFoundError):
        shutil.rmtree(path)


def _move_repository(old: Path, new: Path) -> None:
    """Rename ``old`` to ``new``; when ``new`` already holds commits, merge into it."""
    if old == new:
        return
    try:
        old.rename(new)
        return
    except FileNotFoundError:
        return
    except OSError as exc:
        if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST):
            raise
    _merge(old, new)
    _remove_tree(old)


def _merge(old: Path, new: Path) -> None:
    """Move ``old``'s trees, then its published pairs, into ``new`` where ``new`` has none.

    Work directories and unpublished archives of ``old`` are left to be deleted with it.
    """
    entries = sorted(old.iterdir())
    with _locked(new):
        for entry in entries:
            if (
                entry.is_dir()
                and not entry.name.startswith(".")
                and not (new / entry.name).exists()
            ):
                entry.rename(new / entry.name)
        for entry in entries:
            if not entry.name.endswith(SHASUM_SUFFIX) or (new / entry.name).exists():
                continue
            archive = old / archive_name(entry.name.removesuffix(SHASUM_SUFFIX))
            if archive.is_file():
                archive.replace(new / archive.name)
                entry.replace(new / entry.name)
