"""Response headers every answer of the web app carries.

``X-Frame-Options: DENY`` and ``Content-Security-Policy: frame-ancestors 'none'``: no page may
be shown inside another site's frame, so the dashboard's buttons cannot be clickjacked.
``X-Content-Type-Options: nosniff``: browsers take the declared content type at its word.
"""

from __future__ import annotations

from starlette.datastructures import MutableHeaders
from starlette.types import Message, Scope

from cocov_jobs.web.asgi import ResponseStartMiddleware

#: Added to every response (unless the handler set the header itself).
HEADERS = {
    "X-Frame-Options": "DENY",
    "Content-Security-Policy": "frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
}


class SecurityHeaders(ResponseStartMiddleware):
    """ASGI middleware adding :data:`HEADERS` to every HTTP response."""

    def response_started(self, scope: Scope, message: Message) -> None:
        headers = MutableHeaders(scope=message)
        for name, value in HEADERS.items():
            headers.setdefault(name, value)
