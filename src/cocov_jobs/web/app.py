"""The Starlette application served by ``cocov-jobs web`` and ``cocov-jobs run``.

Routes: GitHub webhooks (:mod:`~cocov_jobs.web.webhooks`), coverage uploads
(:mod:`~cocov_jobs.web.reports`), the service API (:mod:`~cocov_jobs.web.api`), the probes
(:mod:`~cocov_jobs.web.probes`), ``/metrics`` and the dashboard. Errors of the first three use
Cocov's envelope (:mod:`~cocov_jobs.web.errors`).
"""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.middleware import Middleware

from cocov_jobs.services import Services
from cocov_jobs.web import api, dashboard, metrics, panel, probes, reports, webhooks
from cocov_jobs.web.body import unauthenticated_body_slots
from cocov_jobs.web.errors import EXCEPTION_HANDLERS
from cocov_jobs.web.headers import SecurityHeaders


def create_app(services: Services, *, expect_worker: bool = False) -> Starlette:
    """The web app; ``expect_worker`` makes readiness require a live worker heartbeat."""
    app = Starlette(
        routes=[*probes.routes, *webhooks.routes, *reports.routes, *api.routes],
        exception_handlers={**EXCEPTION_HANDLERS, 404: dashboard.not_found},
        middleware=[Middleware(metrics.RequestCounter), Middleware(SecurityHeaders)],
    )
    app.router.routes.extend([*metrics.routes, *panel.routes, *dashboard.routes])
    app.state.services = services
    app.state.expect_worker = expect_worker
    app.state.unauthenticated_bodies = unauthenticated_body_slots()
    webhooks.startup_warning(services.settings)
    return app


def create_probe_app(services: Services) -> Starlette:
    """Probes and metrics, for a worker process (Cocov's Sidekiq probe server)."""
    app = Starlette(routes=[*probes.routes, *metrics.routes])
    app.state.services = services
    app.state.expect_worker = True
    return app
