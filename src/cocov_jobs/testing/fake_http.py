"""What GitHub does to every API response, for the fake: pagination, ETags, rate limits, faults.

* Pagination: ``per_page`` (default :data:`DEFAULT_PER_PAGE`, at most :data:`MAX_PER_PAGE`) and
  ``page`` (from 1); a ``Link`` header with absolute ``prev``/``next``/``last``/``first`` URLs.
* ETags: weak, ``W/"<sha256 of the body>"``; ``If-None-Match`` with a matching tag answers 304.
* Rate limit: a window of :data:`RATE_LIMIT` requests per :data:`RATE_LIMIT_WINDOW` seconds,
  reported in ``X-RateLimit-*`` headers, counting every answer except 304 (as GitHub does),
  never enforced: exhaustion is injected with :class:`Injections`.
* Faults are injected FIFO: a request consumes the first registered, matching, unconsumed
  delay and the first such failure.
"""

from __future__ import annotations

import hashlib
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from starlette.requests import Request
from starlette.responses import Response

#: ``per_page`` when the request gives none (GitHub's default).
DEFAULT_PER_PAGE = 30
#: Largest ``per_page`` GitHub honours; larger values are clamped.
MAX_PER_PAGE = 100
#: Requests per window (GitHub's limit for an installation on a personal plan).
RATE_LIMIT = 5000
#: Length of a rate-limit window, seconds.
RATE_LIMIT_WINDOW = 3600
#: Body message GitHub sends with a primary rate limit.
PRIMARY_LIMIT_MESSAGE = "API rate limit exceeded for installation."
#: Body message GitHub sends with a secondary rate limit.
SECONDARY_LIMIT_MESSAGE = (
    "You have exceeded a secondary rate limit. Please wait a few minutes before you try again."
)

#: Builds the response an injected failure answers with (called when the request arrives).
Responder = Callable[[], Response]


def page_params(request: Request) -> tuple[int, int]:
    """``(page, per_page)`` of a list request, with GitHub's defaults and clamping."""
    per_page = _positive_int(request.query_params.get("per_page"), DEFAULT_PER_PAGE)
    page = _positive_int(request.query_params.get("page"), 1)
    return page, min(per_page, MAX_PER_PAGE)


def _positive_int(raw: str | None, default: int) -> int:
    return int(raw) if raw and raw.isdigit() and int(raw) > 0 else default


def link_header(request: Request, page: int, per_page: int, total: int) -> str | None:
    """GitHub's ``Link`` header for ``page`` of a ``total``-item listing, or None (one page)."""
    last = max(1, -(-total // per_page))
    if last == 1 and page == 1:
        return None
    rels: list[tuple[str, int]] = []
    if page > 1:
        rels.append(("prev", min(page - 1, last)))
    if page < last:
        rels += [("next", page + 1), ("last", last)]
    if page > 1:
        rels.append(("first", 1))
    return ", ".join(
        f'<{request.url.include_query_params(page=number)}>; rel="{rel}"' for rel, number in rels
    )


def etag(body: bytes) -> str:
    """Weak ETag of a response body."""
    return f'W/"{hashlib.sha256(body).hexdigest()}"'


def etag_matches(if_none_match: str | None, tag: str) -> bool:
    """True when an ``If-None-Match`` value names ``tag`` (weak comparison) or is ``*``."""
    if not if_none_match:
        return False
    wanted = {part.strip().removeprefix("W/") for part in if_none_match.split(",")}
    return "*" in wanted or tag.removeprefix("W/") in wanted


class RateLimitWindow:
    """Counts API requests in fixed windows and renders the ``X-RateLimit-*`` headers."""

    def __init__(self, limit: int = RATE_LIMIT, window: int = RATE_LIMIT_WINDOW) -> None:
        self.limit = limit
        self.window = window
        self._lock = threading.Lock()
        self._reset = int(time.time()) + window
        self._used = 0

    def headers(self, *, count: bool) -> dict[str, str]:
        """Headers of one answer; ``count`` it against the window unless it is a 304."""
        with self._lock:
            now = int(time.time())
            if now >= self._reset:
                self._reset, self._used = now + self.window, 0
            if count:
                self._used = min(self.limit, self._used + 1)
            return {
                "X-RateLimit-Limit": str(self.limit),
                "X-RateLimit-Remaining": str(self.limit - self._used),
                "X-RateLimit-Reset": str(self._reset),
                "X-RateLimit-Used": str(self._used),
                "X-RateLimit-Resource": "core",
            }


@dataclass
class _Injection:
    method: str | None
    pattern: re.Pattern[str]
    remaining: int
    respond: Responder | None = None
    delay: float = 0.0

    def matches(self, method: str, path: str) -> bool:
        return (
            self.remaining > 0
            and (self.method is None or self.method == method)
            and self.pattern.search(path) is not None
        )


class Injections:
    """Registered faults, consumed FIFO by the requests they match."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._failures: list[_Injection] = []
        self._delays: list[_Injection] = []

    def fail(self, method: str | None, path_regex: str, respond: Responder, times: int) -> None:
        with self._lock:
            self._failures.append(_Injection(method, re.compile(path_regex), times, respond))

    def delay(self, method: str | None, path_regex: str, seconds: float, times: int) -> None:
        with self._lock:
            injection = _Injection(method, re.compile(path_regex), times, delay=seconds)
            self._delays.append(injection)

    def clear(self) -> None:
        with self._lock:
            self._failures.clear()
            self._delays.clear()

    def take_delay(self, method: str, path: str) -> float:
        """Seconds to wait before answering this request (0 when no delay matches)."""
        found = self._take(self._delays, method, path)
        return found.delay if found else 0.0

    def take_failure(self, method: str, path: str) -> Response | None:
        """The injected failure answering this request, if one matches."""
        found = self._take(self._failures, method, path)
        return found.respond() if found and found.respond else None

    def _take(self, queue: list[_Injection], method: str, path: str) -> _Injection | None:
        with self._lock:
            for injection in queue:
                if injection.matches(method, path):
                    injection.remaining -= 1
                    return injection
            return None
