"""GitHub answers mapped to the engine's retry classes (:mod:`cocov_jobs.engine.retry`).

* 403 or 429 with ``X-RateLimit-Remaining: 0`` (primary rate limit) → :class:`GitHubRateLimited`
  (a :class:`~cocov_jobs.engine.retry.Deferred`): run again once the limit resets.
* 403 or 429 with ``Retry-After`` or a body mentioning "secondary rate limit", and any other 429
  (secondary rate limit) → :class:`GitHubRateLimited`: run again after the advertised wait.
* Any other 4xx except 408 (401, 403, 404, 409, 422, …) → :class:`GitHubError`
  (a :class:`~cocov_jobs.engine.retry.PermanentError`): the job finishes with the reason recorded.
* 5xx, 408, timeouts and connection errors → :class:`GitHubUnavailable`
  (a :class:`~cocov_jobs.engine.retry.TransientError`): retried with backoff.

* Primary limit delay: ``X-RateLimit-Reset − now + RESET_MARGIN`` seconds (at least the margin).
* Secondary limit delay: ``Retry-After`` (seconds or an HTTP date), else
  :data:`SECONDARY_LIMIT_DELAY`. A ``Retry-After`` on a 5xx becomes ``retry_after``.
* Messages name the method and the URL path only (no query string, no headers), e.g.
  ``GitHub answered 404 Not Found for GET /repositories/5/collaborators``; GitHub's own message
  is appended, cut to :data:`MAX_GITHUB_MESSAGE` characters, with any secret masked out.
"""

from __future__ import annotations

import email.utils
import time
from collections.abc import Iterable
from typing import Literal

import httpx

from cocov_jobs.engine.retry import Deferred, JobError, PermanentError, TransientError

#: Seconds added to ``X-RateLimit-Reset`` before running again (clock drift, reset rounding).
RESET_MARGIN = 1.0
#: Delay of a secondary rate limit that names none (GitHub: "wait at least one minute").
SECONDARY_LIMIT_DELAY = 60.0
#: Longest part of GitHub's own error message kept in ours.
MAX_GITHUB_MESSAGE = 200
#: Mask replacing a secret found in a message.
REDACTED = "[redacted]"


class GitHubError(PermanentError):
    """GitHub refused the request for good (401, 403, 404, 422, …); retrying cannot help."""

    def __init__(self, message: str, *, status: int, method: str, path: str) -> None:
        super().__init__(message)
        self.status = status
        self.method = method
        self.path = path


class GitHubUnavailable(TransientError):
    """GitHub failed (5xx) or could not be reached in time; ``status`` None when no answer."""

    def __init__(
        self, message: str, *, status: int | None = None, retry_after: float | None = None
    ) -> None:
        super().__init__(message, retry_after=retry_after)
        self.status = status


class GitHubRateLimited(Deferred):
    """GitHub asked us to slow down; run again after ``delay`` seconds."""

    def __init__(
        self, message: str, *, delay: float, kind: Literal["primary", "secondary"]
    ) -> None:
        super().__init__(message, delay=delay)
        self.kind = kind


def classify(
    response: httpx.Response,
    *,
    method: str,
    path: str,
    credential: str,
    secrets: Iterable[str] = (),
) -> JobError | None:
    """The error ``response`` stands for, or None when it succeeded (status below 400).

    ``credential`` names what authenticated the request ("installation token", …) and is
    mentioned when GitHub answers 401.
    """
    status = response.status_code
    if status < 400:
        return None
    message = _message(response, method, path, credential, secrets)
    limited = _rate_limit(response, message)
    if limited:
        return limited
    if status >= 500 or status == 408:
        return GitHubUnavailable(message, status=status, retry_after=_retry_after(response))
    return GitHubError(message, status=status, method=method, path=path)


def transport_error(exc: httpx.TransportError, *, method: str, path: str) -> GitHubUnavailable:
    """A timeout or connection failure as a transient error (the URL's query is not named)."""
    what = "timed out" if isinstance(exc, httpx.TimeoutException) else "could not be reached"
    return GitHubUnavailable(f"GitHub {what} ({type(exc).__name__}) for {method} {path}")


def _rate_limit(response: httpx.Response, message: str) -> GitHubRateLimited | None:
    if response.status_code not in (403, 429):
        return None
    headers = response.headers
    if headers.get("x-ratelimit-remaining") == "0" and "x-ratelimit-reset" in headers:
        reset = _number(headers["x-ratelimit-reset"])
        delay = max(0.0, (reset or 0.0) - time.time()) + RESET_MARGIN
        return GitHubRateLimited(message, delay=delay, kind="primary")
    retry_after = _retry_after(response)
    if retry_after is not None or "secondary rate limit" in message.lower():
        delay = retry_after if retry_after is not None else SECONDARY_LIMIT_DELAY
        return GitHubRateLimited(message, delay=delay, kind="secondary")
    if response.status_code == 429:
        return GitHubRateLimited(message, delay=SECONDARY_LIMIT_DELAY, kind="secondary")
    return None


def _retry_after(response: httpx.Response) -> float | None:
    raw = response.headers.get("retry-after")
    if raw is None:
        return None
    seconds = _number(raw)
    if seconds is not None:
        return max(0.0, seconds)
    try:
        when = email.utils.parsedate_to_datetime(raw)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _number(raw: str) -> float | None:
    try:
        return float(raw)
    except ValueError:
        return None


def _message(
    response: httpx.Response, method: str, path: str, credential: str, secrets: Iterable[str]
) -> str:
    status = response.status_code
    text = f"GitHub answered {status} {httpx.codes.get_reason_phrase(status)} for {method} {path}"
    detail = _github_message(response)
    if detail and detail != httpx.codes.get_reason_phrase(status):
        text += f": {detail}"
    if status == 401:
        text += f" (the {credential} was rejected: revoked, expired or wrong)"
    for secret in secrets:
        if secret:
            text = text.replace(secret, REDACTED)
    return text


def _github_message(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return ""
    message = body.get("message") if isinstance(body, dict) else None
    return str(message)[:MAX_GITHUB_MESSAGE] if message else ""
