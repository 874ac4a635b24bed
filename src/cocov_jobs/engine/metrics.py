"""Prometheus metrics of one process, in :data:`REGISTRY` (served at ``/metrics``).

Counted where they happen (the worker, through :func:`observe_job`; the web server, through
:mod:`cocov_jobs.web.metrics`):

* ``cocov_jobs_processed_total{job}`` — runs that finished successfully;
* ``cocov_jobs_failed_total{job}`` — runs that ended the job as failed;
* ``cocov_jobs_retried_total{job}`` — runs that put the job back (retry or deferral);
* ``cocov_jobs_job_duration_seconds{job}`` — run time of every run;
* ``cocov_jobs_queue_wait_seconds{job}`` — from due (``max(created, execute_after)``) to start;
* ``cocov_jobs_http_requests_total{route,method,status}``.

Read at scrape time (:func:`refresh`, one SQL query): ``cocov_jobs_queue_depth{state}``,
``cocov_jobs_oldest_ready_job_age_seconds``, ``cocov_jobs_workers_alive``, and
``cocov_jobs_github_rate_limit_remaining`` (NaN until GitHub answered once).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from datetime import UTC, datetime

from pgqueuer.errors import RetryRequested
from pgqueuer.models import Job
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from cocov_jobs.engine import admin
from cocov_jobs.services import Services

#: This process's metrics (the worker and web server of ``run`` share it).
REGISTRY = CollectorRegistry()
#: Histogram buckets (seconds) for run time and queue wait: 5 ms to 30 min.
DURATION_BUCKETS = (0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 1800)

PROCESSED = Counter("cocov_jobs_processed", "Job runs that succeeded.", ["job"], registry=REGISTRY)
FAILED = Counter(
    "cocov_jobs_failed", "Job runs that left the job failed.", ["job"], registry=REGISTRY
)
RETRIED = Counter(
    "cocov_jobs_retried", "Job runs that put the job back in the queue.", ["job"], registry=REGISTRY
)
DURATION = Histogram(
    "cocov_jobs_job_duration_seconds",
    "Run time of a job run.",
    ["job"],
    buckets=DURATION_BUCKETS,
    registry=REGISTRY,
)
QUEUE_WAIT = Histogram(
    "cocov_jobs_queue_wait_seconds",
    "Time from a job being due to its run starting.",
    ["job"],
    buckets=DURATION_BUCKETS,
    registry=REGISTRY,
)
HTTP_REQUESTS = Counter(
    "cocov_jobs_http_requests",
    "HTTP requests by route template, method and status class.",
    ["route", "method", "status"],
    registry=REGISTRY,
)
QUEUE_DEPTH = Gauge("cocov_jobs_queue_depth", "Jobs by state.", ["state"], registry=REGISTRY)
OLDEST_READY = Gauge(
    "cocov_jobs_oldest_ready_job_age_seconds",
    "How long the oldest due job has been waiting (0 when none).",
    registry=REGISTRY,
)
WORKERS_ALIVE = Gauge(
    "cocov_jobs_workers_alive", "Worker processes with a fresh heartbeat.", registry=REGISTRY
)
GITHUB_RATE_LIMIT = Gauge(
    "cocov_jobs_github_rate_limit_remaining",
    "X-RateLimit-Remaining of the last GitHub answer (NaN before the first).",
    registry=REGISTRY,
)


@contextlib.contextmanager
def observe_job(name: str, job: Job) -> Iterator[None]:
    """Count and time one run of ``job``; the outcome is read from the exception, if any."""
    due = max(job.created, job.execute_after)
    QUEUE_WAIT.labels(name).observe(max(0.0, (datetime.now(UTC) - due).total_seconds()))
    started = time.monotonic()
    try:
        yield
    except RetryRequested:
        RETRIED.labels(name).inc()
        raise
    except Exception:
        FAILED.labels(name).inc()
        raise
    else:
        PROCESSED.labels(name).inc()
    finally:
        DURATION.labels(name).observe(time.monotonic() - started)


async def refresh(services: Services) -> None:
    """Set the scrape-time gauges from the database and the GitHub client."""
    depth = await admin.depth(services)
    for state in admin.STATES:
        QUEUE_DEPTH.labels(state).set(depth.by_state.get(state, 0))
    OLDEST_READY.set(depth.oldest_ready_seconds or 0.0)
    WORKERS_ALIVE.set(depth.workers_alive)
    remaining = services.github().rate_limit_remaining
    GITHUB_RATE_LIMIT.set(float("nan") if remaining is None else remaining)
