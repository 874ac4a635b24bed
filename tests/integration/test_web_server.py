"""The web app over real HTTP: body limits, the error envelope, and the probes (web port,
worker process, stores down)."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Iterator
from urllib.parse import urlsplit

import httpx
import pytest
from sqlalchemy import TextClause, text
from tests.support.web import (
    PostgresProxy,
    closed_port,
    deliver,
    fixture_repository,
    payload,
    services_at,
    webhook_settings,
)

from cocov_jobs.config import Settings
from cocov_jobs.services import Services
from cocov_jobs.testing.processes import CLI, WAIT, cli_env, free_port, until
from cocov_jobs.testing.servers import http_client, serve
from cocov_jobs.web.app import create_app
from cocov_jobs.web.body import MIB
from cocov_jobs.web.webhooks import MAX_WEBHOOK_BYTES

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


async def test_request_postgresql_has_no_connection_for_is_503(
    settings: Settings, no_slot_database_url: str, redis_url: str
) -> None:
    async with (
        services_at(settings, database_url=no_slot_database_url, redis_url=redis_url) as full,
        http_client(full) as client,
    ):
        response = await deliver(client, "push", payload("push"), delivery="no-slot-1")
    assert response.status_code == 503
    assert response.json()["code"] == "service.unavailable"
    assert response.headers["retry-after"]


@contextlib.asynccontextmanager
async def through_proxy(
    services: Services, settings: Settings, redis_url: str
) -> AsyncIterator[tuple[PostgresProxy, httpx.AsyncClient]]:
    """A client of the app whose PostgreSQL is reached through a proxy that can be cut (the
    fixture payloads' repository registered)."""
    await fixture_repository(services)
    proxy = PostgresProxy(services.database_url)
    await proxy.start()
    async with (
        services_at(settings, database_url=proxy.url, redis_url=redis_url) as through,
        http_client(through) as client,
    ):
        yield proxy, client


async def test_after_postgresql_restarts_one_webhook_is_refused_and_the_next_applied(
    services: Services, settings: Settings, redis_url: str
) -> None:
    # A restart kills the pooled connections where SQLAlchemy does not see it (the push path
    # sends its statements straight to asyncpg): the request that meets a dead one is answered
    # 503 and must discard them, or every later request meets one too.
    answers = []
    async with through_proxy(services, settings, redis_url) as (proxy, client):
        for attempt in range(4):
            body = {**payload("push"), "restart_test_attempt": attempt}
            answers.append((await deliver(client, "push", body, f"restart-{attempt}")).status_code)
            if attempt == 0:
                await proxy.cut()
                await proxy.start()  # listening again on the same port: the server is back
    assert answers[0] == 202
    assert answers[1] in (202, 503)
    assert answers[2:] == [202, 202]


async def test_request_while_postgresql_is_down_is_503_and_writes_nothing(
    services: Services, settings: Settings, redis_url: str
) -> None:
    async with through_proxy(services, settings, redis_url) as (proxy, client):
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


async def test_worker_process_serves_probes_on_the_sidekiq_probe_address(
    database_url: str, redis_url: str
) -> None:
    port = free_port()
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
