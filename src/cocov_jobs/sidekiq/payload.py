"""Sidekiq payloads as Cocov's Rails API writes them, read into the jobs they ask for.

Wire formats
============

A payload is a JSON object; its ``jid`` (24 hex digits) names it for good.

* **ActiveJob, Rails 6.1–7.x** (``perform_later`` through the ``:sidekiq`` adapter):
  ``"class": "ActiveJob::QueueAdapters::SidekiqAdapter::JobWrapper"``, ``"wrapped": "<class>"``
  and ``"args": [<job.serialize>]``, an object whose ``job_class`` and ``arguments`` are the
  job's class and ``perform``'s arguments;
* **ActiveJob, Sidekiq ≥ 7.3** (Sidekiq's own adapter): the same, with
  ``"class": "Sidekiq::ActiveJob::Wrapper"``;
* **plain Sidekiq**: ``"class": "<class>", "args": [<perform's arguments>]``.

Times (``created_at``, ``enqueued_at``, ``failed_at``, and the scores of the ``schedule``,
``retry`` and ``dead`` sets) are epoch seconds as floats up to Sidekiq 7 and integer epoch
milliseconds from Sidekiq 8: :func:`epoch` reads both.

Cocov's classes
===============

:data:`COCOV_CLASSES` maps the ten classes to our jobs. Nine take ids, and their positional
arguments become the job's parameters in order (``ProcessCommitJob(42)`` →
``process_commit(commit_id=42)``), validated as any enqueue is.
``ProcessCoverageJob(repo_id, sha, data)`` is the tenth: ``data`` is a JSON *string* of the
coverage reporter's ``{path: base64}`` map, which becomes a :class:`CoverageUpload` checked as
``POST /v1/reports`` checks one (:func:`~cocov_jobs.uploads.check_coverage_data`).

Anything else — not JSON, not a job, another class, arguments that do not fit — is a
:class:`PayloadError` whose ``kind`` is one of :data:`PROBLEMS`: the intake keeps such a
payload as a failed job with the reason instead of dropping it.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from dataclasses import dataclass
from typing import Any, Final

from cocov_jobs.engine.registry import JobArgumentsError, JobDefinition, Registry
from cocov_jobs.gitstore.layout import check_sha
from cocov_jobs.uploads import InvalidCoverageData, check_coverage_data

#: ``class`` of ActiveJob payloads: Rails' adapter (6.1–7.x), then Sidekiq's own (≥ 7.3).
ACTIVEJOB_WRAPPERS: Final = frozenset(
    {"ActiveJob::QueueAdapters::SidekiqAdapter::JobWrapper", "Sidekiq::ActiveJob::Wrapper"}
)
#: Cocov's job classes and the job each one becomes.
COCOV_CLASSES: Final = {
    "ComputeRepositoryCommitsSizeJob": "compute_repository_commits_size",
    "DestroyRepositoryJob": "destroy_repository",
    "InitializeRepositoryJob": "initialize_repository",
    "ProcessCommitJob": "process_commit",
    "ProcessCoverageJob": "process_coverage",
    "RequestCacheEvictionJob": "request_cache_eviction",
    "UpdateCommitsAuthorJob": "update_commits_author",
    "UpdateOrganizationReposJob": "update_organization_repos",
    "UpdateRepoPermissionsJob": "update_repo_permissions",
    "UpdateUserPermissionsJob": "update_user_permissions",
}
#: Class label of payloads whose class is not one of :data:`COCOV_CLASSES` (metrics).
OTHER_CLASS: Final = "other"
#: Epoch values at or above this are milliseconds (Sidekiq 8); as seconds it is the year 5138.
MILLISECONDS_FROM: Final = 1e11

INVALID_JSON: Final = "invalid_json"
NOT_A_JOB: Final = "not_a_job"
UNKNOWN_CLASS: Final = "unknown_class"
INVALID_ARGUMENTS: Final = "invalid_arguments"
#: Why a payload cannot become a job (the ``reason`` label of the metrics).
PROBLEMS: Final = (INVALID_JSON, NOT_A_JOB, UNKNOWN_CLASS, INVALID_ARGUMENTS)

_JID: Final = re.compile(r"[0-9A-Za-z_-]{1,64}")
_SHOWN_CLASS_LENGTH: Final = 100


class PayloadError(ValueError):
    """The payload cannot become a job; ``kind`` (one of :data:`PROBLEMS`) and the message
    say why."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


@dataclass(frozen=True)
class JobRequest:
    """One of our jobs with validated arguments."""

    definition: JobDefinition
    args: dict[str, Any]


@dataclass(frozen=True)
class CoverageUpload:
    """``ProcessCoverageJob``'s arguments: an upload for commit ``sha`` of the repository."""

    repository_id: int
    sha: str
    data: dict[str, str]


Request = JobRequest | CoverageUpload


@dataclass(frozen=True)
class SidekiqError:
    """Sidekiq's record of a failed run (entries of the ``retry`` and ``dead`` sets)."""

    error_class: str
    message: str
    retry_count: int
    failed_at: float | None


@dataclass(frozen=True)
class Payload:
    """One payload read: what it asks for (``request``), or why it cannot (``problem``).

    ``key`` identifies it for good (its ``jid``, else ``sha256:`` of its bytes): a payload
    seen twice is taken in once. ``ruby_class`` is the class when it is one of Cocov's, else
    :data:`OTHER_CLASS`.
    """

    text: str
    key: str
    ruby_class: str
    enqueued_at: float | None
    failure: SidekiqError | None
    request: Request | None
    problem: PayloadError | None


def epoch(value: object) -> float | None:
    """Epoch seconds of a Sidekiq time: float seconds, or integer milliseconds from Sidekiq 8
    (any value ≥ :data:`MILLISECONDS_FROM`). None when it is not a finite number."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    return value / 1000 if value >= MILLISECONDS_FROM else float(value)


def enqueued_at(raw: bytes | None) -> float | None:
    """``enqueued_at`` of a payload (epoch seconds), if it has one."""
    try:
        document = json.loads(raw) if raw is not None else None
    except (ValueError, RecursionError):
        return None
    return epoch(document.get("enqueued_at")) if isinstance(document, dict) else None


def read_payload(raw: bytes | str, registry: Registry) -> Payload:
    """Read one payload of a queue list or a Sidekiq sorted set (never raises)."""
    data = raw.encode() if isinstance(raw, str) else raw
    text = raw if isinstance(raw, str) else raw.decode("utf-8", errors="replace")
    try:
        document = json.loads(data)
    except (ValueError, RecursionError) as exc:
        problem = PayloadError(INVALID_JSON, f"not JSON: {exc}")
        return Payload(text, _key(data, None), OTHER_CLASS, None, None, None, problem)
    if not isinstance(document, dict):
        problem = PayloadError(NOT_A_JOB, "not a JSON object")
        return Payload(text, _key(data, None), OTHER_CLASS, None, None, None, problem)
    key = _key(data, document.get("jid"))
    enqueued_at = epoch(document.get("enqueued_at"))
    failure = _failure(document)
    try:
        ruby_class, arguments = _job(document)
    except PayloadError as exc:
        return Payload(text, key, OTHER_CLASS, enqueued_at, failure, None, exc)
    label = ruby_class if ruby_class in COCOV_CLASSES else OTHER_CLASS
    try:
        request = to_request(ruby_class, arguments, registry)
    except PayloadError as exc:
        return Payload(text, key, label, enqueued_at, failure, None, exc)
    return Payload(text, key, label, enqueued_at, failure, request, None)


def to_request(ruby_class: str, arguments: list[Any], registry: Registry) -> Request:
    """The job (or upload) Cocov's ``ruby_class`` asks for with ``perform(*arguments)``."""
    name = COCOV_CLASSES.get(ruby_class)
    if name is None:
        raise PayloadError(UNKNOWN_CLASS, f"{_shown(ruby_class)} is not one of Cocov's jobs")
    if ruby_class == "ProcessCoverageJob":
        return _coverage_upload(arguments)
    definition = registry.resolve(name)
    if len(arguments) != len(definition.params):
        raise PayloadError(
            INVALID_ARGUMENTS,
            f"{ruby_class} takes {len(definition.params)} argument(s) "
            f"({', '.join(definition.params) or 'none'}), got {len(arguments)}",
        )
    try:
        values = definition.validate(dict(zip(definition.params, arguments, strict=True)))
    except JobArgumentsError as exc:
        raise PayloadError(INVALID_ARGUMENTS, f"{ruby_class}: {exc}") from None
    return JobRequest(definition, values)


def _key(data: bytes, jid: object) -> str:
    if isinstance(jid, str) and _JID.fullmatch(jid):
        return jid
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _job(document: dict[str, Any]) -> tuple[str, list[Any]]:
    """Class and ``perform`` arguments of a plain or ActiveJob payload."""
    ruby_class, args = document.get("class"), document.get("args")
    if not isinstance(ruby_class, str) or not isinstance(args, list):
        raise PayloadError(NOT_A_JOB, 'not a Sidekiq job (no "class" string or "args" list)')
    if ruby_class not in ACTIVEJOB_WRAPPERS:
        return ruby_class, args
    serialized = args[0] if len(args) == 1 else None
    if not isinstance(serialized, dict):
        raise PayloadError(NOT_A_JOB, f"{ruby_class} payload without its ActiveJob job")
    job_class = serialized.get("job_class", document.get("wrapped"))
    arguments = serialized.get("arguments")
    if not isinstance(job_class, str) or not isinstance(arguments, list):
        raise PayloadError(NOT_A_JOB, 'ActiveJob job without "job_class" or "arguments"')
    return job_class, arguments


def _coverage_upload(arguments: list[Any]) -> CoverageUpload:
    if len(arguments) != 3:
        raise PayloadError(
            INVALID_ARGUMENTS,
            f"ProcessCoverageJob takes 3 arguments (repo_id, sha, data), got {len(arguments)}",
        )
    repository_id, sha, data = arguments
    if isinstance(repository_id, bool) or not isinstance(repository_id, int):
        raise PayloadError(INVALID_ARGUMENTS, "ProcessCoverageJob: repo_id is not an integer")
    try:
        sha = check_sha(sha.strip().lower() if isinstance(sha, str) else "")
    except ValueError:
        raise PayloadError(INVALID_ARGUMENTS, "ProcessCoverageJob: sha is not a commit id") from (
            None
        )
    if not isinstance(data, str):
        raise PayloadError(INVALID_ARGUMENTS, "ProcessCoverageJob: data is not a JSON string")
    try:
        coverage = check_coverage_data(json.loads(data))
    except InvalidCoverageData as exc:
        raise PayloadError(INVALID_ARGUMENTS, f"ProcessCoverageJob: {exc}") from None
    except (ValueError, RecursionError) as exc:
        reason = f"ProcessCoverageJob: data is not JSON: {exc}"
        raise PayloadError(INVALID_ARGUMENTS, reason) from None
    if not coverage:
        raise PayloadError(INVALID_ARGUMENTS, "ProcessCoverageJob: data holds no file")
    return CoverageUpload(repository_id, sha, coverage)


def _failure(document: dict[str, Any]) -> SidekiqError | None:
    """Sidekiq's error fields, when the payload failed under Sidekiq."""
    error_class, message = document.get("error_class"), document.get("error_message")
    if not isinstance(error_class, str) and not isinstance(message, str):
        return None
    count = document.get("retry_count")
    return SidekiqError(
        error_class=_text(error_class or "Error"),
        message=_text(message or ""),
        retry_count=count if isinstance(count, int) and not isinstance(count, bool) else 0,
        failed_at=epoch(document.get("failed_at")),
    )


def _text(value: object) -> str:
    """``value`` as text PostgreSQL can store (NUL is the one character it refuses)."""
    return str(value).replace("\x00", "\N{REPLACEMENT CHARACTER}")


def _shown(ruby_class: str) -> str:
    return repr(ruby_class[:_SHOWN_CLASS_LENGTH])
