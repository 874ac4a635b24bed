"""The dashboard over HTTP: authentication, CSRF, every page, every action."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator

import httpx
import pytest
from itsdangerous import URLSafeTimedSerializer
from sqlalchemy import text
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route
from tests.support.admin import enqueue, failed_job
from tests.support.helpers import drain, insert, jobs, service_token
from tests.support.web import services_at

from cocov_jobs.config import Settings
from cocov_jobs.engine import admin, queue
from cocov_jobs.services import Services
from cocov_jobs.testing.servers import serve
from cocov_jobs.web import sessions
from cocov_jobs.web.app import create_app
from cocov_jobs.web.dashboard import CSRF_COOKIE
from cocov_jobs.web.sessions import SESSION_COOKIE, open_session

PAGES = (
    "/dashboard",
    *(f"/dashboard/state/{s}" for s in admin.STATES),
    "/dashboard/finished",
    "/dashboard/metrics",
    "/dashboard/repositories",
    "/dashboard/schedules",
    "/dashboard/workers",
)


@pytest.fixture
async def token(services: Services) -> str:
    return await service_token(services)


async def enqueue_as(services: Services, name: str, **args: object) -> int:
    """Enqueue ``name`` as if the service token with id 9 asked."""
    async with services.sessions.begin() as session, queue.enqueued_by("token:9"):
        job_id = await queue.enqueue(session, name, **args)
    assert job_id is not None
    return job_id


@pytest.fixture
async def client(services: Services) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=create_app(services))
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as opened:
        yield opened


def csrf(page: httpx.Response) -> str:
    found = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
    assert found, page.text
    return found.group(1)


async def login(client: httpx.AsyncClient, token: str) -> str:
    form = await client.get("/dashboard/login")
    answer = await client.post("/dashboard/login", data={"token": token, "csrf_token": csrf(form)})
    assert answer.status_code == 303 and SESSION_COOKIE in answer.cookies
    return csrf(await client.get("/dashboard"))


async def test_pages_need_a_login_or_a_bearer_token(client: httpx.AsyncClient, token: str) -> None:
    for path in PAGES:
        assert (await client.get(path)).headers["location"] == "/dashboard/login"
    bad = await client.get("/dashboard", headers={"Authorization": "bearer cos_nope"})
    assert bad.status_code == 401
    good = await client.get("/dashboard", headers={"Authorization": f"bearer {token}"})
    assert good.status_code == 200 and "Overview" in good.text


async def test_login_rejects_unknown_tokens_and_forms_without_csrf(
    client: httpx.AsyncClient, token: str
) -> None:
    form = await client.get("/dashboard/login")
    wrong = await client.post(
        "/dashboard/login", data={"token": "cos_wrong", "csrf_token": csrf(form)}
    )
    assert wrong.status_code == 401 and "Unknown service token" in wrong.text
    forged = await client.post("/dashboard/login", data={"token": token, "csrf_token": "x"})
    assert forged.status_code == 403
    assert SESSION_COOKIE not in client.cookies


async def test_every_page_renders_with_jobs(
    services: Services, client: httpx.AsyncClient, token: str
) -> None:
    failed = await failed_job(services)
    await enqueue(services, delay=3600, user_id=2)
    await login(client, token)
    for path in PAGES:
        answer = await client.get(path)
        assert answer.status_code == 200, path
    overview = await client.get("/dashboard")
    assert "<svg" in overview.text and "update_commits_author" in overview.text
    detail = await client.get(f"/dashboard/jobs/{failed}")
    assert "JobArgumentsError" in detail.text and "Traceback" in detail.text
    missing = await client.get("/dashboard/jobs/999999")
    assert missing.status_code == 404 and "No job 999999" in missing.text


async def test_a_finished_job_shows_everything_and_the_finished_list_filters(
    services: Services, client: httpx.AsyncClient, token: str
) -> None:
    repository = await insert(
        services, "repositories", name="calc", default_branch="main", token="t", github_id=1
    )
    done = await enqueue_as(services, "compute_repository_commits_size", repository_id=repository)
    failed = await failed_job(services)
    await drain(services, horizon=0)
    await login(client, token)
    detail = await client.get(f"/dashboard/jobs/{done}")
    assert "compute_repository_commits_size" in detail.text
    assert f'<code>{{"repository_id": {repository}}}</code>' in detail.text
    assert "token:9" in detail.text and "finished: succeeded" in detail.text
    assert f'href="/dashboard/repositories/{repository}"' in detail.text
    assert re.search(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC", detail.text)
    listed = await client.get("/dashboard/finished", params={"outcome": "failed"})
    assert f'href="/dashboard/jobs/{failed}"' in listed.text
    assert f'href="/dashboard/jobs/{done}"' not in listed.text
    by_argument = await client.get("/dashboard/finished", params={"argument": str(repository)})
    assert f'href="/dashboard/jobs/{done}"' in by_argument.text
    assert f'href="/dashboard/jobs/{failed}"' not in by_argument.text
    for bad in ({"outcome": "exploded"}, {"job": "make-coffee"}, {"since": "yesterday"}):
        refused = await client.get("/dashboard/finished", params=bad)
        assert refused.status_code == 400 and 'role="alert"' in refused.text
    page = await client.get("/dashboard/repositories/calc")
    assert page.status_code == 200 and f'href="/dashboard/jobs/{done}"' in page.text
    assert (await client.get(f"/dashboard/repositories/{repository}")).text == page.text
    metrics = await client.get("/dashboard/metrics")
    assert "compute_repository_commits_size" in metrics.text and "<svg" in metrics.text


async def test_unknown_pages_are_rendered_in_the_layout(
    client: httpx.AsyncClient, token: str
) -> None:
    assert (await client.get("/dashboard/nowhere")).headers["location"] == "/dashboard/login"
    await login(client, token)
    for path in ("/dashboard/nowhere", "/dashboard/state/nowhere", "/dashboard/repositories/nope"):
        answer = await client.get(path)
        assert answer.status_code == 404, path
        assert "<header>" in answer.text and 'href="/dashboard">← Back' in answer.text


async def test_actions_retry_cancel_delete_and_csrf(
    services: Services, client: httpx.AsyncClient, token: str
) -> None:
    failed = await failed_job(services)
    later = await enqueue(services, delay=3600, user_id=2)
    token_ = await login(client, token)
    refused = await client.post(f"/dashboard/jobs/{later}/cancel", data={"csrf_token": "no"})
    assert refused.status_code == 403
    answer = await client.post(
        f"/dashboard/jobs/{later}/cancel",
        data={"csrf_token": token_, "next": "/dashboard/state/scheduled"},
    )
    assert answer.status_code == 303
    assert answer.headers["location"].startswith("/dashboard/state/scheduled?notice=")
    await client.post(f"/dashboard/jobs/{failed}/retry", data={"csrf_token": token_})
    assert [(j["id"], j["status"]) for j in await jobs(services)] == [(failed, "queued")]
    await client.post(f"/dashboard/jobs/{failed}/delete", data={"csrf_token": token_})
    assert await jobs(services) == []
    assert client.cookies.get(CSRF_COOKIE) != token_  # forms carry the session's own token


async def test_pages_forbid_framing(client: httpx.AsyncClient, token: str) -> None:
    """Clickjacking: no page (login form, pages, redirects) may be shown in a frame."""
    answers = [await client.get("/dashboard/login"), await client.get("/dashboard")]
    await login(client, token)
    answers += [await client.get(path) for path in PAGES]
    for answer in answers:
        assert answer.headers["x-frame-options"] == "DENY", answer.url
        assert "frame-ancestors 'none'" in answer.headers["content-security-policy"]


def _cookie_flags(answer: httpx.Response) -> dict[str, bool]:
    """Whether each cookie the answer sets is marked ``Secure``."""
    return {
        header.split("=", 1)[0]: "; secure" in header.lower()
        for header in answer.headers.get_list("set-cookie")
    }


async def _login_cookies(url: str, token: str, **headers: str) -> dict[str, bool]:
    async with httpx.AsyncClient(base_url=url, headers=headers) as browser:
        form = await browser.get("/dashboard/login")
        # httpx keeps Secure cookies from plain-HTTP URLs to itself: send it as a browser
        # behind the HTTPS proxy would.
        answer = await browser.post(
            "/dashboard/login",
            data={"token": token, "csrf_token": csrf(form)},
            headers={"Cookie": f"{CSRF_COOKIE}={form.cookies[CSRF_COOKIE]}"},
        )
    assert answer.status_code == 303
    return _cookie_flags(form) | _cookie_flags(answer)


async def test_cookies_are_secure_behind_an_https_proxy(
    services: Services, token: str, redis_url: str
) -> None:
    """``X-Forwarded-Proto: https`` from a trusted proxy (loopback by default) marks cookies
    ``Secure``; the same header from an untrusted address does not."""
    async with serve(create_app(services)) as url:
        assert await _login_cookies(url, token, **{"X-Forwarded-Proto": "https"}) == {
            SESSION_COOKIE: True,
            CSRF_COOKIE: True,
        }
        assert set((await _login_cookies(url, token)).values()) == {False}
    untrusted = services.settings.model_copy(update={"web_trusted_proxies": "10.9.9.9"})
    async with (
        services_at(
            untrusted, database_url=services.database_url, redis_url=redis_url
        ) as elsewhere,
        serve(create_app(elsewhere)) as url,
    ):
        forwarded = await _login_cookies(url, token, **{"X-Forwarded-Proto": "https"})
    assert set(forwarded.values()) == {False}


async def test_secure_cookies_setting_marks_cookies_secure_over_http(
    services: Services, token: str, redis_url: str
) -> None:
    secure = services.settings.model_copy(update={"web_secure_cookies": True})
    async with (
        services_at(secure, database_url=services.database_url, redis_url=redis_url) as opened,
        serve(create_app(opened)) as url,
    ):
        assert set((await _login_cookies(url, token)).values()) == {True}


async def test_an_oversized_login_form_is_refused_unread(client: httpx.AsyncClient) -> None:
    """The login form comes from anyone: it is read with the same bounds as webhooks."""
    form = await client.get("/dashboard/login")
    answer = await client.post(
        "/dashboard/login", data={"token": "x" * (1024 * 1024), "csrf_token": csrf(form)}
    )
    assert answer.status_code == 413
    assert SESSION_COOKIE not in client.cookies


# Sessions ------------------------------------------------------------------------------------


def browser(app: Starlette) -> httpx.AsyncClient:
    """A client of ``app`` keeping cookies like a browser (another web process: another app)."""
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test")


async def signed_in(client: httpx.AsyncClient) -> bool:
    return (await client.get("/dashboard")).status_code == 200


async def test_a_session_ends_when_its_token_is_deleted(
    services: Services, client: httpx.AsyncClient, token: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    await login(client, token)
    assert await signed_in(client)
    monkeypatch.setattr(sessions, "SUBJECT_CHECK_SECONDS", 0.0)
    async with services.sessions.begin() as session:
        await session.execute(text("DELETE FROM service_tokens"))
    assert (await client.get("/dashboard")).headers["location"] == "/dashboard/login"


async def test_logout_ends_the_session_everywhere(
    services: Services, client: httpx.AsyncClient, token: str
) -> None:
    form_token = await login(client, token)
    stolen = client.cookies[SESSION_COOKIE]
    answer = await client.post("/dashboard/logout", data={"csrf_token": form_token})
    assert answer.headers["location"] == "/dashboard/login"
    for app in (client._transport.app, create_app(services)):  # type: ignore[attr-defined]
        async with browser(app) as thief:
            thief.cookies.set(SESSION_COOKIE, stolen, path="/dashboard")
            assert not await signed_in(thief)
    async with services.engine.connect() as conn:
        assert await conn.scalar(text("SELECT count(*) FROM cocov_jobs_dashboard_sessions")) == 0


async def test_the_csrf_token_is_bound_to_its_session(
    services: Services, client: httpx.AsyncClient, token: str
) -> None:
    """A form token taken from another session is refused, even with a matching cookie."""
    theirs = await login(client, token)
    later = await enqueue(services, delay=3600, user_id=2)
    async with browser(create_app(services)) as victim:
        await login(victim, token)
        victim.cookies.set(CSRF_COOKIE, theirs, path="/dashboard")
        refused = await victim.post(f"/dashboard/jobs/{later}/cancel", data={"csrf_token": theirs})
    assert refused.status_code == 403
    assert [j["id"] for j in await jobs(services)] == [later]


async def test_sessions_are_signed_with_a_dedicated_key_kept_across_processes(
    services: Services, settings: Settings, database_url: str, redis_url: str, token: str
) -> None:
    """Without ``COCOV_SECRET_KEY_BASE`` the key is generated once and kept in the database:
    a session opened by one process works in another, and nothing derived from other settings
    (the cryptographic key) signs a valid cookie."""
    crypto_key = "k" * 32
    keyed = settings.model_copy(update={"cryptographic_key": crypto_key, "secret_key_base": None})
    async with services_at(keyed, database_url=database_url, redis_url=redis_url) as one:
        async with browser(create_app(one)) as first:
            await login(first, token)
            cookie = first.cookies[SESSION_COOKIE]
        async with browser(create_app(one)) as second:
            second.cookies.set(SESSION_COOKIE, cookie, path="/dashboard")
            assert await signed_in(second)
            for forged_with in (crypto_key, ""):
                forged = URLSafeTimedSerializer(forged_with, salt="cocov-dashboard").dumps(
                    {"token_id": 1}
                )
                second.cookies.set(SESSION_COOKIE, forged, path="/dashboard")
                assert not await signed_in(second)


async def test_a_user_session_lasts_while_the_user_is_an_admin(
    services: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Sessions opened for a Cocov user (not a service token) end when the user stops being
    an admin."""
    admin_id = await insert(
        services, "users", login="boss", github_id=99, github_token="x", admin=True
    )
    app = create_app(services)

    async def open_for_admin(request: Request) -> Response:
        response = RedirectResponse("/dashboard", status_code=303)
        await open_session(request, response, user_id=admin_id)
        return response

    app.router.routes.append(Route("/dashboard/test-open", open_for_admin))
    monkeypatch.setattr(sessions, "SUBJECT_CHECK_SECONDS", 0.0)
    async with browser(app) as boss:
        await boss.get("/dashboard/test-open")
        assert await signed_in(boss)
        async with services.sessions.begin() as session:
            await session.execute(text("UPDATE users SET admin = false"))
        assert not await signed_in(boss)


@pytest.mark.parametrize(
    "path",
    [
        "/dashboard/state/queued?before=abc",
        "/dashboard/state/failed?before=99999999999999999999999",
        "/dashboard/state/queued?job=make-coffee",
        "/dashboard/jobs/99999999999999999999999",
    ],
)
async def test_bad_query_values_are_4xx(client: httpx.AsyncClient, token: str, path: str) -> None:
    await login(client, token)
    answer = await client.get(path)
    assert 400 <= answer.status_code < 500, (answer.status_code, answer.text[:300])
