"""The retry policy: the one place that decides what happens to a job after a failed run.

Job code raises; the engine decides. The error classes are the vocabulary:

* :class:`PermanentError` — finish at once, reason recorded, never retried (record gone,
  invalid input, GitHub 401/403/404, arguments that do not fit the job);
* :class:`TransientError` — retry with exponential backoff and jitter, capped attempts
  (network, 5xx, lock contention); ``retry_after`` (seconds), when set, replaces the backoff;
* :class:`Deferred` — not a failure: run again after ``delay`` seconds without counting an
  attempt against the cap (rate limits, a busy resource). A database connection found dead
  (PostgreSQL restarted) is treated the same way, after :data:`RECONNECT_DELAY`, and so is a
  new connection PostgreSQL refuses for want of a slot (too many clients, server starting),
  after one to two times that: the shortage is the installation's, and a job must not use up
  its attempts on it.

Any other exception is treated as transient. :func:`decide` turns an exception into a
:class:`Retry` (put the job back after ``delay``; ``counted`` says whether it uses an attempt)
or ``None`` (hold the job as failed now). Backoff: ``min(max_delay, base · 2^attempts) ·
U(1, 1.25)`` seconds; at most ``max_attempts`` runs. The defaults (25 runs, 15 s, 3600 s) are
the settings' (``COCOV_MAX_ATTEMPTS``, ``COCOV_RETRY_BASE_SECONDS``,
``COCOV_RETRY_MAX_SECONDS``).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import TYPE_CHECKING

from cocov_jobs.db.session import connection_lost, no_connection_slot

if TYPE_CHECKING:
    from cocov_jobs.config import Settings

#: Seconds before a job whose lock is busy is tried again, jittered by :data:`LOCK_JITTER`.
LOCK_RETRY_DELAY = 2.0
#: Jitter factor range of a busy-lock deferral.
LOCK_JITTER = (1.0, 1.5)
#: Seconds before a job that met a dead database connection runs again (not counted).
RECONNECT_DELAY = 1.0
#: Jitter factor range of the retry of a job refused a database connection (spreads a stampede).
NO_SLOT_JITTER = (1.0, 2.0)
#: Jitter factor range applied to backoff delays.
BACKOFF_JITTER = (1.0, 1.25)


class JobError(Exception):
    """Base class of errors that carry a retry decision."""


class PermanentError(JobError):
    """The job can never succeed with this input; finish it now and record why."""


class TransientError(JobError):
    """The job may succeed later; retry with backoff (or after ``retry_after`` seconds)."""

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class Deferred(JobError):
    """Run the job again after ``delay`` seconds (rate limit, busy resource)."""

    def __init__(self, message: str, *, delay: float) -> None:
        super().__init__(message)
        self.delay = max(0.0, delay)


def lock_busy(message: str) -> Deferred:
    """The deferral of a job that found a lock or resource held by another job."""
    return Deferred(message, delay=LOCK_RETRY_DELAY * random.uniform(*LOCK_JITTER))


@dataclass(frozen=True)
class RetryPolicy:
    """Backoff ``min(max_delay, base_delay · 2^attempts) · U(1, 1.25)``; ``max_attempts`` runs."""

    max_attempts: int
    base_delay: float
    max_delay: float

    @classmethod
    def from_settings(cls, settings: Settings) -> RetryPolicy:
        return cls(settings.max_attempts, settings.retry_base_seconds, settings.retry_max_seconds)

    def backoff(self, attempts: int) -> float:
        delay = min(self.max_delay, self.base_delay * (2 ** min(attempts, 32)))
        return float(delay * random.uniform(*BACKOFF_JITTER))


@dataclass(frozen=True)
class Retry:
    """Put the job back after ``delay`` seconds; ``counted`` says whether it uses an attempt."""

    delay: float
    counted: bool
    reason: str


#: The re-queue of a job interrupted by a worker shutdown: at once, not counted.
INTERRUPTED = Retry(0.0, counted=False, reason="worker shut down before the job finished")


def decide(exc: BaseException, attempts: int, policy: RetryPolicy) -> Retry | None:
    """What to do after ``exc`` on a job that was already retried ``attempts`` times.

    ``None`` means finish the job as failed now.
    """
    if isinstance(exc, PermanentError):
        return None
    if isinstance(exc, Deferred):
        return Retry(exc.delay, counted=False, reason=str(exc))
    if connection_lost(exc):
        return Retry(RECONNECT_DELAY, counted=False, reason=f"database connection lost: {exc}")
    if no_connection_slot(exc):
        delay = RECONNECT_DELAY * random.uniform(*NO_SLOT_JITTER)
        return Retry(delay, counted=False, reason=f"database has no connection slot: {exc}")
    if attempts + 1 >= policy.max_attempts:
        return None
    retry_after = exc.retry_after if isinstance(exc, TransientError) else None
    delay = retry_after if retry_after is not None else policy.backoff(attempts)
    return Retry(delay, counted=True, reason=f"{type(exc).__name__}: {exc}")
