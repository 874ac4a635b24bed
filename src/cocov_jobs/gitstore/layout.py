"""Storage layout shared with Cocov's Go Worker, which recomputes it on its own side.

For a repository named ``name`` and a commit ``sha``, relative to the storage root (a base
directory locally, the bucket root in S3)::

    <repo_dir(name)>/<sha>/…                 the checked-out tree (no .git)
    <repo_dir(name)>/<sha>.tar.zst           tar of ``<sha>/…`` compressed with zstd
    <repo_dir(name)>/<sha>.tar.zst.shasum    exactly ``sha256:<hex of the .tar.zst>``, no newline

The Worker reads only the ``.tar.zst`` and ``.shasum`` pair; the tree serves the manifest and
the file viewer.
"""

from __future__ import annotations

import hashlib
import re

#: Suffix of the compressed archive next to the commit tree.
ARCHIVE_SUFFIX = ".tar.zst"
#: Suffix of the digest file; its presence marks a published commit.
SHASUM_SUFFIX = ".tar.zst.shasum"
#: Suffix of Cocov's intermediate uncompressed archive (never written by us).
COCOV_TAR_SUFFIX = ".tar"
#: Prefix of the digest file's content (the Worker derives the algorithm from it).
SHASUM_PREFIX = "sha256:"

#: A full commit id: SHA-1 (40 hex) or SHA-256 (64 hex) object format, lower case.
_SHA_RE = re.compile(r"[0-9a-f]{40}|[0-9a-f]{64}")


def repo_dir(repo_name: str) -> str:
    """Directory (or key prefix) of a repository: ``sha1_hex(repo_name)`` of its UTF-8 bytes."""
    return hashlib.sha1(repo_name.encode(), usedforsecurity=False).hexdigest()


def check_sha(sha: str) -> str:
    """Return ``sha`` if it is a full lower-case commit id, else raise ValueError."""
    if not _SHA_RE.fullmatch(sha):
        raise ValueError(f"not a full commit sha: {sha!r}")
    return sha


def archive_name(sha: str) -> str:
    """File name of a commit's archive: ``<sha>.tar.zst``."""
    return sha + ARCHIVE_SUFFIX


def shasum_name(sha: str) -> str:
    """File name of a commit's digest file: ``<sha>.tar.zst.shasum``."""
    return sha + SHASUM_SUFFIX


def relative_parts(path: str) -> tuple[str, ...]:
    """Components of a path inside a commit tree, ``.`` and empty ones dropped.

    Raise ValueError for an absolute path, a ``..`` component, a NUL byte or a path
    naming no file.
    """
    if "\0" in path:
        raise ValueError("path contains a NUL byte")
    if path.startswith("/"):
        raise ValueError(f"absolute path: {path!r}")
    parts = tuple(part for part in path.split("/") if part not in ("", "."))
    if ".." in parts:
        raise ValueError(f"path leaves the commit tree: {path!r}")
    if not parts:
        raise ValueError(f"path names no file: {path!r}")
    return parts
