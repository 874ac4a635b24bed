"""The uvicorn server every command (and the test doubles) runs an app with, configured in one
place (:func:`server_config`): trusted proxies, connection limit, header deadline.

* ``X-Forwarded-*`` headers are believed only from ``COCOV_WEB_TRUSTED_PROXIES``: through them
  the request's scheme becomes ``https`` and the dashboard marks its cookies ``Secure``.
* A request's headers must arrive whole within ``COCOV_WEB_HEADER_TIMEOUT`` seconds of the
  connection opening or of the previous answer on it, else the connection is closed
  (:class:`HeaderDeadlineProtocol`): uvicorn alone waits forever for a client that sends
  nothing or trickles its headers. Bodies have their own deadline (:mod:`~cocov_jobs.web.body`).
* At most :data:`MAX_CONNECTIONS` connections are served at once; requests beyond get 503.
* HTTP is parsed by httptools (uvicorn's C parser) rather than h11 (pure Python). Accepted
  sockets have ``TCP_NODELAY`` set (asyncio's and uvloop's transports both set it), so a small
  answer is not held back by Nagle's algorithm.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Generator

import uvicorn
from starlette.applications import Starlette
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

#: Connections (or running requests) served at once; requests beyond are answered 503.
MAX_CONNECTIONS = 1000


class HeaderDeadlineProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, closing connections whose request headers come too late.

    The deadline is armed when the connection opens and after each answer; when it expires
    while every request whose headers arrived has been answered (none is running or queued
    behind another: pipelining), the connection is closed.
    """

    header_timeout: float = 10.0
    _deadline: asyncio.TimerHandle | None = None
    #: Requests whose headers arrived whole, and requests answered, on this connection.
    _headers_received = 0
    _answered = 0

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def on_headers_complete(self) -> None:
        self._headers_received += 1
        super().on_headers_complete()

    def on_response_complete(self) -> None:
        self._answered += 1
        super().on_response_complete()
        self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _arm(self) -> None:
        self._disarm()
        if not self.transport.is_closing():
            self._deadline = self.loop.call_later(self.header_timeout, self._expire)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _expire(self) -> None:
        """Close the connection unless a request's headers arrived meanwhile."""
        self._deadline = None
        if self._headers_received == self._answered and not self.transport.is_closing():
            self.transport.close()


def server_config(app: Starlette, *, host: str, port: int) -> uvicorn.Config:
    """The uvicorn configuration serving ``app`` (a ``create_app`` or ``create_probe_app``)."""
    settings = app.state.services.settings
    protocol = type(
        "HeaderDeadline",
        (HeaderDeadlineProtocol,),
        {"header_timeout": settings.web_header_timeout},
    )
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        http=protocol,
        log_config=None,
        lifespan="off",
        proxy_headers=True,
        forwarded_allow_ips=settings.web_trusted_proxies,
        limit_concurrency=MAX_CONNECTIONS,
    )


class Server(uvicorn.Server):
    """uvicorn without its own signal handlers: the worker (or the test runner) owns
    SIGTERM/SIGINT."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


def make_server(app: Starlette, host: str, port: int) -> Server:
    return Server(server_config(app, host=host, port=port))
