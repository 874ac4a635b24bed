"""The operator dashboard at ``/dashboard``: server-rendered pages and actions over
:mod:`cocov_jobs.engine.admin`.

Authentication
==============

Every page and action needs a service token (the service API's, ``service_tokens``): either
``Authorization: bearer <token>`` on each request, or the login form, which exchanges a token for
a server-side session (:mod:`~cocov_jobs.web.sessions`: revocable, checked against a live
token, ended by logging out). Each POST form carries the session's CSRF token; the login form
(no session yet) carries one that must equal the ``SameSite=Strict`` CSRF cookie (double
submit). Requests authenticated by the bearer header need none (no ambient credential).

Pages: overview (runs per minute as an SVG chart, queue sizes, oldest ready job, workers, the
Sidekiq intake's backlog when one is configured), one list per state (keyset pages of
:data:`~cocov_jobs.engine.admin.PAGE_SIZE`), finished runs from the job history (filters: job,
outcome, time range, an argument value), a job (its row, runs and log history), per-job
metrics, repositories (one repository's commits, held uploads and recent runs), periodic
schedules, workers; any other path is a "not found" page in the layout. Actions: retry, cancel,
delete, retry all failed, run a periodic job now. Times are in UTC (:mod:`cocov_jobs.times`).
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import PlainTextResponse, RedirectResponse, Response
from starlette.routing import Route
from starlette.templating import Jinja2Templates

from cocov_jobs.engine import admin, history
from cocov_jobs.engine.queue import enqueued_by
from cocov_jobs.engine.registry import UnknownJobError, fits_bigint
from cocov_jobs.repository_status import repositories, repository_status
from cocov_jobs.services import Services
from cocov_jobs.sidekiq.intake import IntakeStatus, current_status
from cocov_jobs.times import duration_text, parse_utc, utc_text
from cocov_jobs.web.auth import use_service_token
from cocov_jobs.web.body import spool_body
from cocov_jobs.web.chart import runs_chart
from cocov_jobs.web.sessions import (
    PREFIXES,
    Session,
    close_session,
    current_session,
    dashboard_prefix,
    open_session,
    prefix_of,
    set_cookie,
)

#: Cookie holding the CSRF token every form repeats.
CSRF_COOKIE = "cocov_dashboard_csrf"
#: Name of the CSRF form field.
CSRF_FIELD = "csrf_token"
#: Largest accepted form body (the forms hold a token and a few short fields).
MAX_FORM_BYTES = 64 * 1024

templates = Jinja2Templates(directory=Path(__file__).parent / "templates")
templates.env.filters.update(utc=utc_text, duration=duration_text)

Handler = Callable[[Request], Awaitable[Response]]


def _services(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


async def _token_id(services: Services, token: str) -> int | None:
    """The id of the service token ``token``, if it is one (its use is stamped)."""
    async with services.sessions.begin() as session:
        caller = await use_service_token(session, token)
    return None if caller is None else caller.token_id


def _bearer(request: Request) -> str | None:
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


async def _authenticated(request: Request) -> bool:
    """True for a live session (``state.session``) or a valid bearer header (``state.bearer``,
    the token's id)."""
    request.state.bearer = None
    request.state.session = None
    token = _bearer(request)
    if token is not None:
        request.state.bearer = await _token_id(_services(request), token)
        return request.state.bearer is not None
    request.state.session = await current_session(request)
    return request.state.session is not None


def _session(request: Request) -> Session | None:
    session: Session | None = getattr(request.state, "session", None)
    return session


def _login_csrf(request: Request) -> str:
    """The CSRF token of the login form: the CSRF cookie's, or a new one (then set)."""
    return request.cookies.get(CSRF_COOKIE) or request.state.__dict__.setdefault(
        "new_csrf", secrets.token_urlsafe(32)
    )


def _csrf(request: Request) -> str:
    """The token forms must repeat: the session's, or the login form's."""
    session = _session(request)
    return session.csrf if session is not None else _login_csrf(request)


async def _form(request: Request) -> dict[str, str]:
    """The POSTed form (URL-encoded, at most :data:`MAX_FORM_BYTES`), read once per request.

    Read like any body from a sender not yet known (the login form), with bounded memory
    (:func:`~cocov_jobs.web.body.spool_body`), not with Starlette's unbounded parser.
    """
    cached: dict[str, str] | None = getattr(request.state, "form", None)
    if cached is None:
        async with spool_body(request, MAX_FORM_BYTES) as body:
            text = body.read().decode("utf-8", errors="replace")
        cached = dict(parse_qsl(text, keep_blank_values=True))
        request.state.form = cached
    return cached


async def _check_csrf(request: Request) -> None:
    if request.state.bearer is not None:
        return
    form = await _form(request)
    session = _session(request)
    expected = session.csrf if session is not None else request.cookies.get(CSRF_COOKIE, "")
    if not expected or not secrets.compare_digest(str(form.get(CSRF_FIELD, "")), expected):
        raise HTTPException(403, "CSRF token missing or wrong")


def _render(request: Request, name: str, status: int = 200, **context: Any) -> Response:
    context.update(
        csrf=_csrf(request),
        prefix=dashboard_prefix(request),
        notice=request.query_params.get("notice"),
    )
    response = templates.TemplateResponse(request, name, context, status_code=status)
    _set_csrf_cookie(request, response)
    return response


def _not_found(request: Request, message: str) -> Response:
    """A 404 in the dashboard's layout, with its navigation and a link back to the overview."""
    return _render(request, "not_found.html", status=404, message=message, page="missing")


def _set_csrf_cookie(request: Request, response: Response) -> None:
    if _session(request) is None and CSRF_COOKIE not in request.cookies:
        set_cookie(request, response, CSRF_COOKIE, _login_csrf(request))


def page(handler: Handler) -> Handler:
    """Require authentication: browsers go to the login form, API clients get a 401."""

    async def guarded(request: Request) -> Response:
        if await _authenticated(request):
            return await handler(request)
        if _bearer(request) is not None:
            raise HTTPException(401, "unknown service token")
        return RedirectResponse(f"{dashboard_prefix(request)}/login", status_code=303)

    return guarded


def action(handler: Callable[[Request], Awaitable[str]]) -> Handler:
    """An authenticated, CSRF-checked POST whose handler returns a notice; redirects back."""

    async def run(request: Request) -> Response:
        await _check_csrf(request)
        notice = await handler(request)
        prefix = dashboard_prefix(request)
        back = str((await _form(request)).get("next") or prefix)
        target = back if prefix_of(back) == prefix else prefix
        sep = "&" if "?" in target else "?"
        return RedirectResponse(f"{target}{sep}{urlencode({'notice': notice})}", 303)

    return page(run)


# Login ---------------------------------------------------------------------------------------


async def login_form(request: Request) -> Response:
    request.state.bearer = None
    return _render(request, "login.html", error=None)


async def login(request: Request) -> Response:
    request.state.bearer = None
    request.state.session = None
    await _check_csrf(request)
    token = (await _form(request)).get("token", "")
    token_id = await _token_id(_services(request), token) if token else None
    if token_id is None:
        response = _render(request, "login.html", error="Unknown service token.")
        response.status_code = 401
        return response
    response = RedirectResponse(dashboard_prefix(request), status_code=303)
    await open_session(request, response, token_id=token_id)
    return response


async def logout(request: Request) -> Response:
    await _check_csrf(request)
    response = RedirectResponse(f"{dashboard_prefix(request)}/login", status_code=303)
    session = _session(request)
    if session is not None:
        await close_session(request, response, session)
    return response


# Pages ---------------------------------------------------------------------------------------


@page
async def overview(request: Request) -> Response:
    services = _services(request)
    stats = await admin.stats(services)
    chart = runs_chart(stats.runs, unit="minute")
    try:
        sidekiq: IntakeStatus | str | None = await current_status(services)
    except Exception as exc:  # the page shows the rest; the intake box says why it is empty
        sidekiq = f"Sidekiq's Redis cannot be read ({type(exc).__name__})"
    return _render(
        request, "overview.html", stats=stats, chart=chart, sidekiq=sidekiq, page="overview"
    )


@page
async def job_list(request: Request) -> Response:
    state = request.path_params["state"]
    if state not in admin.STATES:
        return _not_found(request, f"There is no job state {state!r}.")
    services = _services(request)
    before = request.query_params.get("before") or None
    if before is not None and not (before.isdigit() and fits_bigint(int(before))):
        raise HTTPException(400, "before must be a job id")
    job = request.query_params.get("job") or None
    if job is not None and job not in services.registry:
        raise HTTPException(400, f"no job {job}")
    rows = await admin.list_jobs(
        services, state=state, job=job, before=int(before) if before else None
    )
    more = len(rows) == admin.PAGE_SIZE
    return _render(request, "jobs.html", rows=rows, state=state, job=job, more=more, page=state)


def _job_id(request: Request) -> int:
    """The ``job_id`` of the path; 404 when no job can have it (beyond ``bigint``)."""
    job_id: int = request.path_params["job_id"]
    if not fits_bigint(job_id):
        raise HTTPException(404, "no such job")
    return job_id


@page
async def job_detail(request: Request) -> Response:
    job_id = _job_id(request)
    detail = await admin.show_job(_services(request), job_id)
    if detail is None:
        return _not_found(request, f"No job {job_id}: it never existed or its history was pruned.")
    return _render(request, "job.html", detail=detail, page="job")


#: The finished list's filter fields (query parameters).
FINISHED_FILTERS = ("job", "outcome", "since", "until", "argument")


def _run_filter(services: Services, query: Mapping[str, str]) -> history.RunFilter:
    """The filter the query asks for; ``ValueError`` (a message for the page) when it is wrong."""
    job, since, until = (query.get(name, "").strip() for name in ("job", "since", "until"))
    try:
        name = services.registry.resolve(job).name if job else None
    except UnknownJobError as exc:
        raise ValueError(str(exc)) from None
    return history.RunFilter(
        job=name,
        outcome=query.get("outcome") or None,
        since=parse_utc(since) if since else None,
        until=parse_utc(until) if until else None,
        argument=query.get("argument", "").strip() or None,
    )


@page
async def finished(request: Request) -> Response:
    services = _services(request)
    query = request.query_params
    filters = {name: query[name] for name in FINISHED_FILTERS if query.get(name)}
    context: dict[str, Any] = {
        "filters": filters,
        "jobs": sorted(d.name for d in services.registry),
        "outcomes": history.OUTCOMES,
        "page": "finished",
    }
    try:
        runs = _run_filter(services, query)
        before = int(query["before"]) if query.get("before") else None
        if before is not None and not fits_bigint(before):
            raise ValueError("before must be a run id")
    except ValueError as exc:
        return _render(request, "finished.html", status=400, rows=[], error=str(exc), **context)
    rows = await history.list_runs(services, runs, before=before)
    more = urlencode({**filters, "before": rows[-1].id}) if len(rows) == history.PAGE_SIZE else None
    return _render(request, "finished.html", rows=rows, more=more, error=None, **context)


@page
async def metrics(request: Request) -> Response:
    services = _services(request)
    bounds = await history.rolled_up(services)
    figures, hourly = await asyncio.gather(
        history.job_metrics(services, bounds), history.hourly_runs(services, bounds)
    )
    by_job: dict[str, list[history.Figures]] = {}
    for figure in figures:
        by_job.setdefault(figure.job, []).append(figure)
    charts = {
        job: runs_chart(buckets, unit="hour", width=360, height=50)
        for job, buckets in hourly.items()
    }
    return _render(request, "metrics.html", by_job=by_job, charts=charts, page="metrics")


@page
async def repository_list(request: Request) -> Response:
    search = request.query_params.get("q", "").strip()
    rows = await repositories(_services(request), search or None)
    return _render(request, "repositories.html", rows=rows, search=search, page="repositories")


@page
async def repository(request: Request) -> Response:
    ref = request.path_params["ref"]
    status = await repository_status(_services(request), ref)
    if status is None:
        return _not_found(request, f"No repository has the id or name {ref!r}.")
    return _render(request, "repository.html", repo=status, page="repositories")


@page
async def _missing(request: Request) -> Response:
    detail = request.state.missing
    message = f"There is no page {request.url.path}." if detail == "Not Found" else detail
    return _not_found(request, message)


async def not_found(request: Request, exc: Exception) -> Response:
    """The app's 404 answer: under the dashboard, a page in its layout (after a login, as every
    page); elsewhere the plain text answer it would have been."""
    assert isinstance(exc, HTTPException)
    if prefix_of(request.url.path) is None:
        return PlainTextResponse(exc.detail, status_code=exc.status_code, headers=exc.headers)
    request.state.missing = exc.detail
    return await _missing(request)


@page
async def schedules(request: Request) -> Response:
    rows = await admin.schedules(_services(request))
    return _render(request, "schedules.html", rows=rows, page="schedules")


@page
async def workers(request: Request) -> Response:
    rows = await admin.workers(_services(request))
    return _render(request, "workers.html", rows=rows, page="workers")


# Actions -------------------------------------------------------------------------------------


def _job_action(
    verb: str, call: Callable[[Services, int], Awaitable[bool]]
) -> Callable[[Request], Awaitable[str]]:
    async def handler(request: Request) -> str:
        job_id = _job_id(request)
        done = await call(_services(request), job_id)
        return f"job {job_id} {verb}" if done else f"job {job_id} could not be {verb}"

    return handler


async def _retry_all(request: Request) -> str:
    return f"{await admin.retry_all_failed(_services(request))} failed job(s) queued again"


def _origin(request: Request) -> str:
    """Who acts: ``token:<id>`` (bearer or login), or ``user:<id>`` (a Cocov user's session)."""
    session = _session(request)
    if session is None:
        return f"token:{request.state.bearer}"
    return f"user:{session.user_id}" if session.user_id is not None else f"token:{session.token_id}"


async def _run_now(request: Request) -> str:
    entrypoint = request.path_params["entrypoint"]
    if entrypoint not in _services(request).registry:
        raise HTTPException(404, f"no job {entrypoint}")
    with enqueued_by(_origin(request)):
        job_id = await admin.run_now(_services(request), entrypoint)
    return f"{entrypoint} enqueued as job {job_id}" if job_id else f"{entrypoint} already queued"


def _routes(prefix: str) -> list[Route]:
    return [
        Route(f"{prefix}/login", login_form, methods=["GET"]),
        Route(f"{prefix}/login", login, methods=["POST"]),
        Route(f"{prefix}/logout", page(logout), methods=["POST"]),
        Route(prefix, overview, methods=["GET"]),
        Route(f"{prefix}/jobs/{{job_id:int}}", job_detail, methods=["GET"]),
        Route(f"{prefix}/state/{{state}}", job_list, methods=["GET"]),
        Route(f"{prefix}/finished", finished, methods=["GET"]),
        Route(f"{prefix}/metrics", metrics, methods=["GET"]),
        Route(f"{prefix}/repositories", repository_list, methods=["GET"]),
        Route(f"{prefix}/repositories/{{ref}}", repository, methods=["GET"]),
        Route(f"{prefix}/schedules", schedules, methods=["GET"]),
        Route(f"{prefix}/workers", workers, methods=["GET"]),
        *(
            Route(
                f"{prefix}/jobs/{{job_id:int}}/{verb}",
                action(_job_action(done, call)),
                methods=["POST"],
            )
            for verb, done, call in (
                ("retry", "retried", admin.retry),
                ("cancel", "canceled", admin.cancel),
                ("delete", "deleted", admin.delete),
            )
        ),
        Route(f"{prefix}/failed/retry-all", action(_retry_all), methods=["POST"]),
        Route(f"{prefix}/schedules/{{entrypoint}}/run", action(_run_now), methods=["POST"]),
    ]


routes = [route for prefix in PREFIXES for route in _routes(prefix)]
