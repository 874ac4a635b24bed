"""Whether a failure ends the running job: the engine's retry rule applied to this attempt.

Jobs that leave a visible state behind when they give up (a commit marked ``errored``, coverage
marked ``errored``) ask :func:`gives_up` before recording it, so that transient failures that
will be retried never show up as final ones.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from cocov_jobs.queue import RetryPolicy, retry_decision

if TYPE_CHECKING:
    from cocov_jobs.jobs.context import JobContext


def gives_up(ctx: JobContext, exc: BaseException) -> bool:
    """True when the engine will not run the job again after ``exc`` (see queue.retry_decision).

    Permanent errors end the job at once; a deferral never does; anything else ends it on its
    ``COCOV_MAX_ATTEMPTS``-th run.
    """
    policy = RetryPolicy(max_attempts=ctx.settings.max_attempts)
    return retry_decision(exc, ctx.attempts, policy) is None
