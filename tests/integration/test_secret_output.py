"""No secret in any output (issue 13, item 1): a failing job and a 500, in both log formats.

Every secret setting holds a planted value (:mod:`cocov_jobs.testing.planted`); the failing
code puts them, and tokens shaped like GitHub's and Cocov's, in its exception message and in
its local variables. Then everything written — log lines and the errors stored with the job —
is searched. ``tests/acceptance/test_startup_errors.py`` does the same for start-up failures.
"""

from __future__ import annotations

import httpx
import pytest
from sqlalchemy import text
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from tests.support.helpers import drain
from tests.support.helpers import jobs as queued_jobs
from tests.support.settings import make_settings

from cocov_jobs import jobs, logs
from cocov_jobs.config import Settings
from cocov_jobs.engine import queue
from cocov_jobs.engine.context import JobContext
from cocov_jobs.engine.registry import Registry, job
from cocov_jobs.services import Services
from cocov_jobs.testing.planted import PEM, TOKENS, leaks, planted_fields
from cocov_jobs.testing.servers import serve
from cocov_jobs.web.app import create_app

FORMATS = ["console", "json"]


def confession(settings: Settings) -> str:
    """An error message holding every secret a careless error could hold."""
    return (
        f"refused {TOKENS['installation token']} / {TOKENS['user OAuth token']}"
        f" / {TOKENS['service token']} / {TOKENS['repository token']}"
        f" / {TOKENS['personal access token']}; key {settings.cryptographic_key},"
        f" webhook {settings.github_webhook_secret_key}, base {settings.secret_key_base},"
        f" app {settings.github_app_private_key}, pem {PEM}"
    )


@job()
async def _test_leaky(ctx: JobContext, attempt: int) -> None:
    installation_token = TOKENS["installation token"]  # a local the traceback could show
    crypto_key = ctx.settings.cryptographic_key
    raise RuntimeError(confession(ctx.settings) + installation_token + str(crypto_key))


@pytest.fixture
def settings() -> Settings:
    return make_settings(**planted_fields(), max_attempts=2)


@pytest.fixture
def registry() -> Registry:
    return jobs.registry().including(_test_leaky)


def written(capsys: pytest.CaptureFixture[str]) -> str:
    captured = capsys.readouterr()
    return captured.out + captured.err


@pytest.mark.parametrize("fmt", FORMATS)
async def test_a_failing_job_writes_no_secret_to_logs_or_its_stored_errors(
    services: Services, fmt: str, capsys: pytest.CaptureFixture[str], restore_logging: None
) -> None:
    logs.configure(fmt, "DEBUG", services.settings.secret_values())
    async with services.sessions.begin() as session:
        await queue.enqueue(session, "_test_leaky", attempt=1)
    await drain(services)  # both attempts
    output = written(capsys)
    async with services.engine.connect() as conn:
        stored = "\n".join(
            row.traceback
            for row in await conn.execute(
                text("SELECT traceback::text FROM pgqueuer_log WHERE traceback IS NOT NULL")
            )
        )
    assert [job["status"] for job in await queued_jobs(services)] == ["failed"]  # both runs
    assert "Traceback" in stored and "Traceback" in output
    assert leaks(output) == []
    assert leaks(stored) == []


@pytest.mark.parametrize("fmt", FORMATS)
async def test_a_500_writes_no_secret(
    services: Services, fmt: str, capsys: pytest.CaptureFixture[str], restore_logging: None
) -> None:
    logs.configure(fmt, "DEBUG", services.settings.secret_values())
    app = create_app(services)

    async def explode(request: Request) -> Response:
        service_token = TOKENS["service token"]  # a local the traceback could show
        raise RuntimeError(confession(services.settings) + service_token)

    app.router.routes.append(Route("/explode", explode))
    async with serve(app) as url, httpx.AsyncClient(base_url=url) as client:
        answer = await client.get("/explode")
    assert answer.status_code == 500
    output = written(capsys)
    assert "RuntimeError" in output
    assert leaks(output) == []
