"""Check runs: the check set of a commit, its GitHub statuses, and what the Go Worker receives.

This is Cocov's ``ChecksRunService``, ``notify_check_fatal_failure!`` and the status catalogue
(docs/architecture.md §5.4, §6.8). :func:`run_checks`, for a cloned commit:

1. reads ``.cocov.yaml``: none → check set ``not_configured``, no status; an unusable one →
   :func:`notify_check_fatal_failure`; no checks → ``not_configured`` and ``success``
   "Looking good!";
2. resolves every mounted secret (repository-scoped first, then organization-scoped; names are
   case-insensitive) and refuses two checks whose cleaned plugin names collide — both are
   manifest failures reported before anything is queued;
3. in one transaction resets the check set (:func:`reset_check_set`), creates one ``checks``
   row per check, keeps the set's ``job_id`` (a new uuid4 only when it has none) and sets it
   ``queued``;
4. after the commit posts ``pending`` "Checks are running...", then hands the descriptor to the
   Worker (:mod:`cocov_jobs.checks_dispatch`) — at least once, never twice per job run.

Every status is posted after the database commit that justifies it, so a failed post is
retried with the job and never leaves a half-written check set. Where we differ from Cocov:
an unknown secret is reported before the ``pending`` status (Cocov posts ``pending`` first);
duplicated cleaned plugin names are a ``manifest_invalid_or_missing_data`` failure (Cocov
crashes on the unique index); ``manifest_version_unsupported`` has a real description.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final, Literal

from sqlalchemy import func, select, text, update
from sqlalchemy.ext.asyncio import AsyncSession

from cocov_jobs.checks_dispatch import (
    PlannedCheck,
    PlannedMount,
    descriptor_waiting,
    dispatch,
    dispatched_by,
)
from cocov_jobs.clones import CommitRef, read_manifest
from cocov_jobs.config import Settings
from cocov_jobs.db.models import CheckSet, CheckSetStatus, CheckStatus, ErrorKind, utc_now
from cocov_jobs.engine.retry import PermanentError
from cocov_jobs.manifest import INVALID_OR_MISSING_DATA, InvalidManifestError, Manifest
from cocov_jobs.services import Services

#: GitHub status context of check runs.
CHECKS_CONTEXT: Final = "cocov"
#: GitHub status context of coverage.
COVERAGE_CONTEXT: Final = "cocov/coverage"
#: Error code of a manifest that mounts a secret nobody defined.
UNKNOWN_SECRET: Final = "manifest_unknown_secret"

#: Path segments of an image reference kept as the plugin's namespace.
_NAMESPACE: Final = re.compile(r"[a-z0-9]+")

StatusState = Literal["error", "failure", "pending", "success"]
CommitPage = Literal["checks", "issues", "coverage"]


@dataclass(frozen=True)
class StatusText:
    description: str
    state: StatusState


#: The ``cocov`` statuses (Cocov's ``config/checks_statuses.yml``), by error kind or event.
CHECK_STATUSES: Final[Mapping[str, StatusText]] = {
    "commit_fetch_failed": StatusText("Could not fetch this commit", "error"),
    "manifest_root_must_be_mapping": StatusText(
        "Invalid manifest: Root should be a mapping", "error"
    ),
    "manifest_missing_version": StatusText("Failure: Invalid manifest", "error"),
    "manifest_version_type_mismatch": StatusText("Failure: Invalid manifest", "error"),
    # Cocov has no text for it and posts "An unknown error occurred".
    "manifest_version_unsupported": StatusText("Failure: Unsupported manifest version", "error"),
    "manifest_unknown_secret": StatusText("Failure: Unknown secret", "error"),
    "manifest_duplicated_mount_destination": StatusText(
        "Failure: Duplicated mount destination", "error"
    ),
    "manifest_invalid_mount_source": StatusText("Failure: Invalid mount source", "error"),
    "manifest_invalid_or_missing_data": StatusText(
        "Failure: Invalid or Missing Data in Manifest", "error"
    ),
    "running": StatusText("Checks are running...", "pending"),
    "no_manifest": StatusText("Looking good!", "success"),
    "no_issues": StatusText("No issues detected", "success"),
    "canceled": StatusText("Checks were canceled", "failure"),
    "internal_error": StatusText("An internal error occurred", "error"),
}
#: Status of a key missing from :data:`CHECK_STATUSES`.
UNKNOWN_STATUS: Final = StatusText("An unknown error occurred", "error")

#: Error kinds whose message is kept in ``check_sets.error_extra`` (shown to users).
USER_VISIBLE_ERRORS: Final = frozenset(
    {
        "manifest_unknown_secret",
        "manifest_duplicated_mount_destination",
        "manifest_invalid_mount_source",
        "manifest_invalid_or_missing_data",
    }
)


@dataclass(frozen=True)
class CommitStatus:
    """One GitHub commit status."""

    state: StatusState
    context: str
    description: str
    target_url: str


def commit_url(settings: Settings, repo_name: str, sha: str, page: CommitPage) -> str:
    """``UI/repos/<repo name>/commits/<sha>/<page>``."""
    return f"{settings.ui_url}/repos/{repo_name}/commits/{sha}/{page}"


def check_status(settings: Settings, commit: CommitRef, key: str) -> CommitStatus:
    """The ``cocov`` status for catalogue ``key``, pointing at the commit's checks page."""
    text_ = CHECK_STATUSES.get(key, UNKNOWN_STATUS)
    url = commit_url(settings, commit.repo_name, commit.sha, "checks")
    return CommitStatus(text_.state, CHECKS_CONTEXT, text_.description, url)


async def post_status(services: Services, commit: CommitRef, status: CommitStatus) -> None:
    await services.github().create_status(
        services.settings.github_org_name,
        commit.repo_name,
        commit.sha,
        state=status.state,
        context=status.context,
        description=status.description,
        target_url=status.target_url,
    )


def cleanup_plugin_name(name: str) -> str:
    """Cocov's ``checks.plugin_name`` of an image reference.

    The last ``/`` segment without its tag (from the first ``:``), prefixed by the last earlier
    segment made only of ``[a-z0-9]``, if any: ``cocov/rubocop:v0.1`` → ``cocov/rubocop``,
    ``ghcr.io/org/foo:1`` → ``org/foo``, ``my-org/tool:1`` → ``tool``.
    """
    *namespaces, last = name.split("/")
    image = last.split(":", 1)[0]
    kept = [part for part in namespaces if _NAMESPACE.fullmatch(part)]
    return f"{kept[-1]}/{image}" if kept else image


# Database ------------------------------------------------------------------------------------

_RESET_CHECK_SET = text(
    """
    INSERT INTO check_sets (commit_id, status, error_kind, canceling, created_at, updated_at)
    VALUES (:commit_id, :waiting, :no_error, false, timezone('utc', now()),
            timezone('utc', now()))
    ON CONFLICT (commit_id) DO UPDATE
    SET canceling = false, status = EXCLUDED.status, error_kind = EXCLUDED.error_kind,
        started_at = timezone('utc', now()), updated_at = EXCLUDED.updated_at
    RETURNING id
    """
)
_INSERT_CHECK = text(
    """
    INSERT INTO checks (check_set_id, plugin_name, status, created_at, updated_at)
    VALUES (:check_set_id, :plugin_name, :status, timezone('utc', now()), timezone('utc', now()))
    """
)
_DELETE_CHECKS = text("DELETE FROM checks WHERE check_set_id = :check_set_id")
_DELETE_ISSUES = text("DELETE FROM issues WHERE commit_id = :commit_id")


async def reset_check_set(session: AsyncSession, commit_id: int) -> int:
    """Reset (or create) the commit's check set to ``waiting``; return its id.

    Clears ``canceling`` and ``error_kind``, stamps ``started_at`` (not on creation), deletes
    the set's checks and every issue of the commit; ``job_id``, ``finished_at`` and
    ``error_extra`` are kept, as in Cocov.
    """
    check_set_id = int(
        await session.scalar(
            _RESET_CHECK_SET,
            {
                "commit_id": commit_id,
                "waiting": int(CheckSetStatus.waiting),
                "no_error": int(ErrorKind.no_error),
            },
        )
    )
    await session.execute(_DELETE_CHECKS, {"check_set_id": check_set_id})
    await session.execute(_DELETE_ISSUES, {"commit_id": commit_id})
    return check_set_id


async def _finish_check_set(
    session: AsyncSession, commit_id: int, values: Mapping[str, Any]
) -> int:
    check_set_id = await reset_check_set(session, commit_id)
    await session.execute(
        update(CheckSet).where(CheckSet.id == check_set_id).values(**values, updated_at=utc_now())
    )
    return check_set_id


async def notify_check_fatal_failure(
    services: Services, commit: CommitRef, code: str, message: str | None
) -> None:
    """Reset the check set to ``failure`` with ``error_kind = code``, then post the error status.

    ``error_extra`` keeps ``message`` only for :data:`USER_VISIBLE_ERRORS`.
    """
    extra = message if code in USER_VISIBLE_ERRORS else None
    values = {
        "status": int(CheckSetStatus.failure),
        "error_kind": int(ErrorKind[code]),
        "error_extra": extra,
    }
    async with services.sessions.begin() as session:
        await _finish_check_set(session, commit.id, values)
    await post_status(services, commit, check_status(services.settings, commit, code))


# Secrets and plans -----------------------------------------------------------------------------

_FIND_SECRETS = text(
    """
    SELECT DISTINCT ON (lower(name::text)) lower(name::text) AS name, id
    FROM secrets
    WHERE lower(name::text) = ANY(CAST(:names AS text[]))
      AND (scope = 0 OR (scope = 1 AND repository_id = :repository_id))
    ORDER BY lower(name::text), scope DESC, id
    """
)


async def find_secrets(
    session: AsyncSession, repository_id: int, names: set[str]
) -> dict[str, int]:
    """Secret ids by lower-cased name: the repository's own secret, else the organization's."""
    if not names:
        return {}
    rows = await session.execute(
        _FIND_SECRETS,
        {"names": sorted(n.lower() for n in names), "repository_id": repository_id},
    )
    return {str(name): int(secret_id) for name, secret_id in rows}


def plan_checks(manifest: Manifest, secrets: Mapping[str, int]) -> list[PlannedCheck]:
    """The checks to run, in manifest order, with their secrets resolved.

    Raises :class:`InvalidManifestError`: ``manifest_invalid_or_missing_data`` when two plugins
    share a cleaned name (case-insensitive, as ``checks.plugin_name`` is), then
    ``manifest_unknown_secret`` for the first mount naming no secret.
    """
    seen: dict[str, str] = {}
    for check in manifest.checks:
        key = cleanup_plugin_name(check.plugin).lower()
        if key in seen:
            raise InvalidManifestError(
                INVALID_OR_MISSING_DATA,
                f"Plugins `{seen[key]}' and `{check.plugin}' would both run as "
                f"`{cleanup_plugin_name(check.plugin)}'",
            )
        seen[key] = check.plugin
    return [
        PlannedCheck(
            plugin=check.plugin,
            plugin_name=cleanup_plugin_name(check.plugin),
            envs=check.envs,
            mounts=None
            if check.mounts is None
            else tuple(
                PlannedMount(_secret_id(secrets, m.secret_name), m.destination)
                for m in check.mounts
            ),
        )
        for check in manifest.checks
    ]


def _secret_id(secrets: Mapping[str, int], name: str) -> int:
    secret_id = secrets.get(name.lower())
    if secret_id is None:
        raise InvalidManifestError(UNKNOWN_SECRET, f"Unknown secret `{name}'")
    return secret_id


# Running ---------------------------------------------------------------------------------------


async def run_checks(services: Services, commit: CommitRef, *, run: int) -> None:
    """Run the checks of a cloned commit (module steps 1–4); ``run`` is the job's id.

    A run that already handed its descriptor to the Worker (a retry after a later failure)
    does nothing: resetting the check set now would delete what the Worker reports. Nor does a
    new run while the previous run's descriptor still waits in ``cocov:checks``: the Worker has
    not started it, and it would run the very same checks of the same commit.
    """
    async with services.sessions() as session:
        check_set_id = await session.scalar(
            select(CheckSet.id).where(CheckSet.commit_id == commit.id)
        )
    if check_set_id is not None and (
        await dispatched_by(services.redis, check_set_id, run)
        or await descriptor_waiting(services.redis, check_set_id)
    ):
        return
    try:
        manifest = await read_manifest(services.storage, commit)
        planned = None if manifest is None else await _plan(services, commit, manifest)
    except InvalidManifestError as exc:
        await notify_check_fatal_failure(services, commit, exc.code, exc.message)
        return
    if not planned:
        await _not_configured(services, commit, has_manifest=manifest is not None)
        return
    check_set_id, job_id = await _queue_checks(services, commit, planned)
    await post_status(services, commit, check_status(services.settings, commit, "running"))
    await dispatch(services, commit, planned, check_set_id=check_set_id, job_id=job_id, run=run)


async def _plan(services: Services, commit: CommitRef, manifest: Manifest) -> list[PlannedCheck]:
    names = {m.secret_name for c in manifest.checks for m in c.mounts or ()}
    if names and services.settings.cryptographic_key_bytes is None:
        raise PermanentError("COCOV_CRYPTOGRAPHIC_KEY must be set to mount secrets")
    async with services.sessions() as session:
        secrets = await find_secrets(session, commit.repository_id, names)
    return plan_checks(manifest, secrets)


async def _not_configured(services: Services, commit: CommitRef, *, has_manifest: bool) -> None:
    """No manifest: ``not_configured`` silently; a manifest without checks: plus success."""
    async with services.sessions.begin() as session:
        values = {"status": int(CheckSetStatus.not_configured)}
        await _finish_check_set(session, commit.id, values)
    if has_manifest:
        status = check_status(services.settings, commit, "no_manifest")
        await post_status(services, commit, status)


async def _queue_checks(
    services: Services, commit: CommitRef, planned: list[PlannedCheck]
) -> tuple[int, str]:
    """Reset the set, create its checks, mark it ``queued``; return its id and ``job_id``."""
    async with services.sessions.begin() as session:
        check_set_id = await reset_check_set(session, commit.id)
        await session.execute(
            _INSERT_CHECK,
            [
                {
                    "check_set_id": check_set_id,
                    "plugin_name": check.plugin_name,
                    "status": int(CheckStatus.waiting),
                }
                for check in planned
            ],
        )
        job_id = await session.scalar(
            update(CheckSet)
            .where(CheckSet.id == check_set_id)
            .values(
                job_id=func.coalesce(CheckSet.job_id, str(uuid.uuid4())),
                status=int(CheckSetStatus.queued),
                updated_at=utc_now(),
            )
            .returning(CheckSet.job_id)
        )
    return check_set_id, str(job_id)
