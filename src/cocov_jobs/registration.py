"""Registering commits and coverage uploads: the one place both webhooks and jobs go through.

:func:`register_head_commit` is what a push webhook and ``initialize_repository`` do, in the
caller's transaction: create (or reuse) the commit, move the branch head, claim coverage that
arrived before the commit (docs/architecture.md §7.1) and enqueue its processing, then enqueue
``process_commit`` unless the commit was already processed (§7.11). Because the jobs are
enqueued in the same transaction that moves the heads, ``process_coverage`` always sees the
branch heads already moved.

Deferred coverage is claimed in two steps so that a rollback never loses it: the payload is read
(GET) and stored as an upload inside the transaction; :meth:`Registration.after_commit` deletes
the Redis key afterwards only if it still holds the same payload (a newer upload stays).

Whoever decides whether commit ``sha`` exists — registration, and a coverage upload choosing
between processing and holding — first takes :func:`lock_commit`, a transaction-level advisory
lock. Without it an upload could miss a commit being registered and hold its coverage after the
registration looked for it: never processed.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import redis.asyncio as aioredis
import structlog
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from cocov_jobs import contracts
from cocov_jobs.db.models import CloneStatus, CoverageStatus
from cocov_jobs.engine import queue
from cocov_jobs.ruby_text import parse_ruby_string_hash

log = structlog.get_logger(__name__)

_UPSERT_COMMIT = text(
    """
    INSERT INTO commits (repository_id, sha, message, author_name, author_email, clone_status,
                         created_at, updated_at)
    VALUES (:repository_id, :sha, :message, :author_name, :author_email, :queued,
            timezone('utc', now()), timezone('utc', now()))
    ON CONFLICT (sha, repository_id) DO UPDATE SET sha = commits.sha
    RETURNING id, clone_status, (xmax = 0) AS inserted,
              EXISTS (SELECT 1 FROM check_sets WHERE check_sets.commit_id = commits.id) AS checked
    """
)

#: Moves the head unless ``:expected`` (a push's ``before``) is given and the branch's head is
#: another commit; returns a row only when the head is (now) the commit.
_MOVE_HEAD = text(
    """
    INSERT INTO branches (repository_id, name, head_id, created_at, updated_at)
    VALUES (:repository_id, :name, :head_id, timezone('utc', now()), timezone('utc', now()))
    ON CONFLICT (repository_id, name)
    DO UPDATE SET head_id = EXCLUDED.head_id, updated_at = EXCLUDED.updated_at
    WHERE CAST(:expected AS text) IS NULL
       OR branches.head_id IS NULL
       OR branches.head_id = EXCLUDED.head_id
       OR branches.head_id = (SELECT id FROM commits
                              WHERE repository_id = :repository_id AND sha = :expected)
    RETURNING head_id
    """
)

_HEAD_SHA = text(
    "SELECT c.sha FROM branches b JOIN commits c ON c.id = b.head_id"
    " WHERE b.repository_id = :repository_id AND b.name = :name"
)

_RESET_COVERAGE = text(
    """
    INSERT INTO coverage_infos (commit_id, status, created_at, updated_at)
    VALUES (:commit_id, :status, timezone('utc', now()), timezone('utc', now()))
    ON CONFLICT (commit_id) DO UPDATE SET status = EXCLUDED.status,
                                          updated_at = EXCLUDED.updated_at
    """
)

_LOCK_COMMIT = text("SELECT pg_advisory_xact_lock(hashtextextended(:key, 0))")

_DELETE_IF_SAME = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


def canonical_coverage(data: dict[str, Any]) -> str:
    """The JSON stored for deferred coverage: ``{"<path>": "<base64>"}``, keys sorted."""
    return json.dumps(data, sort_keys=True, separators=(",", ":"))


@dataclass
class Registration:
    """What :func:`register_head_commit` did; call :meth:`after_commit` once committed."""

    commit_id: int
    created: bool
    process_commit_job: int | None
    coverage_upload_id: int | None
    #: The branch's head when it was not moved to this commit (see ``expected_head``).
    kept_head: str | None = None
    _claimed: list[tuple[str, bytes | str]] = field(default_factory=list, repr=False)

    async def after_commit(self, redis: aioredis.Redis) -> None:
        """Forget the deferred coverage this registration stored (when unchanged)."""
        for key, value in self._claimed:
            await redis.eval(_DELETE_IF_SAME, 1, key, value)
        self._claimed.clear()


def _pending_coverage(key: str, pending: bytes | str) -> str | None:
    """The held upload as JSON text, or None (logged, then discarded) when it cannot be read.

    We hold JSON. Cocov's API held the reporter's ``data`` as Ruby ``Hash#inspect`` text
    (``{"a.rb"=>"eJw="}``: its Redis client stringifies the parameters object), which Cocov's
    own push handler then failed to parse; a push we handle reads that too, so coverage posted
    to Cocov's API before the commit existed is processed. Anything else is dropped: a key
    left by a Cocov installation must not block the push that finds it.
    """
    try:
        text_ = pending.decode() if isinstance(pending, bytes) else pending
        data = json.loads(text_)
    except ValueError:  # UnicodeDecodeError included
        inspected = _ruby_inspected_upload(pending)
        if inspected is not None:
            return canonical_coverage(inspected)
        data = None
    if isinstance(data, dict):
        return text_
    log.warning("discarding deferred coverage that is neither JSON nor Ruby hash text", key=key)
    return None


def _ruby_inspected_upload(pending: bytes | str) -> dict[str, str] | None:
    try:
        text = pending.decode("utf-8") if isinstance(pending, bytes) else pending
        return parse_ruby_string_hash(text)
    except ValueError:  # UnicodeDecodeError included
        return None


async def lock_commit(session: AsyncSession, repository_id: int, sha: str) -> None:
    """Wait for, then hold until the transaction ends, the registration lock of ``sha``."""
    key = f"commit-registration:{repository_id}:{sha.lower()}"
    await session.execute(_LOCK_COMMIT, {"key": key})


@dataclass(frozen=True)
class QueuedCoverage:
    """An upload stored for processing and its ``process_coverage`` job."""

    upload_id: int
    job_id: int | None


async def queue_coverage(
    session: AsyncSession,
    *,
    repository_id: int,
    commit_id: int,
    sha: str,
    coverage: str,
) -> QueuedCoverage:
    """Store an upload (``coverage``: the JSON of its ``data`` map) for a known commit, mark its
    coverage ``queued``, enqueue processing. Runs in the caller's transaction.
    """
    upload_id = (
        await session.execute(
            text(
                "INSERT INTO cocov_jobs_coverage_uploads (repository_id, sha, data)"
                " VALUES (:r, :s, CAST(:d AS jsonb)) RETURNING id"
            ),
            {"r": repository_id, "s": sha, "d": coverage},
        )
    ).scalar_one()
    await session.execute(
        _RESET_COVERAGE, {"commit_id": commit_id, "status": int(CoverageStatus.queued)}
    )
    job_id = await queue.enqueue(
        session, "process_coverage", repository_id=repository_id, sha=sha, upload_id=upload_id
    )
    return QueuedCoverage(int(upload_id), job_id)


async def register_head_commit(
    session: AsyncSession,
    redis: aioredis.Redis,
    *,
    repository_id: int,
    branch: str,
    sha: str,
    message: str,
    author_name: str,
    author_email: str,
    expected_head: str | None = None,
) -> Registration:
    """Create or reuse commit ``sha``, make it the head of ``branch`` and enqueue its work.

    With ``expected_head`` (a push's ``before``) the head moves only from that commit, or when
    the branch has no head yet: a replayed or late push never moves a head backwards. The
    commit is registered either way; ``kept_head`` then names the head left in place.
    """
    await lock_commit(session, repository_id, sha)
    row = (
        await session.execute(
            _UPSERT_COMMIT,
            {
                "repository_id": repository_id,
                "sha": sha,
                "message": message,
                "author_name": author_name,
                "author_email": author_email,
                "queued": int(CloneStatus.queued),
            },
        )
    ).one()
    commit_id, created = int(row.id), bool(row.inserted)
    processed = row.clone_status == CloneStatus.completed and row.checked
    branch_key = {"repository_id": repository_id, "name": branch}
    moved = await session.scalar(
        _MOVE_HEAD, {**branch_key, "head_id": commit_id, "expected": expected_head}
    )
    registration = Registration(commit_id, created, None, None)
    if moved is None:
        registration.kept_head = str(await session.scalar(_HEAD_SHA, branch_key))
    key = contracts.deferred_coverage_key(repository_id, sha)
    pending = await redis.get(key)
    if pending is not None:
        coverage = _pending_coverage(key, pending)
        if coverage is not None:
            queued = await queue_coverage(
                session,
                repository_id=repository_id,
                commit_id=commit_id,
                sha=sha,
                coverage=coverage,
            )
            registration.coverage_upload_id = queued.upload_id
        registration._claimed.append((key, pending))
    if not processed:
        registration.process_commit_job = await queue.enqueue(
            session, "process_commit", commit_id=commit_id
        )
    return registration
