"""Commits stored in an S3 bucket (``COCOV_GIT_SERVICE_S3_STORAGE_BUCKET_NAME``).

Keys mirror the local layout without a base directory: ``<sha1>/<sha>/<file…>``,
``<sha1>/<sha>.tar.zst`` and ``<sha1>/<sha>.tar.zst.shasum``. A clone is built in a local
temporary directory; the tree's files (hidden ones included: the manifest is
``.cocov.yaml``) and the archive are uploaded concurrently, the ``.shasum`` last. When an
upload fails, the keys of this attempt are deleted, unless the ``.shasum`` exists by then (a
concurrent clone of the same commit published it; both builds are byte-identical, see
:mod:`~cocov_jobs.gitstore.artifacts`). Symlinks are uploaded as their target's content
when it lies inside the tree, and skipped otherwise (Cocov's ``aws s3 cp --follow-symlinks``
followed them anywhere). All boto3 calls run in threads.
"""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor, as_completed
from contextlib import suppress
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError

from cocov_jobs.gitstore.artifacts import Build, iter_tree_files
from cocov_jobs.gitstore.build import CLONE_TIMEOUT, build_and_publish
from cocov_jobs.gitstore.clone import remote_url
from cocov_jobs.gitstore.layout import (
    ARCHIVE_SUFFIX,
    COCOV_TAR_SUFFIX,
    SHASUM_SUFFIX,
    archive_name,
    check_sha,
    relative_parts,
    repo_dir,
    shasum_name,
)

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_s3.type_defs import CopySourceTypeDef

#: Uploads, copies and deletes of one operation run on a thread pool of this size.
S3_CONCURRENCY = 16
#: Most keys one DeleteObjects request accepts.
S3_DELETE_BATCH = 1000
#: Largest object one CopyObject request can copy; larger ones use a multipart copy.
S3_COPY_OBJECT_LIMIT = 5 * 1024**3
#: Prefix of the local temporary directory a clone is built in.
WORK_DIR_PREFIX = "cocov-clone-"
#: Error codes S3 answers for a missing key (HEAD has no body, hence the bare status).
_NOT_FOUND_CODES = frozenset({"404", "NoSuchKey", "NotFound"})


class S3Storage:
    """Cloned commits in ``bucket``; ``client`` defaults to ``boto3.client("s3")``.

    Clones are built in a fresh directory under ``work_root`` (default: the system's
    temporary directory), which must have room for one checkout plus its archive.
    """

    def __init__(
        self,
        bucket: str,
        *,
        client: S3Client | None = None,
        clone_timeout: float = CLONE_TIMEOUT,
        concurrency: int = S3_CONCURRENCY,
        work_root: Path | None = None,
    ) -> None:
        self.bucket = bucket
        self.client = client or boto3.client("s3", config=Config(max_pool_connections=concurrency))
        self.clone_timeout = clone_timeout
        self.concurrency = concurrency
        self.work_root = work_root

    @property
    def mode(self) -> Literal["s3"]:
        return "s3"

    def commit_path(self, repo_name: str, sha: str) -> str:
        return f"{repo_dir(repo_name)}/{check_sha(sha)}"

    async def clone_commit(
        self, *, repo_name: str, sha: str, token: str, org: str, github_url: str
    ) -> int:
        check_sha(sha)
        work = Path(
            await asyncio.to_thread(tempfile.mkdtemp, prefix=WORK_DIR_PREFIX, dir=self.work_root)
        )
        return await build_and_publish(
            work,
            partial(self._upload, repo_dir(repo_name), sha),
            remote=remote_url(github_url, org, repo_name),
            sha=sha,
            token=token,
            time_limit=self.clone_timeout,
        )

    async def commit_exists(self, repo_name: str, sha: str) -> bool:
        key = f"{repo_dir(repo_name)}/{shasum_name(check_sha(sha))}"
        return await asyncio.to_thread(self._exists, key)

    async def read_file(self, repo_name: str, sha: str, path: str) -> bytes | None:
        key = self.commit_path(repo_name, sha) + "/" + "/".join(relative_parts(path))
        return await asyncio.to_thread(self._get, key)

    async def destroy_repository(self, repo_name: str) -> None:
        await asyncio.to_thread(self._destroy, repo_dir(repo_name))

    async def rename_repository(self, old_name: str, new_name: str) -> None:
        await asyncio.to_thread(self._move, repo_dir(old_name), repo_dir(new_name))

    # Blocking parts, run in threads ---------------------------------------------------------

    def _upload(self, prefix: str, sha: str, build: Build) -> None:
        files = [
            (f"{prefix}/{sha}/{file.relative}", Path(file.path))
            for file in iter_tree_files(build.tree, skip_hidden=False)
        ]
        archive_key = f"{prefix}/{archive_name(sha)}"
        shasum_key = f"{prefix}/{shasum_name(sha)}"
        try:
            uploads = [partial(self._put, key, path) for key, path in files]
            uploads.append(
                partial(self.client.upload_file, str(build.archive), self.bucket, archive_key)
            )
            self._parallel(uploads)
            self._put(shasum_key, build.shasum)
        except BaseException:
            # Best effort: a failing cleanup must not hide why the upload failed.
            with suppress(Exception):
                if not self._exists(shasum_key):
                    self._delete([key for key, _ in files] + [archive_key, shasum_key])
            raise

    def _put(self, key: str, path: Path) -> None:
        with path.open("rb") as body:
            self.client.put_object(Bucket=self.bucket, Key=key, Body=body)

    def _exists(self, key: str) -> bool:
        try:
            self.client.head_object(Bucket=self.bucket, Key=key)
        except ClientError as exc:
            if _is_not_found(exc):
                return False
            raise
        return True

    def _get(self, key: str) -> bytes | None:
        try:
            return self.client.get_object(Bucket=self.bucket, Key=key)["Body"].read()
        except ClientError as exc:
            if _is_not_found(exc):
                return None
            raise

    def _list(self, prefix: str) -> list[tuple[str, int]]:
        """``(key, size)`` of every object whose key starts with ``prefix``."""
        paginator = self.client.get_paginator("list_objects_v2")
        return [
            (obj["Key"], obj["Size"])
            for page in paginator.paginate(Bucket=self.bucket, Prefix=prefix)
            for obj in page.get("Contents", [])
        ]

    def _delete(self, keys: list[str]) -> None:
        for start in range(0, len(keys), S3_DELETE_BATCH):
            batch = keys[start : start + S3_DELETE_BATCH]
            response = self.client.delete_objects(
                Bucket=self.bucket,
                Delete={"Objects": [{"Key": key} for key in batch], "Quiet": True},
            )
            if errors := response.get("Errors"):
                first = errors[0]
                raise RuntimeError(
                    f"S3 did not delete {len(errors)} keys; first {first.get('Key')}: "
                    f"{first.get('Code')} {first.get('Message')}"
                )

    def _destroy(self, prefix: str) -> None:
        self._delete([key for key, _ in self._list(prefix + "/")])

    def _move(self, old_prefix: str, new_prefix: str) -> None:
        """Copy ``old_prefix``'s objects to ``new_prefix`` (``.shasum`` last), then delete them.

        Commits published under ``new_prefix`` keep their objects; ``old_prefix``'s copies of
        those commits are only deleted.
        """
        if old_prefix == new_prefix:
            return
        objects = self._list(old_prefix + "/")
        published = {
            _commit_of(key.removeprefix(new_prefix + "/"))
            for key, _ in self._list(new_prefix + "/")
            if key.endswith(SHASUM_SUFFIX)
        }
        copies = [
            (key, new_prefix + "/" + relative, size)
            for key, size in objects
            if _commit_of(relative := key.removeprefix(old_prefix + "/")) not in published
        ]
        self._parallel(partial(self._copy, *c) for c in copies if not c[0].endswith(SHASUM_SUFFIX))
        self._parallel(partial(self._copy, *c) for c in copies if c[0].endswith(SHASUM_SUFFIX))
        self._delete([key for key, _ in objects])

    def _copy(self, source: str, target: str, size: int) -> None:
        copy_source: CopySourceTypeDef = {"Bucket": self.bucket, "Key": source}
        if size <= S3_COPY_OBJECT_LIMIT:
            self.client.copy_object(Bucket=self.bucket, Key=target, CopySource=copy_source)
        else:
            self.client.copy(copy_source, self.bucket, target)

    def _parallel(self, calls: Iterable[Callable[[], object]]) -> None:
        """Run ``calls`` on the pool; on the first failure cancel the rest and raise it."""
        with ThreadPoolExecutor(max_workers=self.concurrency) as pool:
            futures = [pool.submit(call) for call in calls]
            try:
                for future in as_completed(futures):
                    future.result()
            except BaseException:
                pool.shutdown(cancel_futures=True)
                raise


def _is_not_found(exc: ClientError) -> bool:
    return exc.response.get("Error", {}).get("Code") in _NOT_FOUND_CODES


def _commit_of(relative_key: str) -> str:
    """The commit a key relative to a repository prefix belongs to (tree file or artifact)."""
    name = relative_key.split("/", 1)[0]
    for suffix in (SHASUM_SUFFIX, ARCHIVE_SUFFIX, COCOV_TAR_SUFFIX):
        name = name.removesuffix(suffix)
    return name
