"""``POST /v1/reports``: coverage uploads from Cocov's coverage reporter
(docs/architecture.md §6.7, §6.9, §7.1).

Request: ``Authorization: token <repositories.token>`` and the JSON body
``{"data": {"<path>": "<base64>", …}, "commit_sha": "<sha>"}``. Answers, in check order:

====  ==========================  ======================================================
401   ``auth.no_authorization``   no ``Authorization`` header
401   ``auth.invalid_token``      another scheme than ``token``, or no token
403   ``auth.forbidden``          no repository has the token
413   ``request.too_large``       body over :data:`MAX_REPORT_BYTES`
400   ``request.invalid_json``    body is not JSON (``request.not_an_object``: not an object)
400   ``report.missing_data``     ``data`` missing or blank (null, ``""``, ``{}``, ``[]``)
400   ``report.missing_commit_sha``  ``commit_sha`` missing or blank
422   ``report.invalid_commit_sha``  ``commit_sha`` is not a full commit id (40/64 hex)
422   ``report.invalid_data``     ``data`` is not an object, a path is not canonical and
                                  relative (``..``, absolute, NUL…) or a value is not base64;
                                  the message names the file
429   ``report.too_many_held``    the commit is unknown and the repository already holds as
                                  much coverage for unknown commits as allowed
                                  (:mod:`cocov_jobs.uploads`)
204                               accepted
====  ==========================  ======================================================

Accepted uploads: when the commit is known, the upload is stored and ``process_coverage``
enqueued in one transaction (:func:`~cocov_jobs.uploads.store_upload`); otherwise the
canonical JSON of ``data`` is held in Redis under ``commit:coverage:<repo_id>:<sha>`` for
:data:`~cocov_jobs.contracts.DEFERRED_COVERAGE_TTL` seconds (a newer upload replaces it) until a
push or ``initialize_repository`` registers the commit and claims it. Both paths hold the
commit's registration lock, so an upload racing a push is never left behind.

The body is parsed and every file decoded in a separate process (:func:`parse_off_loop`):
4,000,000 files take seconds, and JSON parsing holds the GIL, so a thread would still stall
every other request of the web process. The process returns the canonical JSON of ``data``,
which is stored as it is.
"""

from __future__ import annotations

import asyncio
import os
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from multiprocessing import get_context
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from cocov_jobs.engine.queue import enqueued_by
from cocov_jobs.gitstore.layout import check_sha
from cocov_jobs.parent_death import die_with_parent
from cocov_jobs.registration import canonical_coverage
from cocov_jobs.services import Services
from cocov_jobs.uploads import (
    HeldLimitError,
    InvalidCoverageData,
    check_coverage_data,
    store_upload,
)
from cocov_jobs.web import auth
from cocov_jobs.web.body import MIB, parse_json_object, read_body
from cocov_jobs.web.errors import ApiError

#: Largest accepted upload body.
MAX_REPORT_BYTES = 64 * MIB
#: Processes parsing report bodies (per web process; uploads beyond wait their turn).
PARSER_PROCESSES = 2
_pool: ProcessPoolExecutor | None = None


@dataclass(frozen=True)
class Upload:
    sha: str
    data: dict[str, str]


def _blank(value: object) -> bool:
    """Rails' ``blank?``: nil, false, empty or whitespace-only string, empty collection."""
    if value is None or value is False:
        return True
    if isinstance(value, str):
        return not value.strip()
    return isinstance(value, dict | list) and not value


def parse_upload(body: dict[str, Any]) -> Upload:
    """The upload in ``body``, every path and value checked, else a 400/422 :class:`ApiError`."""
    data, sha = body.get("data"), body.get("commit_sha")
    if _blank(data):
        raise ApiError(400, "report.missing_data", "Parameter data is required")
    if _blank(sha):
        raise ApiError(400, "report.missing_commit_sha", "Parameter commit_sha is required")
    try:
        sha = check_sha(sha.strip().lower() if isinstance(sha, str) else "")
    except ValueError:
        raise ApiError(
            422, "report.invalid_commit_sha", "commit_sha must be a full commit id"
        ) from None
    try:
        return Upload(sha, check_coverage_data(data))
    except InvalidCoverageData as exc:
        raise ApiError(422, "report.invalid_data", str(exc)) from None


def parse_report(body: bytes) -> tuple[str, str]:
    """``(sha, canonical JSON of data)`` of a report body, else a 400/422 :class:`ApiError`."""
    upload = parse_upload(parse_json_object(body))
    return upload.sha, canonical_coverage(upload.data)


def _parsers() -> ProcessPoolExecutor:
    """The process's pool of report parsers, started at first use (spawned: no fork of a
    process running an event loop and threads); they die with the web process."""
    global _pool
    if _pool is None:
        _pool = ProcessPoolExecutor(
            PARSER_PROCESSES,
            mp_context=get_context("spawn"),
            initializer=die_with_parent,
            initargs=(os.getpid(),),
        )
    return _pool


async def parse_off_loop(body: bytes) -> tuple[str, str]:
    """:func:`parse_report` in a parser process; 503 when the pool broke (then replaced)."""
    global _pool
    try:
        return await asyncio.get_running_loop().run_in_executor(_parsers(), parse_report, body)
    except BrokenProcessPool:
        _pool = None
        raise ApiError(503, "service.unavailable", "The report parser stopped; try again") from None


async def post_report(request: Request) -> Response:
    services: Services = request.app.state.services
    async with services.sessions() as session:
        repository_id = await auth.upload_repository(session, request)
    sha, coverage = await parse_off_loop(await read_body(request, MAX_REPORT_BYTES))
    try:
        async with (
            services.sessions.begin() as session,
            enqueued_by(f"repository:{repository_id}"),
        ):
            await store_upload(
                session, services.redis, repository_id=repository_id, sha=sha, coverage=coverage
            )
    except HeldLimitError as exc:
        raise ApiError(429, "report.too_many_held", str(exc)) from None
    return Response(status_code=204)


routes = [Route("/v1/reports", post_report, methods=["POST"])]
