"""The ``.tar.zst`` archive, its ``.shasum`` file and the clone size of a checked-out commit.

The archive is ``tar -cf - <sha>`` run in the tree's parent directory (entries prefixed
``<sha>/``, as the Worker's ``tar --strip-components=1`` expects) piped into ``zstd -T0``;
no intermediate ``.tar`` is written: the tar bytes are counted as they stream through.
Entries are sorted by name and stamped with the commit time, so two builds of one commit on
one host are byte-identical (zstd's multi-threaded output does not depend on the thread
count): concurrent publishers of the same commit cannot pair one build's archive with
another build's digest.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from cocov_jobs.gitstore.clone import CloneError
from cocov_jobs.gitstore.layout import SHASUM_PREFIX, archive_name, shasum_name
from cocov_jobs.gitstore.process import Completed, run_pipeline

#: Bytes read at a time when hashing the archive.
HASH_CHUNK_SIZE = 1 << 20


@dataclass(frozen=True)
class Build:
    """A commit built in a work directory, ready to be published."""

    tree: Path
    archive: Path
    shasum: Path
    #: Cocov's ``clone_size`` (see :func:`clone_size`).
    size: int


class TreeFile(NamedTuple):
    """One file of a checked-out tree."""

    #: Posix path relative to the tree's root.
    relative: str
    #: File to read: the entry itself, or a symlink's target.
    path: str
    #: Size in bytes of ``path``.
    size: int


def iter_tree_files(root: Path, *, skip_hidden: bool) -> Iterator[TreeFile]:
    """Yield every file under ``root``, in no particular order.

    Regular files are yielded as they are; a symlink is yielded with its target when it
    resolves to a regular file inside ``root``, and skipped otherwise (broken, a directory,
    or outside the checkout: a repository must not make us read the host's files).
    Directories reached through symlinks are not entered. With ``skip_hidden``, names
    starting with ``.`` (files and directories) are skipped, as Cocov's glob does.
    """
    real_root = os.path.realpath(root)
    stack = [(os.fspath(root), "")]
    while stack:
        directory, prefix = stack.pop()
        with os.scandir(directory) as entries:
            for entry in entries:
                if skip_hidden and entry.name.startswith("."):
                    continue
                relative = prefix + entry.name
                if entry.is_dir(follow_symlinks=False):
                    stack.append((entry.path, relative + "/"))
                elif entry.is_symlink():
                    target = _file_inside(entry.path, real_root)
                    if target is not None:
                        yield TreeFile(relative, target, os.stat(target).st_size)
                elif entry.is_file(follow_symlinks=False):
                    yield TreeFile(relative, entry.path, entry.stat(follow_symlinks=False).st_size)


def _file_inside(link: str, real_root: str) -> str | None:
    """The regular file ``link`` resolves to, when it lies under ``real_root``."""
    target = os.path.realpath(link)
    inside = os.path.commonpath([target, real_root]) == real_root
    return target if inside and os.path.isfile(target) else None


def tree_size(root: Path) -> int:
    """Sum of the sizes of the files :func:`iter_tree_files` yields with ``skip_hidden``."""
    return sum(file.size for file in iter_tree_files(root, skip_hidden=True))


def sha256_file(path: Path) -> str:
    """Hex SHA-256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        while chunk := stream.read(HASH_CHUNK_SIZE):
            digest.update(chunk)
    return digest.hexdigest()


def clone_size(tree_bytes: int, tar_bytes: int, archive: Path, shasum: Path) -> int:
    """Cocov's ``clone_size``: tree files (hidden ones skipped) + ``.tar`` + ``.tar.zst`` +
    ``.tar.zst.shasum``, the four sizes Cocov's ``update_commit_size`` adds up.

    Cocov wrote the ``.tar`` to disk and took its size; ``tar_bytes`` is the same number, the
    length of the uncompressed stream (GNU tar pads it to whole 10 KiB records either way).
    """
    return tree_bytes + tar_bytes + archive.stat().st_size + shasum.stat().st_size


async def build_artifacts(parent: Path, sha: str, *, mtime: int, env: Mapping[str, str]) -> Build:
    """Archive ``parent/<sha>`` into ``parent/<sha>.tar.zst`` and write its ``.shasum``.

    Raise :class:`CloneError` (transient) when tar or zstd fails.
    """
    archive = parent / archive_name(sha)
    tar = ("tar", "--sort=name", f"--mtime=@{mtime}", "--format=gnu", "-cf", "-", sha)
    zstd = ("zstd", "-T0", "-q", "-o", str(archive))
    piped, tree_bytes = await asyncio.gather(
        run_pipeline(tar, zstd, cwd=parent, env=env),
        asyncio.to_thread(tree_size, parent / sha),
    )
    _check("tar", piped.producer)
    _check("zstd", piped.consumer)
    shasum = parent / shasum_name(sha)
    digest = await asyncio.to_thread(sha256_file, archive)
    await asyncio.to_thread(shasum.write_text, SHASUM_PREFIX + digest, encoding="ascii")
    size = clone_size(tree_bytes, piped.relayed, archive, shasum)
    return Build(parent / sha, archive, shasum, size)


def _check(program: str, result: Completed) -> None:
    if result.returncode != 0:
        stderr = result.stderr.decode(errors="replace").strip()
        raise CloneError(
            f"{program} failed with exit status {result.returncode}: {stderr}", transient=True
        )
