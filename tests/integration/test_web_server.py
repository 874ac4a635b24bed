"""The web app over real HTTP: the serving helpers the other ``test_web_*`` modules use, body
limits, the error envelope, and the probes (web port, worker process, stores down)."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import socket
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Generator, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit, urlunsplit

import httpx
import pytest
import uvicorn
from sqlalchemy import TextClause, text
from starlette.types import ASGIApp
from tests.acceptance.conftest import CLI, cli_env
from tests.conftest import make_settings
from tests.helpers import insert

from cocov_jobs import jobs as product_jobs
from cocov_jobs.config import Settings
from cocov_jobs.services import Services, open_services
from cocov_jobs.web.app import create_app
from cocov_jobs.web.body import MIB
from cocov_jobs.web.webhooks import MAX_WEBHOOK_BYTES

DATA = Path(__file__).parent.parent / "data" / "github"
#: Webhook secret of the test settings.
SECRET = "s3cr3t-webhook-key"
#: Upper bound for waiting on a condition another process or connection must reach.
WAIT = 60.0
#: GitHub id of the repository in the fixture payloads.
FIXTURE_REPO_GITHUB_ID = 569446274


def webhook_settings(**overrides: Any) -> Settings:
    return make_settings(github_webhook_secret_key=SECRET, **overrides)


# Serving ---------------------------------------------------------------------------------------


class _Server(uvicorn.Server):
    """uvicorn without signal handlers (the test runner owns them), announcing when it listens."""

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self.listening = asyncio.Event()

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        self.listening.set()


@contextlib.asynccontextmanager
async def serve(app: ASGIApp) -> AsyncIterator[str]:
    """Serve ``app`` with uvicorn on 127.0.0.1 (ephemeral port); yield its base URL."""
    server = _Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_config=None, lifespan="off"))
    task = asyncio.create_task(server.serve())
    listening = asyncio.create_task(server.listening.wait())
    await asyncio.wait({task, listening}, return_when=asyncio.FIRST_COMPLETED)
    if not listening.done():
        listening.cancel()
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


async def until(condition: Callable[[], Awaitable[bool]]) -> None:
    """Poll ``condition`` (state in another connection or process) for at most :data:`WAIT`."""
    async with asyncio.timeout(WAIT):
        while not await condition():  # noqa: ASYNC110 - no event to await across processes
            await asyncio.sleep(0.02)


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


# Webhooks --------------------------------------------------------------------------------------


def payload(name: str) -> dict[str, Any]:
    """A GitHub payload from ``tests/data/github``."""
    data: dict[str, Any] = json.loads((DATA / f"{name}.json").read_text())
    return data


def signature(body: bytes, secret: str = SECRET) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def webhook_headers(event: str, body: bytes, delivery: str | None = None) -> dict[str, str]:
    """What GitHub sends with a delivery."""
    return {
        "Content-Type": "application/json",
        "User-Agent": "GitHub-Hookshot/1f2a3b4",
        "X-GitHub-Event": event,
        "X-GitHub-Delivery": delivery or str(uuid.uuid4()),
        "X-GitHub-Hook-ID": "401366862",
        "X-Hub-Signature-256": signature(body),
    }


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


# Tests: bodies and errors ----------------------------------------------------------------------


@pytest.fixture
def settings() -> Settings:
    return webhook_settings()


async def _raw_exchange(url: str, head: bytes, body_chunks: Iterator[bytes]) -> bytes:
    """Send ``head`` then the chunks on a raw connection; return the status line."""
    parts = urlsplit(url)
    reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
    try:
        writer.write(head)
        for chunk in body_chunks:
            writer.write(chunk)
            await writer.drain()
        async with asyncio.timeout(WAIT):
            return await reader.readline()
    finally:
        writer.close()


def _post_head(length_header: str) -> bytes:
    return (
        "POST /v1/github/events HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"
        f"X-GitHub-Event: push\r\nX-GitHub-Delivery: {uuid.uuid4()}\r\n{length_header}\r\n\r\n"
    ).encode()


async def test_declared_oversized_body_is_refused_before_reading(services: Services) -> None:
    async with serve(create_app(services)) as url:
        # Only the headers are sent: the answer cannot wait for the body.
        status = await _raw_exchange(
            url, _post_head(f"Content-Length: {MAX_WEBHOOK_BYTES + 1}"), iter(())
        )
    assert status.startswith(b"HTTP/1.1 413")


async def test_streamed_oversized_body_is_refused_while_reading(services: Services) -> None:
    chunk = b"x" * MIB
    chunks = (f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n" for _ in range(26))
    async with serve(create_app(services)) as url:
        # 26 MiB of an unterminated chunked body: the limit trips before the body ends.
        status = await _raw_exchange(url, _post_head("Transfer-Encoding: chunked"), chunks)
    assert status.startswith(b"HTTP/1.1 413")


async def test_ten_megabyte_webhook_is_accepted(services: Services) -> None:
    await fixture_repository(services)
    body = payload("push")
    body["padding"] = "x" * (10 * 1000 * 1000)
    async with http_client(services) as client:
        response = await deliver(client, "push", body)
    assert response.status_code == 202, response.text
    assert response.json()["outcome"] == "applied"


async def test_errors_use_cocovs_envelope(services: Services) -> None:
    async with http_client(services) as client:
        response = await client.post(
            "/v1/github/events",
            content=b"{}",
            headers={"X-GitHub-Event": "push", "X-GitHub-Delivery": "d"},
        )
    assert response.status_code == 401
    assert response.json() == {
        "code": "webhook.invalid_signature",
        "message": "X-Hub-Signature-256 is missing or does not match",
    }


async def test_request_while_postgresql_is_down_is_503_and_writes_nothing(
    services: Services, settings: Settings, redis_url: str
) -> None:
    await fixture_repository(services)
    proxy = PostgresProxy(services.database_url)
    await proxy.start()
    async with (
        services_at(settings, database_url=proxy.url, redis_url=redis_url) as through,
        http_client(through) as client,
    ):
        assert (await client.get("/system/probes/readiness")).status_code == 200
        await proxy.cut()
        response = await deliver(client, "push", payload("push"), delivery="down-1")
    assert response.status_code == 503
    assert response.json()["code"] == "service.unavailable"
    assert response.headers["retry-after"]
    async with services.engine.connect() as conn:
        for table in ("cocov_jobs_webhook_deliveries", "commits", "branches", "pgqueuer"):
            assert await conn.scalar(_count(table)) == 0, table
    async with http_client(services) as client:  # GitHub's redelivery, once it is back
        again = await deliver(client, "push", payload("push"), delivery="down-1")
    assert (again.status_code, again.json()["outcome"]) == (202, "applied")


def _count(table: str) -> TextClause:
    return text(f"SELECT count(*) FROM {table}")


# Tests: probes ---------------------------------------------------------------------------------


async def test_web_probes_report_ready(services: Services) -> None:
    async with http_client(services) as client:
        ready = await client.get("/system/probes/readiness")
        live = await client.get("/system/probes/liveness")
        ping = await client.get("/system/ping")
    assert ready.status_code == 200
    checks = {"postgresql": True, "schema": True, "redis": True}
    assert ready.json() == {"ok": True, "checks": checks}
    assert (live.status_code, live.json()) == (200, {"ok": True})
    assert ping.status_code == 204


async def test_readiness_is_503_when_postgresql_and_redis_are_down(settings: Settings) -> None:
    with closed_port() as pg_port, closed_port() as redis_port:
        async with (
            services_at(
                settings,
                database_url=f"postgresql://postgres@127.0.0.1:{pg_port}/cocov",
                redis_url=f"redis://127.0.0.1:{redis_port}/0",
            ) as down,
            http_client(down) as client,
        ):
            ready = await client.get("/system/probes/readiness")
            live = await client.get("/system/probes/liveness")
    assert ready.status_code == 503
    checks = ready.json()["checks"]
    assert (checks["postgresql"], checks["redis"]) == (False, False)
    assert live.status_code == 200


async def test_readiness_is_503_when_only_redis_is_down(
    services: Services, settings: Settings
) -> None:
    with closed_port() as redis_port:
        async with (
            services_at(
                settings,
                database_url=services.database_url,
                redis_url=f"redis://127.0.0.1:{redis_port}/0",
            ) as down,
            http_client(down) as client,
        ):
            ready = await client.get("/system/probes/readiness")
    assert ready.status_code == 503
    assert ready.json()["checks"]["postgresql"] is True
    assert ready.json()["checks"]["redis"] is False


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_worker_process_serves_probes_on_the_sidekiq_probe_address(
    database_url: str, redis_url: str
) -> None:
    port = _free_port()
    worker = await asyncio.create_subprocess_exec(
        *CLI,
        "worker",
        "--concurrency",
        "1",
        env=cli_env(
            COCOV_DATABASE_URL=database_url,
            COCOV_REDIS_URL=redis_url,
            COCOV_SIDEKIQ_PROBE_ADDRESS="127.0.0.1",
            COCOV_SIDEKIQ_PROBE_PORT=str(port),
            COCOV_LOG_FORMAT="json",
        ),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:

            async def ready() -> bool:
                try:
                    return (await client.get("/system/probes/readiness")).status_code == 200
                except httpx.TransportError:
                    return worker.returncode is not None  # died: stop waiting, fail below

            await until(ready)
            assert worker.returncode is None
            readiness = (await client.get("/system/probes/readiness")).json()
            assert readiness["checks"]["workers"] >= 1
            assert (await client.get("/system/probes/liveness")).status_code == 200
            assert (await client.get("/system/ping")).status_code == 204
            assert (await client.post("/v1/github/events")).status_code == 404
    finally:
        if worker.returncode is None:
            worker.terminate()
        async with asyncio.timeout(WAIT):
            await worker.wait()
    assert worker.returncode == 0
