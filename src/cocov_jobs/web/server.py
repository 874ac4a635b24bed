"""The uvicorn server every command (and the test doubles) runs an app with, configured in one
place (:func:`server_config`).

``X-Forwarded-*`` headers are believed only from ``COCOV_WEB_TRUSTED_PROXIES``: through them the
request's scheme becomes ``https`` and the dashboard marks its cookies ``Secure``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Generator
import uvicorn
from starlette.applications import Starlette


class Server(uvicorn.Server):
    """uvicorn without its own signal handlers: the worker (or the test runner) owns
    SIGTERM/SIGINT."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


def server_config(app: Starlette, *, host: str, port: int) -> uvicorn.Config:
    """The uvicorn configuration serving ``app`` (a ``create_app`` or ``create_probe_app``)."""
    settings = app.state.services.settings
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        log_config=None,
        lifespan="off",
        proxy_headers=True,
        forwarded_allow_ips=settings.web_trusted_proxies,
    )


def make_server(app: Starlette, host: str, port: int) -> Server:
    return Server(server_config(app, host=host, port=port))
