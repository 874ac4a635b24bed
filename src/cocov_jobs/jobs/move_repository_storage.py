"""``move_repository_storage(repository_id, old_name)`` — stored clones follow a rename.

Storage is keyed by ``sha1(repository name)`` (docs/architecture.md §6.5), so a rename would orphan
the clones (§7.10). The ``repository`` ``renamed`` webhook sets the new name and enqueues this job
in the same transaction; the job moves ``sha1(old_name)`` to ``sha1(current name)``
(:meth:`~cocov_jobs.gitstore.CommitStorage.rename_repository`, which merges into commits already
stored under the new name).

Reading the *current* name when it runs makes any order of successive renames end with every
clone under the latest name. It does nothing when the repository is gone (``destroy_repository``
owns its storage) or when another repository now carries ``old_name`` (those clones are its).
Runs for one repository never overlap.
"""

from __future__ import annotations

from sqlalchemy import text

from cocov_jobs.engine.context import JobContext
from cocov_jobs.engine.registry import job
from cocov_jobs.gitstore import storage_from_settings

_CURRENT_NAME = text(
    "SELECT name, EXISTS (SELECT 1 FROM repositories other"
    " WHERE other.name = CAST(:old_name AS citext) AND other.id <> :id) AS taken"
    " FROM repositories WHERE id = :id"
)


@job(lock="repository-storage:{repository_id}", internal=True)
async def move_repository_storage(ctx: JobContext, repository_id: int, old_name: str) -> None:
    """Move a renamed repository's stored clones from ``sha1(old_name)`` to its current name."""
    async with ctx.db() as session:
        row = (
            await session.execute(_CURRENT_NAME, {"id": repository_id, "old_name": old_name})
        ).one_or_none()
    if row is None or row.taken:
        ctx.log.info("stored clones not moved", repository_id=repository_id, gone=row is None)
        return
    await storage_from_settings(ctx.settings).rename_repository(old_name, str(row.name))
