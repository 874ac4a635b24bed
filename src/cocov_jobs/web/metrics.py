"""``GET /metrics`` (Prometheus text format) and the middleware counting HTTP requests.

The scrape refreshes the gauges of :mod:`cocov_jobs.engine.metrics` with one SQL query (and,
when the Sidekiq intake is configured, its backlog in Sidekiq's Redis), then renders the
process's :data:`~cocov_jobs.engine.metrics.REGISTRY`. Requests are counted with labels from
fixed sets only, because clients choose methods and paths and every new label value is kept
forever: the route *template* (``/dashboard/jobs/{job_id}``, not the id; unmatched paths count
as ``<unmatched>``), the method if it is one of :data:`METHODS` (else ``other``) and the status
class (``2xx``).
"""

from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Match, Route
from starlette.types import Message, Receive, Scope, Send

from cocov_jobs.engine import metrics
from cocov_jobs.sidekiq import intake
from cocov_jobs.web.asgi import ResponseStartMiddleware

#: Route label of requests no route matched.
UNMATCHED = "<unmatched>"
#: Method labels; any other method counts as :data:`OTHER_METHOD`.
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
OTHER_METHOD = "other"
#: Scope key where the response's status is noted for the count.
_STATUS = "cocov_jobs.status"


async def scrape(request: Request) -> Response:
    await metrics.refresh(request.app.state.services)
    await intake.refresh_metrics(request.app.state.services)
    return Response(generate_latest(metrics.REGISTRY), media_type=CONTENT_TYPE_LATEST)


class RequestCounter(ResponseStartMiddleware):
    """ASGI middleware: ``cocov_jobs_http_requests_total{route,method,status}`` (see above)."""

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await self.app(scope, receive, send)
        finally:
            # An exception before the response starts is a 500.
            status = scope.get(_STATUS, 500)
            method = scope["method"] if scope["method"] in METHODS else OTHER_METHOD
            metrics.HTTP_REQUESTS.labels(_route(scope), method, f"{status // 100}xx").inc()

    def response_started(self, scope: Scope, message: Message) -> None:
        scope[_STATUS] = message["status"]


def _route(scope: Scope) -> str:
    """The template of the route that served ``scope``; for a method no route takes (405), the
    first template of the path."""
    partial = UNMATCHED
    for route in scope["app"].routes if "app" in scope else []:
        if not isinstance(route, Route):
            continue
        match = route.matches(scope)[0]
        if match == Match.FULL:
            return route.path
        if match == Match.PARTIAL and partial == UNMATCHED:
            partial = route.path
    return partial


routes = [Route("/metrics", scrape, methods=["GET"])]
