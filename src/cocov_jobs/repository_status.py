"""What an operator looks at when a Cocov user says "my commit is stuck": one repository's
branch heads, its newest commits with their clone, checks and coverage states, the coverage
uploads held for commits not registered yet, and the recent runs of the jobs that worked on it
(from the job history: runs whose ``repository_id`` is the repository, or whose ``commit_id`` is
one of its newest :data:`COMMITS_LOOKED_UP` commits).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from cocov_jobs.db.models import CheckSetStatus, CloneStatus, CoverageStatus
from cocov_jobs.engine import history
from cocov_jobs.services import Services
from cocov_jobs.uploads import HeldUpload, held_uploads

#: Commits shown.
COMMITS_SHOWN = 20
#: Commits whose jobs' runs are looked up (the history keeps only recent runs anyway).
COMMITS_LOOKED_UP = 1000
#: Repositories per page of the list.
REPOSITORIES_PAGE = 100

_REPOSITORY = """
SELECT id, name::text AS name, default_branch::text AS default_branch, commits_size, cache_size
FROM repositories WHERE {match}
"""

_BRANCHES = """
SELECT b.name::text AS name, c.sha::text AS sha FROM branches b
LEFT JOIN commits c ON c.id = b.head_id
WHERE b.repository_id = $1 ORDER BY b.name
"""

_COMMITS = """
SELECT c.id, c.sha::text AS sha, split_part(c.message, E'\\n', 1) AS message, c.author_name,
       c.created_at, c.clone_status, c.coverage_percent, cs.status AS checks, ci.status AS coverage,
       ci.percent_covered
FROM commits c
LEFT JOIN check_sets cs ON cs.commit_id = c.id
LEFT JOIN coverage_infos ci ON ci.commit_id = c.id
WHERE c.repository_id = $1 ORDER BY c.id DESC LIMIT $2
"""

_COMMIT_IDS = "SELECT id FROM commits WHERE repository_id = $1 ORDER BY id DESC LIMIT $2"

_LIST = """
SELECT r.id, r.name::text AS name, r.default_branch::text AS default_branch,
       (SELECT count(*) FROM commits c WHERE c.repository_id = r.id) AS commits
FROM repositories r
WHERE $1::text IS NULL OR r.name ILIKE '%' || $1 || '%'
ORDER BY r.name LIMIT $2
"""


@dataclass(frozen=True)
class CommitState:
    """A commit and where its work stands."""

    id: int
    sha: str
    message: str
    author: str
    created_at: datetime
    clone: str
    #: Check set status, ``None`` when no check set was created.
    checks: str | None
    #: Coverage status, ``None`` when no coverage was uploaded.
    coverage: str | None
    percent_covered: float | None


@dataclass(frozen=True)
class RepositoryStatus:
    id: int
    name: str
    default_branch: str
    commits_size: int
    cache_size: int
    #: Branch name → head commit sha (``None`` when the head is not set).
    branches: dict[str, str | None]
    commits: list[CommitState]
    held: list[HeldUpload]
    runs: list[history.RunRow]


def _name(enum: Any, value: int | None) -> str | None:
    if value is None:
        return None
    try:
        return str(enum(value).name)
    except ValueError:
        return str(value)


def _commit(r: Any) -> CommitState:
    return CommitState(
        id=r["id"],
        sha=r["sha"],
        message=r["message"],
        author=r["author_name"],
        created_at=r["created_at"],
        clone=_name(CloneStatus, r["clone_status"]) or "",
        checks=_name(CheckSetStatus, r["checks"]),
        coverage=_name(CoverageStatus, r["coverage"]),
        percent_covered=r["percent_covered"],
    )


async def repository_status(services: Services, ref: str) -> RepositoryStatus | None:
    """The status of the repository whose id or name is ``ref``; ``None`` when there is none."""
    by_id = ref.isdigit() and int(ref) < 2**63
    async with services.raw_connection() as conn:
        repo = await conn.fetchrow(
            _REPOSITORY.format(match="id = $1::bigint" if by_id else "name = $1::citext"),
            int(ref) if by_id else ref,
        )
        if repo is None:
            return None
        branches = {b["name"]: b["sha"] for b in await conn.fetch(_BRANCHES, repo["id"])}
        commits = [_commit(c) for c in await conn.fetch(_COMMITS, repo["id"], COMMITS_SHOWN)]
        commit_ids = [c["id"] for c in await conn.fetch(_COMMIT_IDS, repo["id"], COMMITS_LOOKED_UP)]
    runs = await history.runs_by_argument(
        services, {"repository_id": [repo["id"]], "commit_id": commit_ids}
    )
    return RepositoryStatus(
        id=repo["id"],
        name=repo["name"],
        default_branch=repo["default_branch"],
        commits_size=repo["commits_size"],
        cache_size=repo["cache_size"],
        branches=branches,
        commits=commits,
        held=await held_uploads(services.redis, repo["id"]),
        runs=runs,
    )


async def repositories(services: Services, search: str | None = None) -> list[dict[str, Any]]:
    """Repositories whose name contains ``search`` (all when ``None``), by name."""
    async with services.raw_connection() as conn:
        return [dict(r) for r in await conn.fetch(_LIST, search or None, REPOSITORIES_PAGE)]
