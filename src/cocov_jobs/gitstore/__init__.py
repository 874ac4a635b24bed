"""Cloned commits: fetch one commit, archive it for the Worker, store it locally or in S3.

Layout and contracts: :mod:`~cocov_jobs.gitstore.layout`. Choose a storage with
:func:`storage_from_settings`; every storage implements :class:`CommitStorage`.
"""

from __future__ import annotations

from cocov_jobs.gitstore.build import CLONE_TIMEOUT
from cocov_jobs.gitstore.clone import CloneError, scrub
from cocov_jobs.gitstore.layout import archive_name, repo_dir, shasum_name
from cocov_jobs.gitstore.local import LocalStorage
from cocov_jobs.gitstore.storage import CommitStorage, StorageMode, storage_from_settings

__all__ = [
    "CLONE_TIMEOUT",
    "CloneError",
    "CommitStorage",
    "LocalStorage",
    "StorageMode",
    "archive_name",
    "repo_dir",
    "scrub",
    "shasum_name",
    "storage_from_settings",
]
