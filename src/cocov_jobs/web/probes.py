"""Probes, on the web port and on Cocov's Sidekiq probe address for worker processes.

* ``/system/probes/liveness`` — 200 ``{"ok": true}`` while the process serves requests.
* ``/system/probes/readiness`` — 200 when PostgreSQL and Redis (and Sidekiq's Redis, when
  ``COCOV_SIDEKIQ_REDIS_URL`` is set) answer, the schema is at head and
  (when a worker is expected) a worker heartbeat is fresher than
  :data:`WORKER_FRESHNESS`; else 503 with the failing checks (``postgresql_error`` /
  ``redis_error``: the store's address, its setting and why, :mod:`cocov_jobs.reachability`).
* ``/system/ping`` — 204.
"""

from __future__ import annotations

import asyncio
from typing import Any

from sqlalchemy import text
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from cocov_jobs import reachability
from cocov_jobs.db.migrate import schema_is_current
from cocov_jobs.services import Services

#: A worker heartbeat older than this many seconds does not count as alive.
WORKER_FRESHNESS = 30
#: Seconds each readiness check may take.
CHECK_TIMEOUT = 2.0


async def liveness(request: Request) -> Response:
    return JSONResponse({"ok": True})


async def ping(request: Request) -> Response:
    return Response(status_code=204)


async def _check_database(services: Services, expect_worker: bool) -> dict[str, Any]:
    async with services.engine.connect() as conn:
        await conn.execute(text("SELECT 1"))
        checks: dict[str, Any] = {"postgresql": True}
        if expect_worker:
            alive = await conn.scalar(
                text(
                    "SELECT count(*) FROM cocov_jobs_workers"
                    f" WHERE heartbeat_at > now() - interval '{WORKER_FRESHNESS} seconds'"
                )
            )
            checks["workers"] = int(alive or 0)
    checks["schema"] = await schema_is_current(services.engine)
    return checks


async def readiness(request: Request) -> Response:
    services: Services = request.app.state.services
    expect_worker: bool = request.app.state.expect_worker
    checks: dict[str, Any] = {}
    try:
        checks.update(
            await asyncio.wait_for(_check_database(services, expect_worker), CHECK_TIMEOUT)
        )
    except Exception as exc:  # any failure means not ready; say which, where and why
        checks["postgresql"] = False
        checks["postgresql_error"] = reachability.postgresql_failure(services, exc)
    stores = reachability.redis_stores(services)
    for name, store in stores.items():
        problem = await reachability.redis_problem(store, CHECK_TIMEOUT)
        checks[name] = problem is None
        if problem is not None:
            checks[f"{name}_error"] = problem
    ready = (
        checks.get("postgresql") is True
        and checks.get("schema") is True
        and all(checks[name] for name in stores)
        and (not expect_worker or checks.get("workers", 0) > 0)
    )
    return JSONResponse({"ok": ready, "checks": checks}, status_code=200 if ready else 503)


routes = [
    Route("/system/probes/liveness", liveness, methods=["GET", "HEAD"]),
    Route("/system/probes/readiness", readiness, methods=["GET", "HEAD"]),
    Route("/system/ping", ping, methods=["GET", "HEAD"]),
]
