"""``GET /metrics`` (Prometheus text format) and the middleware counting HTTP requests.

The scrape refreshes the gauges of :mod:`cocov_jobs.engine.metrics` with one SQL query (and,
when the Sidekiq intake is configured, its backlog in Sidekiq's Redis), then renders
the process's :data:`~cocov_jobs.engine.metrics.REGISTRY`. Requests are counted by route *template*
(``/dashboard/jobs/{job_id}``, not the id), so the label set stays small; unmatched paths
count as ``<unmatched>``.
"""

from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Match, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from cocov_jobs.engine import metrics
from cocov_jobs.sidekiq import intake

#: Route label of requests no route matched.
UNMATCHED = "<unmatched>"


async def scrape(request: Request) -> Response:
    await metrics.refresh(request.app.state.services)
    await intake.refresh_metrics(request.app.state.services)
    return Response(generate_latest(metrics.REGISTRY), media_type=CONTENT_TYPE_LATEST)


class RequestCounter:
    """ASGI middleware: ``cocov_jobs_http_requests_total{route,method,status}``."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500  # an exception before the response starts is a 500

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            metrics.HTTP_REQUESTS.labels(_route(scope), scope["method"], str(status)).inc()


def _route(scope: Scope) -> str:
    for route in scope["app"].routes if "app" in scope else []:
        if isinstance(route, Route) and route.matches(scope)[0] == Match.FULL:
            return route.path
    return UNMATCHED


routes = [Route("/metrics", scrape, methods=["GET"])]
