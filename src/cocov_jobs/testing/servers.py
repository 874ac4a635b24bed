"""An ASGI app served over real HTTP on 127.0.0.1, in the running event loop.

Shared by the tests and the fault scenarios; the GitHub fake runs the same server in a thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator, Callable

import httpx
import uvicorn
from starlette.applications import Starlette

from cocov_jobs.services import Services
from cocov_jobs.testing.processes import WAIT
from cocov_jobs.web.app import create_app
from cocov_jobs.web.server import Server, server_config


class ListeningServer(Server):
    """The commands' server, calling ``on_listening`` once its sockets accept connections."""

    def __init__(self, config: uvicorn.Config, on_listening: Callable[[], object]) -> None:
        super().__init__(config)
        self._on_listening = on_listening

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=sockets)
        if self.started:
            self._on_listening()


@contextlib.asynccontextmanager
async def serve(app: Starlette) -> AsyncIterator[str]:
    """Serve ``app`` as the commands do (:func:`~cocov_jobs.web.server.server_config`) on
    127.0.0.1 (ephemeral port); yield its base URL."""
    listening = asyncio.Event()
    server = ListeningServer(server_config(app, host="127.0.0.1", port=0), listening.set)
    task = asyncio.create_task(server.serve())
    waiting = asyncio.create_task(listening.wait())
    await asyncio.wait({task, waiting}, return_when=asyncio.FIRST_COMPLETED)
    if not waiting.done():
        waiting.cancel()
        raise RuntimeError(f"uvicorn did not start: {task.exception()!r}")
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task


@contextlib.asynccontextmanager
async def http_client(services: Services) -> AsyncIterator[httpx.AsyncClient]:
    """An httpx client talking to ``create_app(services)`` over real HTTP."""
    async with (
        serve(create_app(services)) as url,
        httpx.AsyncClient(base_url=url, timeout=WAIT) as client,
    ):
        yield client
