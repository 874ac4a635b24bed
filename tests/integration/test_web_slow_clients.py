"""Slow and stalled clients over real sockets: header and body deadlines, and at most
:data:`~cocov_jobs.web.body.MAX_UNAUTHENTICATED_BODIES` unauthenticated bodies read at once."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from collections.abc import AsyncIterator
from urllib.parse import urlsplit

import httpx
import pytest
from starlette.applications import Starlette
from tests.support.web import payload, services_at, webhook_settings

from cocov_jobs.config import Settings
from cocov_jobs.services import Services
from cocov_jobs.testing.processes import WAIT, until
from cocov_jobs.testing.servers import serve
from cocov_jobs.testing.webhooks import webhook_headers
from cocov_jobs.web.app import create_app
from cocov_jobs.web.body import MAX_UNAUTHENTICATED_BODIES

#: Seconds a request may take to send its headers, and its body, in these tests.
HEADER_TIMEOUT = 0.5
BODY_TIMEOUT = 1.0


@pytest.fixture
def settings() -> Settings:
    return webhook_settings(web_header_timeout=HEADER_TIMEOUT, web_body_timeout=BODY_TIMEOUT)


Connection = tuple[asyncio.StreamReader, asyncio.StreamWriter]


@contextlib.asynccontextmanager
async def connection(url: str) -> AsyncIterator[Connection]:
    parts = urlsplit(url)
    reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
    try:
        yield reader, writer
    finally:
        writer.close()


def stalled_webhook_head(declared: int = 10_000) -> bytes:
    """Headers of a signed-looking delivery whose body will never come whole."""
    head = ["POST /v1/github/events HTTP/1.1", "Host: test", f"Content-Length: {declared}"]
    head += [f"{k}: {v}" for k, v in webhook_headers("push", b"").items()]
    return ("\r\n".join(head) + "\r\n\r\n").encode()


async def test_headers_sent_too_slowly_close_the_connection(services: Services) -> None:
    async with serve(create_app(services)) as url:
        for first_bytes in (b"", b"POST /v1/github/events HTTP/1.1\r\nHost: te"):
            async with connection(url) as (reader, writer):
                writer.write(first_bytes)
                started = time.monotonic()
                async with asyncio.timeout(WAIT):
                    assert await reader.read() == b""  # closed by the server, no answer
                assert HEADER_TIMEOUT * 0.8 <= time.monotonic() - started < HEADER_TIMEOUT + 5


async def test_body_sent_too_slowly_is_408_and_frees_its_slot(services: Services) -> None:
    app = create_app(services)
    async with serve(app) as url, connection(url) as (reader, writer):
        writer.write(stalled_webhook_head() + b'{"ref": ')
        started = time.monotonic()
        async with asyncio.timeout(WAIT):
            status = await reader.readline()
        assert status.startswith(b"HTTP/1.1 408"), status
        assert BODY_TIMEOUT * 0.8 <= time.monotonic() - started < BODY_TIMEOUT + 5
        await until(lambda: _free_slots(app, MAX_UNAUTHENTICATED_BODIES))


async def _free_slots(app: Starlette, count: int) -> bool:
    """Whether ``count`` unauthenticated-body slots of ``app`` are free."""
    return bool(app.state.unauthenticated_bodies._value == count)


async def test_stalled_senders_hold_at_most_the_limit_and_deliveries_pass_once_freed(
    services: Services, settings: Settings, database_url: str, redis_url: str
) -> None:
    """With every slot held by a stalled sender, a delivery waits its header timeout for one,
    then gets 503; once a stalled sender goes away, deliveries are accepted again."""
    patient = settings.model_copy(update={"web_body_timeout": 60.0})
    async with services_at(patient, database_url=database_url, redis_url=redis_url) as opened:
        app = create_app(opened)
        async with (
            serve(app) as url,
            contextlib.AsyncExitStack() as stack,
            httpx.AsyncClient(base_url=url, timeout=WAIT) as client,
        ):
            stalled = []
            for _ in range(MAX_UNAUTHENTICATED_BODIES + 2):
                _, writer = await stack.enter_async_context(connection(url))
                writer.write(stalled_webhook_head() + b"{")
                stalled.append(writer)
            await until(lambda: _free_slots(app, 0))
            raw = json.dumps(payload("ping")).encode()
            busy = await client.post(
                "/v1/github/events", content=raw, headers=webhook_headers("ping", raw)
            )
            assert busy.status_code == 503
            assert busy.json()["code"] == "request.busy"
            assert busy.headers["retry-after"]
            for writer in stalled:  # the stalled senders give up
                writer.close()
            await until(lambda: _free_slots(app, MAX_UNAUTHENTICATED_BODIES))
            accepted = await client.post(
                "/v1/github/events",
                content=raw,
                headers=webhook_headers("ping", raw, str(uuid.uuid4())),
            )
    assert accepted.status_code == 202, accepted.text


async def test_a_large_signed_delivery_sent_in_slow_chunks_is_accepted(
    services: Services,
) -> None:
    """Bodies above the in-memory part are spooled and verified as they arrive."""
    body = payload("ping")
    body["padding"] = "x" * (5 * 1024 * 1024)
    raw = json.dumps(body).encode()

    async def chunks() -> AsyncIterator[bytes]:
        for start in range(0, len(raw), 512 * 1024):
            yield raw[start : start + 512 * 1024]
            await asyncio.sleep(0.01)

    async with (
        serve(create_app(services)) as url,
        httpx.AsyncClient(base_url=url, timeout=WAIT) as client,
    ):
        answer = await client.post(
            "/v1/github/events", content=chunks(), headers=webhook_headers("ping", raw)
        )
    assert answer.status_code == 202, answer.text
