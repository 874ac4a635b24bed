"""GitHub REST client: one place for headers, auth retries, pagination, ETags and errors.

Rules:

* Requests go to ``COCOV_GITHUB_API_URL`` (a GitHub Enterprise root such as
  ``https://ghe.example/api/v3`` works: paths are joined below it) with the headers of
  :mod:`cocov_jobs.github.http` and ``Authorization: Bearer <token>``.
* Failures raise the classes of :mod:`cocov_jobs.github.errors`; rate limits raise a
  :class:`~cocov_jobs.engine.retry.Deferred` at once: the client never sleeps.
* A 401 with the installation token drops the cached token, mints another and retries the
  request once; a user token is not retried.
* Lists are read with ``per_page=100``, following ``Link: rel="next"``. A next URL must stay on
  the API's scheme, host and port, so a token is never sent elsewhere.
* :attr:`GitHubClient.rate_limit_remaining` holds the last ``X-RateLimit-Remaining`` seen.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Mapping
from types import TracebackType
from typing import Any
from urllib.parse import quote

import httpx
import redis.asyncio as aioredis

from cocov_jobs.config import Settings
from cocov_jobs.github.auth import InstallationTokenProvider, TokenSource, UserToken
from cocov_jobs.github.errors import GitHubError, classify, transport_error
from cocov_jobs.github.http import API_HEADERS, CONNECT_TIMEOUT, DEFAULT_TIMEOUT, tls_context

log = logging.getLogger(__name__)

#: Items per page requested from list endpoints (GitHub's maximum).
PER_PAGE = 100
#: Prefix of a validator proving a whole listing: the ETag of its only, not full, page.
SINGLE_PAGE_VALIDATOR = "page1:"
#: Prefix of a validator naming a multi-page listing (a digest of its pages' ETags, never sent).
MULTI_PAGE_VALIDATOR = "pages:"

Params = Mapping[str, str | int]


class GitHubClient:
    """An :class:`httpx.AsyncClient` for GitHub's REST API, authenticated by a token source."""

    def __init__(
        self, api_url: str, auth: TokenSource, *, timeout: httpx.Timeout = DEFAULT_TIMEOUT
    ) -> None:
        self._base = httpx.URL(api_url.rstrip("/") + "/")
        self._auth = auth
        self._http = httpx.AsyncClient(
            base_url=self._base, headers=API_HEADERS, timeout=timeout, verify=tls_context()
        )
        #: ``X-RateLimit-Remaining`` of the last answer that carried one.
        self.rate_limit_remaining: int | None = None

    def __repr__(self) -> str:
        return f"GitHubClient({str(self._base)!r}, {self._auth.description})"

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> GitHubClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    # Requests ----------------------------------------------------------------------------------

    async def request(
        self,
        method: str,
        url: str,
        *,
        params: Params | None = None,
        json: Any = None,
        headers: Mapping[str, str] | None = None,
    ) -> httpx.Response:
        """Send one request (``url`` relative to the API root, or a next-page URL); raise on
        failure. Answers below 400 (304 included) are returned."""
        request = self._http.build_request(method, url, params=params, json=json, headers=headers)
        token = await self._auth.token()
        response = await self._send(request, token)
        if response.status_code == 401 and await self._auth.invalidate(token):
            log.warning(
                "GitHub rejected the cached %s for %s %s; retrying once with a new one",
                self._auth.description,
                method,
                self._path(request.url),
            )
            token = await self._auth.token()
            response = await self._send(request, token)
        error = classify(
            response,
            method=method,
            path=self._path(request.url),
            credential=self._auth.description,
            secrets=[token],
        )
        if error:
            raise error
        return response

    async def _send(self, request: httpx.Request, token: str) -> httpx.Response:
        request.headers["Authorization"] = f"Bearer {token}"
        try:
            response = await self._http.send(request)
        except httpx.TransportError as exc:
            raise transport_error(exc, method=request.method, path=self._path(request.url)) from exc
        remaining = response.headers.get("x-ratelimit-remaining")
        if remaining and remaining.isdigit():
            self.rate_limit_remaining = int(remaining)
        log.debug(
            "GitHub %s %s → %d", request.method, self._path(request.url), response.status_code
        )
        return response

    def _path(self, url: httpx.URL) -> str:
        """``url``'s path below the API root, without the query string."""
        base = self._base.path
        return "/" + url.path[len(base) :] if url.path.startswith(base) else url.path

    async def get_json(self, path: str, params: Params | None = None) -> Any:
        return (await self.request("GET", path, params=params)).json()

    async def post_json(self, path: str, body: Any) -> Any:
        return (await self.request("POST", path, json=body)).json()

    # Pagination --------------------------------------------------------------------------------

    async def paginate(self, path: str, params: Params | None = None) -> list[dict[str, Any]]:
        """Every item of a list endpoint, all pages."""
        first = await self.request("GET", path, params=_paged(params))
        items, _ = await self._read_pages(first)
        return items

    async def paginate_conditional(
        self, path: str, params: Params | None = None, etag: str | None = None
    ) -> tuple[list[dict[str, Any]] | None, str]:
        """``(None, etag)`` when the listing is unchanged since ``etag`` was returned, else
        ``(items, validator)``. Pass the returned validator back next time.

        GitHub's ETag covers one page's body, so a 304 on page 1 proves only page 1 unchanged:
        an edit on page 2, or an item appended after a full page 1, leaves page 1 identical.
        Cocov stored the last page's ETag, which cannot be sent for page 1 at all. Here:

        * a listing that fits on page 1 with room to spare (fewer than :data:`PER_PAGE` items)
          gets the validator ``page1:<ETag>``. Any insertion, deletion or edit would change that
          page's body, so next time page 1 is asked with ``If-None-Match`` and a 304, costing
          exactly one request (and no rate limit), proves the whole listing unchanged;
        * a longer listing gets ``pages:<digest of every page's ETag>``, which is never sent:
          every call reads all pages. Correctness first; large organizations pay
          ``ceil(n / 100)`` requests per refresh;
        * a validator we did not produce (Cocov's raw ETag) is never sent either.
        """
        conditional = _sendable(etag)
        headers = {"If-None-Match": conditional} if conditional else None
        first = await self.request("GET", path, params=_paged(params), headers=headers)
        if first.status_code == 304 and etag:
            return None, etag
        items, etags = await self._read_pages(first)
        return items, _validator(items, etags)

    async def _read_pages(self, response: httpx.Response) -> tuple[list[dict[str, Any]], list[str]]:
        items: list[dict[str, Any]] = []
        etags: list[str] = []
        while True:
            page = response.json()
            if not isinstance(page, list):
                path = self._path(response.request.url)
                raise GitHubError(
                    f"GitHub answered a non-list for GET {path}",
                    status=response.status_code,
                    method="GET",
                    path=path,
                )
            items.extend(page)
            etags.append(response.headers.get("etag", ""))
            next_url = response.links.get("next", {}).get("url")
            if not next_url:
                return items, etags
            response = await self.request("GET", self._same_origin(next_url))

    def _same_origin(self, url: str) -> str:
        target = httpx.URL(url)
        if (target.scheme, target.host, target.port) != (
            self._base.scheme,
            self._base.host,
            self._base.port,
        ):
            path = self._path(target)
            raise GitHubError(
                f"GitHub's next-page link leaves the API host ({target.host}) for GET {path}",
                status=200,
                method="GET",
                path=path,
            )
        return url

    # Endpoints ---------------------------------------------------------------------------------

    async def list_org_repos(self, org: str) -> list[dict[str, Any]]:
        """``GET /orgs/{org}/repos``, all pages (with a user token: that user's permissions)."""
        return await self.paginate(f"/orgs/{_segment(org)}/repos")

    async def list_collaborators(self, github_repo_id: int) -> list[dict[str, Any]]:
        """``GET /repositories/{id}/collaborators``, all pages (``id``, ``login``, ``permissions``
        each)."""
        return await self.paginate(f"/repositories/{int(github_repo_id)}/collaborators")

    async def latest_commit(self, org: str, repo: str, branch: str) -> dict[str, Any] | None:
        """The newest commit of ``branch``, or None when the repository has no commits."""
        path = f"/repos/{_segment(org)}/{_segment(repo)}/commits"
        try:
            commits = await self.get_json(path, {"sha": branch, "per_page": 1})
        except GitHubError as exc:
            if exc.status == 409:  # "Git Repository is empty."
                return None
            raise
        return commits[0] if commits else None

    async def create_status(
        self,
        org: str,
        repo: str,
        sha: str,
        *,
        state: str,
        context: str,
        description: str | None = None,
        target_url: str | None = None,
    ) -> dict[str, Any]:
        """Post a commit status; ``None`` fields are left out of the request."""
        fields = {
            "state": state,
            "context": context,
            "description": description,
            "target_url": target_url,
        }
        body = {key: value for key, value in fields.items() if value is not None}
        path = f"/repos/{_segment(org)}/{_segment(repo)}/statuses/{_segment(sha)}"
        result: dict[str, Any] = await self.post_json(path, body)
        return result


def installation_client(
    settings: Settings,
    redis: aioredis.Redis,
    *,
    provider: InstallationTokenProvider | None = None,
    timeout: httpx.Timeout | None = None,
) -> GitHubClient:
    """A client acting as the App installation (pass the process's shared ``provider``);
    ``timeout`` defaults to :func:`settings_timeout`."""
    auth = provider or InstallationTokenProvider.from_settings(settings, redis)
    return GitHubClient(
        settings.github_api_url, auth, timeout=timeout or settings_timeout(settings)
    )


def user_client(
    settings: Settings, token: str, *, timeout: httpx.Timeout | None = None
) -> GitHubClient:
    """A client acting as the user who owns the OAuth ``token``; ``timeout`` defaults to
    :func:`settings_timeout`."""
    return GitHubClient(
        settings.github_api_url, UserToken(token), timeout=timeout or settings_timeout(settings)
    )


def settings_timeout(settings: Settings) -> httpx.Timeout:
    """``COCOV_GITHUB_TIMEOUT`` seconds per read, write and pool wait; connecting as usual."""
    return httpx.Timeout(settings.github_timeout, connect=CONNECT_TIMEOUT)


def _segment(value: str) -> str:
    return quote(value, safe="")


def _paged(params: Params | None) -> dict[str, str | int]:
    return {**(params or {}), "per_page": PER_PAGE}


def _sendable(validator: str | None) -> str | None:
    """The ETag to send as ``If-None-Match`` for ``validator``, if it is a single-page one."""
    if validator and validator.startswith(SINGLE_PAGE_VALIDATOR):
        return validator.removeprefix(SINGLE_PAGE_VALIDATOR)
    return None


def _validator(items: list[dict[str, Any]], etags: list[str]) -> str:
    if len(etags) == 1 and etags[0] and len(items) < PER_PAGE:
        return SINGLE_PAGE_VALIDATOR + etags[0]
    return MULTI_PAGE_VALIDATOR + hashlib.sha256("\n".join(etags).encode()).hexdigest()
