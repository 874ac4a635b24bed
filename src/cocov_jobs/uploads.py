"""Coverage uploads from a file: ``cocov-jobs enqueue process-coverage REPO_ID SHA --data-file F``.

The file holds either the body Cocov's coverage reporter posts,
``{"data": {"<path>": "<base64>", …}, "commit_sha": "<sha>"}``, or the bare ``data`` map. A
``commit_sha`` in the file must name the same commit as ``SHA``.

Storing follows ``POST /v1/reports`` (docs/architecture.md §6.9, §7.1): under the commit's
registration lock, a registered commit gets the upload stored and ``process_coverage`` enqueued in
the caller's transaction; an unknown commit gets the canonical JSON held in Redis for
:data:`~cocov_jobs.contracts.DEFERRED_COVERAGE_TTL` seconds, claimed when the commit is registered.

Held uploads are bounded per repository: at most :data:`MAX_HELD_UPLOADS` commits and
:data:`MAX_HELD_BYTES` bytes at once (else :class:`HeldLimitError`), so one repository token
cannot park unbounded data in Redis under invented commit ids. An index per repository
(:func:`held_index_key`: commit → size and expiry) is checked and updated atomically with the
hold (:data:`_HOLD`); entries whose upload expired or was claimed by its push no longer count.
A new upload for a commit already held replaces it.
"""

from __future__ import annotations

import asyncio
import json
import time
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


#: Commits of one repository with coverage held at once, and their total size in bytes.
MAX_HELD_UPLOADS = 10
MAX_HELD_BYTES = 128 * 1024 * 1024

#: KEYS: the repository's index, the upload's key. ARGV: the commit, the coverage JSON, its
#: size, the TTL, now (Unix seconds), the two limits, the prefix of the repository's upload
#: keys. Returns 1 when held, 0 when a limit would be exceeded (nothing written).
_HOLD = """
local index, key = KEYS[1], KEYS[2]
local sha, ttl, now = ARGV[1], tonumber(ARGV[4]), tonumber(ARGV[5])
local size, max_count, max_bytes = tonumber(ARGV[3]), tonumber(ARGV[6]), tonumber(ARGV[7])
local count, bytes = 0, 0
local entries = redis.call('HGETALL', index)
for i = 1, #entries, 2 do
  local held, entry = entries[i], entries[i + 1]
  local held_size, expires = string.match(entry, '^(%d+):(%d+)$')
  if held == sha or tonumber(expires or 0) <= now
     or redis.call('EXISTS', ARGV[8] .. held) == 0 then
    redis.call('HDEL', index, held)
  else
    count, bytes = count + 1, bytes + tonumber(held_size)
  end
end
if count + 1 > max_count or bytes + size > max_bytes then return 0 end
redis.call('SET', key, ARGV[2], 'EX', ttl)
redis.call('HSET', index, sha, size .. ':' .. (now + ttl))
redis.call('EXPIRE', index, ttl)
return 1
"""


class UploadError(ValueError):
    """The upload cannot be accepted; the message says why."""


class InvalidCoverageData(UploadError):
    """The ``data`` map breaks the coverage wire format (a path or a value; the message names
    the file)."""


class HeldLimitError(UploadError):
    """The repository already holds as many uploads for unknown commits as allowed."""


def held_index_key(repository_id: int) -> str:
    """The Redis hash of a repository's held uploads: commit → ``<bytes>:<expiry>``."""
    return f"cocov_jobs:held_coverage:{repository_id}"


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
    coverage: str,
) -> StoredUpload:
    """Queue ``coverage`` (the canonical JSON of a ``data`` map, :func:`canonical_coverage`) for
    commit ``sha``, or hold it until the commit is registered (bounded, module docstring)."""
    if not await session.scalar(_FIND_REPOSITORY, {"id": repository_id}):
        raise UploadError(f"repository {repository_id} does not exist")
    await lock_commit(session, repository_id, sha)
    commit_id = await session.scalar(_FIND_COMMIT, {"repository_id": repository_id, "sha": sha})
    if commit_id is None:
        await _hold(redis, repository_id, sha, coverage)
        return StoredUpload(None, None)
    queued = await queue_coverage(
        session, repository_id=repository_id, commit_id=commit_id, sha=sha, coverage=coverage
    )
    return StoredUpload(queued.upload_id, queued.job_id)


async def _hold(redis: aioredis.Redis, repository_id: int, sha: str, coverage: str) -> None:
    key = contracts.deferred_coverage_key(repository_id, sha)
    held = await redis.eval(
        _HOLD,
        2,
        held_index_key(repository_id),
        key,
        sha,
        coverage,
        len(coverage.encode()),
        contracts.DEFERRED_COVERAGE_TTL,
        int(time.time()),
        MAX_HELD_UPLOADS,
        MAX_HELD_BYTES,
        key.removesuffix(sha),
    )
    if not held:
        raise HeldLimitError(
            f"repository {repository_id} already holds coverage for the most commits not yet"
            f" pushed ({MAX_HELD_UPLOADS} commits, {MAX_HELD_BYTES // (1024 * 1024)} MiB);"
            " push the commits first, or wait up to two hours"
        )


async def store_upload_from_file(
    session: AsyncSession, redis: aioredis.Redis, *, repository_id: int, sha: str, path: Path
) -> StoredUpload:
    """:func:`read_upload_file` then :func:`store_upload`, in the caller's transaction."""
    data = await asyncio.to_thread(read_upload_file, path, sha)
    return await store_upload(
        session, redis, repository_id=repository_id, sha=sha, coverage=canonical_coverage(data)
    )


@dataclass(frozen=True)
class HeldUpload:
    """Coverage held in Redis for a commit not registered yet."""

    sha: str
    size: int
    #: Seconds until it expires.
    expires_in: int


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


async def held_uploads(redis: aioredis.Redis, repository_id: int) -> list[HeldUpload]:
    """The coverage held for ``repository_id``'s commits not registered yet, soonest to expire
    first: the live entries of its index (:func:`held_index_key`; at most
    :data:`MAX_HELD_UPLOADS`), without the ones expired or claimed by their push."""
    now = int(time.time())
    candidates: list[tuple[str, int, int]] = []
    for sha, entry in (await redis.hgetall(held_index_key(repository_id))).items():
        size, _, expires = _text(entry).partition(":")
        if size.isdigit() and expires.isdigit() and int(expires) > now:
            candidates.append((_text(sha), int(size), int(expires) - now))
    async with redis.pipeline(transaction=False) as pipe:
        for sha, _, _ in candidates:
            pipe.exists(contracts.deferred_coverage_key(repository_id, sha))
        present = await pipe.execute()
    held = [HeldUpload(*c) for c, there in zip(candidates, present, strict=True) if there]
    return sorted(held, key=lambda upload: upload.expires_in)
