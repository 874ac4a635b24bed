"""A commit's clone in storage, shared by ``process_commit`` and ``process_coverage``.

Rules (docs/architecture.md §5.4, §7.5):

* A commit is cloned once. :func:`ensure_cloned` returns at once when ``clone_status`` is
  ``completed`` and storage has the commit; otherwise it takes the PostgreSQL advisory lock
  :func:`clone_lock_key`. When another job holds it (cloning the same commit), the caller is
  deferred (:func:`~cocov_jobs.engine.retry.lock_busy`, no attempt used): it never waits in a
  worker slot and is never marked as failed for it.
* Under the lock: ``clone_status`` ``in_progress`` → fetch → ``completed`` with ``clone_size``;
  when the size changed, ``compute_repository_commits_size`` is enqueued in that same
  transaction.
* A failed fetch marks the commit ``errored`` only when the job gives up: at once when git says
  the token, repository or commit is refused (``CloneError.transient`` false), else on the last
  attempt; :class:`CommitFetchFailed` is raised then. A failure that will be retried puts the
  commit back to ``queued`` (nothing is being cloned) and is retried with backoff.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from sqlalchemy import select, text, update
from sqlalchemy.ext.asyncio import AsyncSession

from cocov_jobs.db.models import CloneStatus, Commit, Repository, utc_now
from cocov_jobs.engine import queue
from cocov_jobs.engine.retry import PermanentError, TransientError, lock_busy
from cocov_jobs.gitstore import CloneError, CommitStorage
from cocov_jobs.manifest import MANIFEST_FILE, Manifest, parse_manifest

if TYPE_CHECKING:
    from cocov_jobs.engine.context import JobContext

# Store the new size; return the previous one (to know whether the repository total changed).
_COMPLETE_CLONE = text(
    """
    UPDATE commits c SET clone_status = :completed, clone_size = :size,
                         updated_at = timezone('utc', now())
    FROM (SELECT id, clone_size FROM commits WHERE id = :id FOR UPDATE) previous
    WHERE c.id = previous.id
    RETURNING previous.clone_size
    """
)


class CommitFetchFailed(PermanentError):
    """The commit could not be fetched and the job gives up; the commit is marked ``errored``."""


@dataclass(frozen=True)
class CommitRef:
    """What the pipeline needs of a commit and its repository."""

    id: int
    repository_id: int
    repo_name: str
    sha: str
    author_email: str
    clone_status: int


def clone_lock_key(commit_id: int) -> str:
    """Advisory lock held while commit ``commit_id`` is being cloned."""
    return f"commit-clone:{commit_id}"


_COMMIT_COLUMNS = (
    Commit.id,
    Commit.repository_id,
    Repository.name,
    Commit.sha,
    Commit.author_email,
    Commit.clone_status,
)


async def load_commit(session: AsyncSession, commit_id: int) -> CommitRef | None:
    """Commit ``commit_id`` with its repository's name, or None when either is gone."""
    row = (
        await session.execute(
            select(*_COMMIT_COLUMNS)
            .join(Repository, Repository.id == Commit.repository_id)
            .where(Commit.id == commit_id)
        )
    ).one_or_none()
    return CommitRef(*row) if row else None


async def find_commit(session: AsyncSession, repository_id: int, sha: str) -> CommitRef | None:
    """Commit ``sha`` (case-insensitive) of repository ``repository_id``, or None."""
    row = (
        await session.execute(
            select(*_COMMIT_COLUMNS)
            .join(Repository, Repository.id == Commit.repository_id)
            .where(Commit.repository_id == repository_id, Commit.sha == sha)
        )
    ).one_or_none()
    return CommitRef(*row) if row else None


async def ensure_cloned(ctx: JobContext, commit: CommitRef) -> None:
    """Make sure ``commit`` is in storage (see the module rules)."""
    storage = ctx.services.storage
    if await _is_stored(storage, commit, commit.clone_status):
        return
    async with ctx.advisory_lock(clone_lock_key(commit.id)) as acquired:
        if not acquired:
            raise lock_busy(f"commit {commit.sha} is being cloned by another job")
        async with ctx.db() as session:
            status = await session.scalar(select(Commit.clone_status).where(Commit.id == commit.id))
        if status is None:
            raise PermanentError(f"commit {commit.id} was deleted")
        if await _is_stored(storage, commit, status):
            return
        await _clone(ctx, storage, commit)


async def _is_stored(storage: CommitStorage, commit: CommitRef, status: int) -> bool:
    return status == CloneStatus.completed and await storage.commit_exists(
        commit.repo_name, commit.sha
    )


async def _fetch(ctx: JobContext, storage: CommitStorage, commit: CommitRef) -> int:
    """Clone ``commit``; when git rejects the cached installation token (401), drop it from
    the cache and try once more with a fresh one, as the API client does."""
    tokens = ctx.services.installation_tokens
    token = await tokens.token()
    for retry in (True, False):
        try:
            return await storage.clone_commit(
                repo_name=commit.repo_name,
                sha=commit.sha,
                token=token,
                org=ctx.settings.github_org_name,
                github_url=ctx.settings.github_url,
            )
        except CloneError as exc:
            if not (retry and exc.token_rejected and await tokens.invalidate(token)):
                raise
            token = await tokens.token()
    raise AssertionError("unreachable")


async def _clone(ctx: JobContext, storage: CommitStorage, commit: CommitRef) -> None:
    await _set_clone_status(ctx, commit.id, CloneStatus.in_progress)
    try:
        size = await _fetch(ctx, storage, commit)
    except Exception as exc:
        replacement = await _clone_failed(ctx, commit, exc)
        if replacement is None:
            raise
        raise replacement from exc
    async with ctx.db.begin() as session:
        previous = await session.scalar(
            _COMPLETE_CLONE,
            {"id": commit.id, "size": size, "completed": int(CloneStatus.completed)},
        )
        if previous != size:
            await queue.enqueue(
                session, "compute_repository_commits_size", repository_id=commit.repository_id
            )
    ctx.log.info("commit cloned", commit_id=commit.id, sha=commit.sha, clone_size=size)


async def _clone_failed(ctx: JobContext, commit: CommitRef, exc: Exception) -> Exception | None:
    """Record the failure; return the exception to raise instead of ``exc``, if any."""
    permanent = isinstance(exc, CloneError) and not exc.transient
    if permanent or ctx.gives_up(exc):
        await _set_clone_status(ctx, commit.id, CloneStatus.errored)
        ctx.log.warning("commit fetch failed", commit_id=commit.id, error=str(exc))
        return CommitFetchFailed(f"could not fetch commit {commit.sha}: {exc}")
    await _set_clone_status(ctx, commit.id, CloneStatus.queued)
    if isinstance(exc, CloneError):
        return TransientError(f"fetching commit {commit.sha} failed: {exc}")
    return None


async def _set_clone_status(ctx: JobContext, commit_id: int, status: CloneStatus) -> None:
    async with ctx.db.begin() as session:
        await session.execute(
            update(Commit)
            .where(Commit.id == commit_id)
            .values(clone_status=int(status), updated_at=utc_now())
        )


async def read_manifest(storage: CommitStorage, commit: CommitRef) -> Manifest | None:
    """The commit's parsed ``.cocov.yaml``, None when it has none.

    Raises :class:`~cocov_jobs.manifest.InvalidManifestError` for an unusable manifest.
    """
    contents = await storage.read_file(commit.repo_name, commit.sha, MANIFEST_FILE)
    return None if contents is None else parse_manifest(contents)
