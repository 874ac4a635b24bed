"""The web app over real HTTP for tests: GitHub payloads and deliveries, stores that are down.

Serving, the webhook signature and ``until`` come from :mod:`cocov_jobs.testing`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit, urlunsplit

import httpx

from cocov_jobs import jobs as product_jobs
from cocov_jobs.config import Settings
from cocov_jobs.services import Services, open_services
from cocov_jobs.testing.webhooks import SECRET, webhook_headers
from tests.support.helpers import insert
from tests.support.settings import make_settings

DATA = Path(__file__).parent.parent / "data" / "github"
#: GitHub id of the repository in the fixture payloads.
FIXTURE_REPO_GITHUB_ID = 569446274


def webhook_settings(**overrides: Any) -> Settings:
    return make_settings(github_webhook_secret_key=SECRET, **overrides)


@contextlib.asynccontextmanager
async def services_at(
    settings: Settings, *, database_url: str, redis_url: str
) -> AsyncIterator[Services]:
    async with open_services(
        settings,
        registry=product_jobs.registry(),
        database_url=database_url,
        redis_url=redis_url,
        redis_cache_url=redis_url,
    ) as opened:
        yield opened


@contextlib.contextmanager
def closed_port() -> Iterator[int]:
    """A local port bound but not listening: connections to it are refused."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]


class PostgresProxy:
    """A TCP front for the test PostgreSQL that can be cut, as when the server goes away."""

    def __init__(self, database_url: str) -> None:
        parts = urlsplit(database_url)
        host = parse_qs(parts.query).get("host", [parts.hostname or "127.0.0.1"])[0]
        port = parts.port or 5432
        self._upstream: tuple[str, int | None] = (
            (f"{host}/.s.PGSQL.{port}", None) if host.startswith("/") else (host, port)
        )
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self.port = 0
        userinfo = parts.netloc.rpartition("@")[0]
        self._url_parts = (parts.scheme, userinfo, parts.path)

    @property
    def url(self) -> str:
        scheme, userinfo, path = self._url_parts
        netloc = f"{userinfo}@127.0.0.1:{self.port}" if userinfo else f"127.0.0.1:{self.port}"
        return urlunsplit((scheme, netloc, path, "", ""))

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def cut(self) -> None:
        """Stop listening and drop every proxied connection."""
        assert self._server is not None
        self._server.close()
        for writer in list(self._writers):
            writer.close()
        await self._server.wait_closed()

    async def _open_upstream(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        host, port = self._upstream
        if port is None:
            return await asyncio.open_unix_connection(host)
        return await asyncio.open_connection(host, port)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await self._open_upstream()
        self._writers.update((writer, up_writer))
        try:
            await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer))
        finally:
            self._writers.difference_update((writer, up_writer))

    @staticmethod
    async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, OSError):
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        writer.close()


def payload(name: str) -> dict[str, Any]:
    """A GitHub payload from ``tests/data/github``."""
    data: dict[str, Any] = json.loads((DATA / f"{name}.json").read_text())
    return data


async def deliver(
    client: httpx.AsyncClient, event: str, body: dict[str, Any], delivery: str | None = None
) -> httpx.Response:
    raw = json.dumps(body).encode()
    return await client.post(
        "/v1/github/events", content=raw, headers=webhook_headers(event, raw, delivery)
    )


async def fixture_repository(services: Services, **values: Any) -> int:
    """The local row of the fixture payloads' repository (``cocov-ci/api``)."""
    row = {
        "name": "api",
        "default_branch": "master",
        "token": "crt_" + uuid.uuid4().hex,
        "github_id": FIXTURE_REPO_GITHUB_ID,
        **values,
    }
    return await insert(services, "repositories", **row)
