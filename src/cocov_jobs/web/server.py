"""The uvicorn server every command (and the test doubles) runs an app with."""

from __future__ import annotations

import contextlib
from collections.abc import Generator
from typing import Any

import uvicorn


class Server(uvicorn.Server):
    """uvicorn without its own signal handlers: the worker (or the test runner) owns
    SIGTERM/SIGINT."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


def make_server(app: Any, host: str, port: int) -> Server:
    return Server(uvicorn.Config(app, host=host, port=port, log_config=None, lifespan="off"))
