"""The dashboard in a real browser (Playwright driving Debian's ``chromium``), offline.

* Logs in with a service token, retries a failed job, cancels a scheduled one.
* With 100,000 runs in the job history: filters the finished list with the form, opens a
  finished job, the metrics page and a repository's view.
* Runs ``cocov-jobs demo`` and photographs what a new user sees afterwards: the README's
  headline screenshot (the overview) and the history pages on the demo's real runs.

Screenshots of every page go into a temporary directory, or into :data:`SCREENSHOTS_DIR_ENV`'s
directory when set (``make screenshots`` refreshes ``docs/screenshots/``, which the README
shows). The servers listen on loopback and Chromium runs with background networking off, so no
network is needed. Skipped when Chromium is not installed, unless screenshots are asked for.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from cocov_jobs.engine import history
from cocov_jobs.services import Services
from cocov_jobs.testing.history_data import JOBS, fill_history
from cocov_jobs.testing.processes import CLI, cli_env
from cocov_jobs.testing.servers import serve
from cocov_jobs.web.app import create_app
from tests.support.admin import enqueue, failed_job
from tests.support.helpers import job_log, jobs, service_token

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
async def browser() -> AsyncIterator[object]:
    async with playwright_api.async_playwright() as pw:
        launched = await pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield launched
        await launched.close()


async def new_page(browser: object, base_url: str) -> playwright_api.Page:
    context = await browser.new_context(  # type: ignore[attr-defined]
        base_url=base_url, viewport={"width": 1280, "height": 800}
    )
    return await context.new_page()  # type: ignore[no-any-return]


@pytest.fixture
async def page(browser: object, base_url: str) -> playwright_api.Page:
    return await new_page(browser, base_url)


async def log_in(p: playwright_api.Page, token: str) -> None:
    await p.goto("/dashboard/login")
    await p.fill("input[name=token]", token)
    await p.click("text=Log in")
    await playwright_api.expect(p.locator("h1")).to_have_text("Overview")


async def test_login_retry_cancel_and_screenshots(
    services: Services, page: playwright_api.Page, screenshots: Path
) -> None:
    p = page
    token = await service_token(services)
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

    await p.goto(f"/dashboard/jobs/{failed}")
    await playwright_api.expect(p.locator("pre").first).to_contain_text("Traceback")

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


async def test_history_pages_at_100000_runs(services: Services, page: playwright_api.Page) -> None:
    p = page
    async with services.raw_connection() as conn:
        await fill_history(conn, 100_000)
    token = await service_token(services)
    await log_in(p, token)

    # The finished list, filtered with its form: one job's failed runs, newest first.
    await p.click("header >> text=Finished")
    await playwright_api.expect(p.locator("h1")).to_have_text("Finished runs")
    await p.select_option("select[name=job]", "process_commit")
    await p.select_option("select[name=outcome]", "failed")
    await p.click("text=Filter")
    await p.wait_for_url(re.compile(r"job=process_commit&outcome=failed"))
    rows = p.locator("table tr:has(td.time)")
    await playwright_api.expect(rows).to_have_count(history.PAGE_SIZE)
    assert set(await p.locator("table tr td:nth-child(2)").all_inner_texts()) == {"process_commit"}
    assert set(await p.locator("td.outcome-failed").all_inner_texts()) == {"failed"}
    await playwright_api.expect(p.get_by_text("Older →")).to_be_visible()
    first_job = await rows.first.locator("td a").first.inner_text()

    # A finished job's page: name, arguments, who enqueued it, its run.
    await rows.first.locator("td a").first.click()
    await playwright_api.expect(p.locator("h1")).to_have_text(f"Job {first_job} · process_commit")
    await playwright_api.expect(p.locator("table").first).to_contain_text("commit_id")
    await playwright_api.expect(p.locator("table").first).to_contain_text("finished: failed")
    await playwright_api.expect(p.locator("td.outcome-failed")).to_have_count(1)

    # Metrics: every job, three windows, a chart each.
    await p.click("header >> text=Metrics")
    await playwright_api.expect(p.locator("table.metrics svg")).to_have_count(len(JOBS))
    weeks = p.locator("table.metrics tr", has_text="week")
    await playwright_api.expect(weeks).to_have_count(len(JOBS))
    await playwright_api.expect(p.locator("tr#process_commit")).to_contain_text("hour")

    # A repository's view, reached from the list by name.
    await p.click("header >> text=Repositories")
    await p.fill("input[name=q]", "repo-1")
    await p.click("text=Search")
    await p.click("a:text-is('repo-1')")
    await playwright_api.expect(p.locator("h1")).to_contain_text("Repository repo-1")
    commits = p.locator("h2:has-text('Newest commits') + table tr:has(td)")
    await playwright_api.expect(commits).to_have_count(20)
    runs = p.locator("h2:has-text('Recent runs') + table tr:has(td.time)")
    await playwright_api.expect(runs).to_have_count(history.PAGE_SIZE)

    # Unknown pages keep the layout and lead back.
    await p.goto("/dashboard/nowhere")
    await playwright_api.expect(p.get_by_role("alert")).to_contain_text(
        "no page /dashboard/nowhere"
    )
    await p.click("text=Back to the overview")
    await playwright_api.expect(p.locator("h1")).to_have_text("Overview")


#: Seconds the demo may take to reach its dashboard (embedded stores included).
DEMO_TIMEOUT = 120


async def _dashboard_line(demo: asyncio.subprocess.Process) -> str:
    """The demo's "Dashboard: URL (token: …)" line, read as it prints it."""
    assert demo.stdout is not None
    async with asyncio.timeout(DEMO_TIMEOUT):
        while True:
            line = (await demo.stdout.readline()).decode()
            if not line:
                raise AssertionError("the demo ended before serving its dashboard")
            if line.startswith("Dashboard: "):
                return line


async def test_screenshots_after_the_demo(
    browser: object, tmp_path: Path, screenshots: Path
) -> None:
    """What a new user sees after ``cocov-jobs demo``: the README's headline screenshot and the
    history pages, on the demo's real runs."""
    demo = await asyncio.create_subprocess_exec(
        *CLI,
        "demo",
        "--port",
        "0",
        "--data-dir",
        str(tmp_path / "demo"),
        env=cli_env(COCOV_LOG_FORMAT="json", COLUMNS="200", PYTHONUNBUFFERED="1"),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        found = re.search(
            r"(http://\S+)/dashboard\s+\(token: (cos_[0-9a-f]{64})\)", await _dashboard_line(demo)
        )
        assert found, "no dashboard line"
        p = await new_page(browser, found.group(1))
        await log_in(p, found.group(2))
        cards = p.locator(".card")
        await playwright_api.expect(cards.filter(has_text="workers alive")).to_contain_text("1")
        await playwright_api.expect(cards.filter(has_text="failed").first).to_contain_text("0")
        await playwright_api.expect(
            p.locator(".chart rect[height]:not([height='0.0'])").first
        ).to_be_visible()
        await p.screenshot(path=screenshots / "overview.png", full_page=True)

        await p.goto("/dashboard/finished")
        await playwright_api.expect(p.locator("td.outcome-succeeded").first).to_be_visible()
        assert await p.locator("td.outcome-failed").count() == 0
        await p.screenshot(path=screenshots / "finished.png", full_page=True)
        await p.goto("/dashboard/metrics")
        await playwright_api.expect(p.locator("#process_commit")).to_be_visible()
        await p.screenshot(path=screenshots / "metrics.png", full_page=True)
        await p.goto("/dashboard/repositories/calculator")
        await playwright_api.expect(p.locator("h1")).to_contain_text("calculator")
        await playwright_api.expect(p.locator("td", has_text="completed").first).to_be_visible()
        await p.screenshot(path=screenshots / "repository.png", full_page=True)
        await p.goto("/dashboard/finished?job=process_commit")
        await p.locator("table tr:has(td.time) td a").first.click()
        await playwright_api.expect(p.locator("h1")).to_contain_text("process_commit")
        await p.screenshot(path=screenshots / "job.png", full_page=True)
    finally:
        demo.send_signal(signal.SIGINT)
        async with asyncio.timeout(60):
            await demo.wait()
