"""Coverage uploads from a file: ``cocov-jobs enqueue process-coverage REPO_ID SHA --data-file F``.

The file holds either the body Cocov's coverage reporter posts,
``{"data": {"<path>": "<base64>", …}, "commit_sha": "<sha>"}``, or the bare ``data`` map. A
``commit_sha`` in the file must name the same commit as ``SHA``.

Storing follows ``POST /v1/reports`` (docs/architecture.md §6.9, §7.1): under the commit's
registration lock, a registered commit gets the upload stored and ``process_coverage`` enqueued in
the caller's transaction; an unknown commit gets the canonical JSON held in Redis for
:data:`~cocov_jobs.contracts.DEFERRED_COVERAGE_TTL` seconds, claimed when the commit is registered.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from cocov_jobs import contracts
from cocov_jobs.coverage import CoverageFormatError, decode_payload, validate_path
from cocov_jobs.registration import canonical_coverage, lock_commit, queue_coverage

_FIND_REPOSITORY = text("SELECT EXISTS (SELECT 1 FROM repositories WHERE id = :id)")
_FIND_COMMIT = text("SELECT id FROM commits WHERE repository_id = :repository_id AND sha = :sha")


class UploadError(ValueError):
    """The upload cannot be accepted; the message says why."""


class InvalidCoverageData(UploadError):
    """The ``data`` map breaks the coverage wire format (a path or a value; the message names
    the file)."""


@dataclass(frozen=True)
class StoredUpload:
    """An upload queued for processing (ids set) or held until its commit is registered."""

    upload_id: int | None
    job_id: int | None

    @property
    def deferred(self) -> bool:
        return self.upload_id is None


def parse_upload_document(document: object, sha: str) -> dict[str, Any]:
    """The ``data`` map of a reporter body or of a bare map (module docstring)."""
    if not isinstance(document, dict):
        raise UploadError("the coverage file must hold a JSON object")
    data: dict[str, Any] = document
    if isinstance(document.get("data"), dict):
        data = document["data"]
        commit_sha = document.get("commit_sha")
        if commit_sha is not None and str(commit_sha).lower() != sha.lower():
            raise UploadError(f"the coverage file is for commit {commit_sha}, not {sha}")
    if not data:
        raise UploadError("the coverage file holds no data")
    return data


def check_coverage_data(data: object) -> dict[str, str]:
    """``data`` if it maps canonical relative paths to base64 coverage, else
    :class:`InvalidCoverageData`; the check ``POST /v1/reports`` and Sidekiq's
    ``ProcessCoverageJob`` payloads share.
    """
    if not isinstance(data, dict):
        raise InvalidCoverageData("data must map file paths to base64 coverage data")
    for path, encoded in data.items():
        try:
            validate_path(path)
            if not isinstance(encoded, str):
                raise CoverageFormatError(f"Coverage data for {path!r} is not a string")
            decode_payload(path, encoded)
        except CoverageFormatError as exc:
            raise InvalidCoverageData(str(exc)) from None
    return data


def read_upload_file(path: Path, sha: str) -> dict[str, Any]:
    """Read and parse an upload file (see :func:`parse_upload_document`)."""
    try:
        document = json.loads(path.read_bytes())
    except OSError as exc:
        raise UploadError(f"cannot read {path}: {exc.strerror}") from None
    except ValueError as exc:
        raise UploadError(f"{path} is not JSON: {exc}") from None
    return parse_upload_document(document, sha)


async def store_upload(
    session: AsyncSession,
    redis: aioredis.Redis,
    *,
    repository_id: int,
    sha: str,
    data: dict[str, Any],
) -> StoredUpload:
    """Queue ``data`` for commit ``sha``, or hold it until the commit is registered."""
    if not await session.scalar(_FIND_REPOSITORY, {"id": repository_id}):
        raise UploadError(f"repository {repository_id} does not exist")
    await lock_commit(session, repository_id, sha)
    commit_id = await session.scalar(_FIND_COMMIT, {"repository_id": repository_id, "sha": sha})
    if commit_id is None:
        await redis.set(
            contracts.deferred_coverage_key(repository_id, sha),
            canonical_coverage(data),
            ex=contracts.DEFERRED_COVERAGE_TTL,
        )
        return StoredUpload(None, None)
    queued = await queue_coverage(
        session, repository_id=repository_id, commit_id=commit_id, sha=sha, data=data
    )
    return StoredUpload(queued.upload_id, queued.job_id)


async def store_upload_from_file(
    session: AsyncSession, redis: aioredis.Redis, *, repository_id: int, sha: str, path: Path
) -> StoredUpload:
    """:func:`read_upload_file` then :func:`store_upload`, in the caller's transaction."""
    data = await asyncio.to_thread(read_upload_file, path, sha)
    return await store_upload(session, redis, repository_id=repository_id, sha=sha, data=data)
