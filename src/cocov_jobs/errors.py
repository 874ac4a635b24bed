"""Error classes that decide what the engine does with a failed job.

The retry policy (queue.py) reads only these classes:

* :class:`PermanentError` — finish at once, reason recorded, never retried (record gone,
  invalid input, GitHub 401/403/404).
* :class:`TransientError` — retry with exponential backoff and jitter, capped attempts
  (network, 5xx, lock contention). ``retry_after`` (seconds), when set, replaces the backoff.
* :class:`Deferred` — not a failure: run again after ``delay`` seconds without counting an
  attempt against the cap (rate limits, resource busy).

Any other exception is treated as transient.
"""

from __future__ import annotations


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
