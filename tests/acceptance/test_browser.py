"""The dashboard in a real browser (Playwright driving Debian's ``chromium``), offline.

Logs in with a service token, retries a failed job, cancels a scheduled one, and takes a
screenshot of every page: into a temporary directory, or into :data:`SCREENSHOTS_DIR_ENV`'s
directory when set (``make screenshots`` refreshes ``docs/screenshots/``, which the README
shows). The server listens on loopback and Chromium runs with background networking off, so no
network is needed. Skipped when Chromium is not installed, unless screenshots are asked for.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from cocov_jobs.crypto import new_service_token, service_token_digest
from cocov_jobs.services import Services
from cocov_jobs.testing.servers import serve
from cocov_jobs.web.app import create_app
from tests.support.admin import enqueue, failed_job
from tests.support.helpers import insert, job_log, jobs

playwright_api = pytest.importorskip("playwright.async_api")

#: Debian's Chromium (``apt-get install chromium``).
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
]
#: Where to write the screenshots (``make screenshots`` sets it); a temporary directory if unset.
SCREENSHOTS_DIR_ENV = "COCOV_TEST_SCREENSHOTS_DIR"

pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists() and not os.environ.get(SCREENSHOTS_DIR_ENV),
    reason="needs Debian's chromium",
)


@pytest.fixture
def screenshots(tmp_path: Path) -> Path:
    """The directory the screenshots go to."""
    path = Path(os.environ.get(SCREENSHOTS_DIR_ENV) or tmp_path / "screenshots")
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture
async def base_url(services: Services) -> AsyncIterator[str]:
    """The web app served on loopback for the test."""
    async with serve(create_app(services)) as url:
        yield url


@pytest.fixture
async def page(base_url: str) -> AsyncIterator[object]:
    async with playwright_api.async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        context = await browser.new_context(
            base_url=base_url, viewport={"width": 1280, "height": 800}
        )
        yield await context.new_page()
        await browser.close()


async def test_login_retry_cancel_and_screenshots(
    services: Services, page: object, screenshots: Path
) -> None:
    p: playwright_api.Page = page  # type: ignore[assignment]
    owner = await insert(services, "users", login="ops", github_id=9, github_token="x")
    token = new_service_token()
    await insert(
        services,
        "service_tokens",
        token_hash=service_token_digest(token),
        description="ops",
        owner_id=owner,
    )
    failed = await failed_job(services)
    scheduled = await enqueue(services, delay=3600, user_id=2)
    await enqueue(services, user_id=3)

    await p.goto("/dashboard")
    assert p.url.endswith("/dashboard/login")
    await p.screenshot(path=screenshots / "login.png")
    await p.fill("input[name=token]", "cos_wrong")
    await p.click("text=Log in")
    await playwright_api.expect(p.get_by_role("alert")).to_contain_text("Unknown service token")
    await p.fill("input[name=token]", token)
    await p.click("text=Log in")
    await playwright_api.expect(p.locator("h1")).to_have_text("Overview")
    await p.screenshot(path=screenshots / "overview.png", full_page=True)

    await p.goto(f"/dashboard/jobs/{failed}")
    await playwright_api.expect(p.locator("pre").first).to_contain_text("Traceback")
    await p.screenshot(path=screenshots / "job.png", full_page=True)

    for name in ("queued", "running", "retrying", "schedules", "workers"):
        await p.goto(
            f"/dashboard/{'state/' if name in ('queued', 'running', 'retrying') else ''}{name}"
        )
        await p.screenshot(path=screenshots / f"{name}.png", full_page=True)

    await p.goto("/dashboard/state/failed")
    await p.screenshot(path=screenshots / "failed.png", full_page=True)
    await p.locator("tr", has_text=str(failed)).get_by_role("button", name="Retry now").click()
    await playwright_api.expect(p.get_by_role("status")).to_contain_text(f"job {failed} retried")
    assert {j["id"]: j["status"] for j in await jobs(services)}[failed] == "queued"

    await p.goto("/dashboard/state/scheduled")
    await p.screenshot(path=screenshots / "scheduled.png", full_page=True)
    await p.locator("tr", has_text=f"{scheduled}").get_by_role("button", name="Cancel").click()
    await playwright_api.expect(p.get_by_role("status")).to_contain_text(
        f"job {scheduled} canceled"
    )
    assert (await job_log(services, scheduled))[-1]["status"] == "canceled"
