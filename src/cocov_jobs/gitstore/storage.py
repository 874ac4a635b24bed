"""The storage interface of cloned commits and the choice of implementation."""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal, Protocol

from cocov_jobs.gitstore.local import LocalStorage

if TYPE_CHECKING:
    from cocov_jobs.config import Settings

#: Values of ``COCOV_GIT_SERVICE_STORAGE_MODE`` (and of the Worker descriptor's ``mode``).
StorageMode = Literal["local", "s3"]


class CommitStorage(Protocol):
    """Where cloned commits live, in Cocov's layout (see :mod:`cocov_jobs.gitstore.layout`).

    A commit is *published* once its ``.shasum`` exists; it is written last, after the tree
    and the archive, so a published commit is always complete. A failed clone leaves nothing.
    """

    @property
    def mode(self) -> StorageMode:
        """``local`` or ``s3``, as written in the Worker descriptor."""
        ...

    def commit_path(self, repo_name: str, sha: str) -> str:
        """The Worker descriptor's ``git_storage.path`` of a commit.

        Local: the absolute ``<base>/<sha1>/<sha>``; S3: ``<sha1>/<sha>``.
        """
        ...

    async def clone_commit(
        self, *, repo_name: str, sha: str, token: str, org: str, github_url: str
    ) -> int:
        """Clone ``sha`` of ``<github_url>/<org>/<repo_name>.git``; return its clone size.

        Raise :class:`~cocov_jobs.gitstore.clone.CloneError` when git (or tar, zstd) fails.
        When the commit is already published, the existing files are kept and the new build
        is discarded (both hold the same commit). Safe to call concurrently for one commit.
        """
        ...

    async def commit_exists(self, repo_name: str, sha: str) -> bool:
        """True when the commit is published (its ``.tar.zst.shasum`` exists)."""
        ...

    async def read_file(self, repo_name: str, sha: str, path: str) -> bytes | None:
        """Contents of ``path`` in the commit's tree, or None when there is no such file.

        Raise ValueError for a path that is absolute, contains ``..`` or a NUL byte, or
        resolves outside the commit's tree.
        """
        ...

    async def destroy_repository(self, repo_name: str) -> None:
        """Delete every stored commit of the repository; a missing repository is success."""
        ...

    async def rename_repository(self, old_name: str, new_name: str) -> None:
        """Move stored commits from ``sha1(old_name)`` to ``sha1(new_name)``.

        Commits already published under the new name win over the old name's copies.
        """
        ...


def storage_from_settings(settings: Settings) -> CommitStorage:
    """The storage ``COCOV_GIT_SERVICE_STORAGE_MODE`` selects.

    S3 uses boto3's default credential chain and honours ``AWS_ENDPOINT_URL`` /
    ``AWS_ENDPOINT_URL_S3`` (boto3 reads them itself).
    """
    if settings.git_service_storage_mode == "s3":
        from cocov_jobs.gitstore.s3 import S3Storage  # boto3 takes long to import

        return S3Storage(settings.git_service_s3_storage_bucket_name)
    return LocalStorage(settings.git_service_local_storage_path)
