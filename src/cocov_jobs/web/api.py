"""The service API: enqueue jobs, report events, read a job's state (docs/architecture.md §6.9).

Every route needs ``Authorization: bearer <service token>`` (:mod:`~cocov_jobs.web.auth`;
401 without a valid one). Bodies are JSON objects of at most :data:`MAX_API_BYTES`.

* ``POST /v1/jobs/{job}`` — ``job`` is a task, kebab-case or Ruby class name
  (``process-commit``, ``ProcessCommitJob``), the body its arguments (empty body: none).
  202 ``{"job_id": <id>}``; 202 ``{"job_id": null, "deduplicated": true}`` when the job's
  dedupe key already has a copy waiting; 404 ``jobs.unknown``; 422 ``jobs.invalid_arguments``.
* ``POST /v1/events/{event}`` with ``{"user_id": <users.id>}`` — enqueues what Cocov's login
  path enqueues, see :data:`EVENT_JOBS`. 202 ``{"jobs": {<job>: <id|null>}}``;
  404 ``events.unknown`` / ``users.not_found``; 422 ``events.invalid_arguments``.
* ``GET /v1/jobs/{id}`` — 200 ``{"id", "job", "state", "attempts", "error"}``: ``job`` the
  task name; ``state`` one of :data:`cocov_jobs.engine.admin.STATES` while the job is in the queue,
  else its last log status (``successful``, ``exception``, ``canceled``, ``deleted``);
  ``attempts`` the runs started so far; ``error`` ``{"type", "message"}`` of the last recorded
  failure, or null; ``enqueued_by`` what enqueued it (``token:<id>``, ``webhook:<delivery>``,
  ``job:<id>``, ``schedule``…, see :mod:`cocov_jobs.engine.queue`), or null. 404
  ``jobs.not_found``.

Jobs enqueued here are recorded, and logged, as enqueued by ``token:<service token id>``.
Internal jobs (:attr:`~cocov_jobs.engine.registry.JobDefinition.internal`: webhook
processing, follow-ups, maintenance) answer 403 ``jobs.internal``.
"""

from __future__ import annotations

from typing import Any

import structlog
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from cocov_jobs.engine import admin, queue
from cocov_jobs.engine.registry import (
    JobArgumentsError,
    JobDefinition,
    UnknownJobError,
    fits_bigint,
)
from cocov_jobs.services import Services
from cocov_jobs.web import auth
from cocov_jobs.web.body import MIB, parse_json_object, read_body
from cocov_jobs.web.errors import ApiError

log = structlog.get_logger(__name__)

#: Largest accepted request body.
MAX_API_BYTES = 1 * MIB

#: Jobs each event enqueues, in one transaction, with the event's ``user_id``.
EVENT_JOBS: dict[str, tuple[str, ...]] = {
    "user-logged-in": ("update_commits_author", "update_user_permissions"),
    "user-emails-updated": ("update_commits_author",),
}

_JOB_NAME = text("SELECT entrypoint FROM pgqueuer_log WHERE job_id = :id LIMIT 1")


async def _arguments(request: Request) -> dict[str, Any]:
    body = await read_body(request, MAX_API_BYTES)
    return parse_json_object(body) if body.strip() else {}


async def _authenticate(services: Services, request: Request) -> auth.ServiceCaller:
    async with services.sessions.begin() as session:
        return await auth.service_token(session, request)


def _definition(services: Services, name: str) -> JobDefinition:
    try:
        return services.registry.resolve(name)
    except UnknownJobError as exc:
        raise ApiError(404, "jobs.unknown", str(exc)) from None


def _origin(caller: auth.ServiceCaller) -> str:
    """What the jobs a request enqueues are recorded as enqueued by."""
    return f"token:{caller.token_id}"


async def enqueue_job(request: Request) -> Response:
    services: Services = request.app.state.services
    caller = await _authenticate(services, request)
    definition = _definition(services, request.path_params["job"])
    if definition.internal:
        raise ApiError(
            403, "jobs.internal", f"{definition.cli_name} is enqueued by cocov-jobs itself"
        )
    try:
        values = definition.validate(await _arguments(request))
    except JobArgumentsError as exc:
        raise ApiError(422, "jobs.invalid_arguments", str(exc)) from None
    async with services.sessions.begin() as session, queue.enqueued_by(_origin(caller)):
        job_id = await queue.enqueue(session, definition.name, **values)
    log.info("job enqueued", job=definition.name, job_id=job_id, enqueued_by=_origin(caller))
    body: dict[str, Any] = {"job_id": job_id}
    if job_id is None:
        body["deduplicated"] = True
    return JSONResponse(body, status_code=202)


async def _user_exists(session: AsyncSession, user_id: int) -> bool:
    found = await session.scalar(text("SELECT 1 FROM users WHERE id = :id"), {"id": user_id})
    return found is not None


async def report_event(request: Request) -> Response:
    services: Services = request.app.state.services
    caller = await _authenticate(services, request)
    jobs = EVENT_JOBS.get(request.path_params["event"])
    if jobs is None:
        raise ApiError(404, "events.unknown", f"Unknown event; known: {', '.join(EVENT_JOBS)}")
    try:
        values = services.registry.resolve(jobs[0]).validate(await _arguments(request))
    except JobArgumentsError as exc:
        raise ApiError(422, "events.invalid_arguments", str(exc)) from None
    async with services.sessions.begin() as session, queue.enqueued_by(_origin(caller)):
        if not await _user_exists(session, values["user_id"]):
            raise ApiError(404, "users.not_found", f"No user with id {values['user_id']}")
        ids = {name: await queue.enqueue(session, name, **values) for name in jobs}
    for name, job_id in ids.items():
        log.info("job enqueued", job=name, job_id=job_id, enqueued_by=_origin(caller))
    return JSONResponse({"jobs": ids}, status_code=202)


def _last_error(detail: admin.JobDetail) -> dict[str, Any] | None:
    errors = [entry["traceback"] for entry in detail.history if entry["traceback"]]
    if not errors:
        return None
    return {
        "type": errors[-1].get("exception_type"),
        "message": errors[-1].get("exception_message"),
    }


async def show_job(request: Request) -> Response:
    services: Services = request.app.state.services
    await _authenticate(services, request)
    job_id: int = request.path_params["job_id"]
    detail = await admin.show_job(services, job_id) if fits_bigint(job_id) else None
    if detail is None:
        raise ApiError(404, "jobs.not_found", f"No job with id {job_id}")
    if detail.row is not None:
        job, state = detail.row.job, detail.row.state
    else:
        async with services.sessions() as session:
            job = await session.scalar(_JOB_NAME, {"id": job_id})
        state = detail.history[-1]["status"]
    return JSONResponse(
        {
            "id": job_id,
            "job": job,
            "state": state,
            "attempts": sum(1 for entry in detail.history if entry["status"] == "picked"),
            "error": _last_error(detail),
            "enqueued_by": detail.enqueued_by,
        }
    )


routes = [
    Route("/v1/jobs/{job_id:int}", show_job, methods=["GET"]),
    Route("/v1/jobs/{job}", enqueue_job, methods=["POST"]),
    Route("/v1/events/{event}", report_event, methods=["POST"]),
]
