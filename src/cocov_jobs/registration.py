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

Statements go straight to the session's asyncpg connection (prepared once per connection by
asyncpg's statement cache), in the session's transaction: a push webhook runs them on every
request (docs/decisions.md, 33).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import redis.asyncio as aioredis
import structlog
from sqlalchemy.ext.asyncio import AsyncSession

from cocov_jobs import contracts
from cocov_jobs.db.models import CloneStatus, CoverageStatus
from cocov_jobs.engine import queue
from cocov_jobs.ruby_text import parse_ruby_string_hash

log = structlog.get_logger(__name__)

#: The registration of a head commit in one statement (docs/decisions.md, 33): find the
#: repository (``{match}``: by id, or by GitHub id for a push), take the commit's registration
#: lock (:func:`lock_commit`: the scan of ``locked`` runs before the insert reads its rows),
#: create or reuse the commit, move the branch head unless ``$8`` (a push's ``before``) is given
#: and the branch's head is another commit. One row, or none when the repository is unknown:
#: the commit, whether it was inserted and already processed, whether the head is (now) the
#: commit, and the head as the statement found it.
_REGISTER = """
    WITH repository AS (
        SELECT id FROM repositories WHERE {match} = $1
    ), locked AS (
        SELECT id, pg_advisory_xact_lock(
                     hashtextextended('commit-registration:' || id || ':' || lower($2::text), 0))
        FROM repository
    ), upserted AS (
        INSERT INTO commits (repository_id, sha, message, author_name, author_email,
                             clone_status, created_at, updated_at)
        SELECT id, $2, $4, $5, $6, $7, timezone('utc', now()), timezone('utc', now())
        FROM locked
        ON CONFLICT (sha, repository_id) DO UPDATE SET sha = commits.sha
        RETURNING id, repository_id, clone_status, (xmax = 0) AS inserted,
                  EXISTS (SELECT 1 FROM check_sets WHERE check_sets.commit_id = commits.id)
                    AS checked
    ), moved AS (
        INSERT INTO branches (repository_id, name, head_id, created_at, updated_at)
        SELECT repository_id, $3, id, timezone('utc', now()), timezone('utc', now())
        FROM upserted
        ON CONFLICT (repository_id, name)
        DO UPDATE SET head_id = EXCLUDED.head_id, updated_at = EXCLUDED.updated_at
        WHERE $8::text IS NULL
           OR branches.head_id IS NULL
           OR branches.head_id = EXCLUDED.head_id
           OR branches.head_id = (SELECT id FROM commits
                                  WHERE repository_id = EXCLUDED.repository_id AND sha = $8)
        RETURNING head_id
    )
    SELECT u.id, u.repository_id, u.clone_status, u.inserted, u.checked,
           EXISTS (SELECT 1 FROM moved) AS moved,
           (SELECT c.sha FROM branches b JOIN commits c ON c.id = b.head_id
             WHERE b.repository_id = u.repository_id AND b.name = $3) AS head
    FROM upserted u
"""
_REGISTER_BY_ID = _REGISTER.format(match="id")
_REGISTER_BY_GITHUB_ID = _REGISTER.format(match="github_id")

_HEAD_SHA = (
    "SELECT c.sha FROM branches b JOIN commits c ON c.id = b.head_id"
    " WHERE b.repository_id = $1 AND b.name = $2"
)

#: Store an upload and mark its commit's coverage ``queued``.
_QUEUE_COVERAGE = """
    WITH upload AS (
        INSERT INTO cocov_jobs_coverage_uploads (repository_id, sha, data)
        VALUES ($1, $2, $3::jsonb) RETURNING id
    ), reset AS (
        INSERT INTO coverage_infos (commit_id, status, created_at, updated_at)
        VALUES ($4, $5, timezone('utc', now()), timezone('utc', now()))
        ON CONFLICT (commit_id) DO UPDATE SET status = EXCLUDED.status,
                                              updated_at = EXCLUDED.updated_at
    )
    SELECT id FROM upload
"""

_LOCK_COMMIT = "SELECT pg_advisory_xact_lock(hashtextextended($1::text, 0))"

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
    connection = await queue.asyncpg_connection(session)
    await connection.execute(_LOCK_COMMIT, key)


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
    connection = await queue.asyncpg_connection(session)
    upload_id = await connection.fetchval(
        _QUEUE_COVERAGE, repository_id, sha, coverage, commit_id, int(CoverageStatus.queued)
    )
    job_id = await queue.enqueue(
        session, "process_coverage", repository_id=repository_id, sha=sha, upload_id=upload_id
    )
    return QueuedCoverage(int(upload_id), job_id)


@dataclass(frozen=True)
class HeadCommit:
    """A commit to register as the head of ``branch``. With ``expected_head`` (a push's
    ``before``) the head moves only from that commit, or when the branch has no head yet."""

    branch: str
    sha: str
    message: str
    author_name: str
    author_email: str
    expected_head: str | None = None


async def register_head_commit(
    session: AsyncSession, redis: aioredis.Redis, *, repository_id: int, commit: HeadCommit
) -> Registration:
    """Create or reuse ``commit``, make it the head of its branch and enqueue its work.

    A replayed or late push (its ``expected_head`` no longer the head) never moves a head
    backwards: the commit is registered either way, and ``kept_head`` then names the head left
    in place.
    """
    registration = await _register(session, redis, _REGISTER_BY_ID, repository_id, commit)
    if registration is None:
        raise LookupError(f"repository {repository_id} does not exist")
    return registration


async def register_pushed_commit(
    session: AsyncSession, redis: aioredis.Redis, *, github_id: int, commit: HeadCommit
) -> Registration | None:
    """:func:`register_head_commit` for the repository of GitHub id ``github_id``; None when
    there is no such repository here."""
    return await _register(session, redis, _REGISTER_BY_GITHUB_ID, github_id, commit)


async def _register(
    session: AsyncSession, redis: aioredis.Redis, statement: str, match: int, commit: HeadCommit
) -> Registration | None:
    connection = await queue.asyncpg_connection(session)
    sha, branch = commit.sha, commit.branch
    row = await connection.fetchrow(
        statement,
        match,
        sha,
        branch,
        commit.message,
        commit.author_name,
        commit.author_email,
        int(CloneStatus.queued),
        commit.expected_head,
    )
    if row is None:
        return None
    repository_id = int(row["repository_id"])
    commit_id, created = int(row["id"]), bool(row["inserted"])
    processed = row["clone_status"] == CloneStatus.completed and row["checked"]
    registration = Registration(commit_id, created, None, None)
    if not row["moved"]:
        # The head the statement saw; a branch created meanwhile by another transaction is
        # only visible to a new statement.
        head = row["head"] or await connection.fetchval(_HEAD_SHA, repository_id, branch)
        registration.kept_head = str(head)
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
