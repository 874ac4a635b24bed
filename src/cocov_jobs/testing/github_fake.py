"""A GitHub fake over real HTTP: the REST endpoints Cocov's jobs call, and git smart HTTP.

Usage (sync or async code alike: the server runs in its own thread and event loop)::

    with FakeGitHub(org="acme", tmp_dir=path) as fake:
        fake.add_repo("api", files={"README.md": "hi"})
        settings = Settings(**fake.settings_fields())

Behaviour, as GitHub's:

* ``POST /app/installations/{id}/access_tokens`` checks the RS256 app JWT (signature with
  :attr:`FakeGitHub.private_key_pem`, ``iss`` = app id, not expired, ``exp`` at most ten
  minutes ahead) and answers 201 ``{"token": "ghs_…", "expires_at": "…Z"}``, valid
  :attr:`FakeGitHub.token_ttl` seconds. A revoked installation answers 404.
* Other API routes take ``Authorization: token X`` or ``Bearer X`` (installation or user token);
  missing → 401 "Requires authentication", unknown or expired → 401 "Bad credentials".
  Installation tokens see every repository of the org with all permissions true; a user sees
  the repositories they collaborate on (their permissions) and public ones (pull only).
* Lists paginate, every GET 200 carries a weak ETag, ``If-None-Match`` answers 304, every API
  answer carries ``X-RateLimit-*`` headers (see :mod:`cocov_jobs.testing.fake_http`).
* Git: ``{git_url}/{org}/{repo}.git/info/refs`` and ``/git-upload-pack`` through
  ``git http-backend``; the installation token goes in ``Authorization: Basic
  base64(x-access-token:TOKEN)`` (or ``Bearer TOKEN``). Missing → 401 with
  ``WWW-Authenticate: Basic realm="GitHub"``; invalid → 401; unknown repository → 404.
  Read-only: pushes are not served.
* The API is served under ``api_prefix`` (``"/api/v3"`` mimics GitHub Enterprise), git at
  the root of the same server. A renamed repository answers under its new name only.

Every request is recorded (:attr:`FakeGitHub.requests`) with its full URL and its
``Authorization`` header, so tests can check where secrets travelled.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import gzip
import json
import re
import secrets
import shutil
import socket
import string
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Literal

import jwt
import uvicorn
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from cocov_jobs.testing.fake_git import (
    BASE_EPOCH,
    COMMIT_INTERVAL,
    DEFAULT_AUTHOR,
    BareRepos,
    FileChange,
    GitCommit,
)
from cocov_jobs.testing.fake_http import (
    PRIMARY_LIMIT_MESSAGE,
    SECONDARY_LIMIT_MESSAGE,
    Injections,
    RateLimitWindow,
    etag,
    etag_matches,
    link_header,
    page_params,
)
from cocov_jobs.testing.servers import ListeningServer

#: Lifetime of minted installation tokens, seconds (GitHub: one hour).
DEFAULT_TOKEN_TTL = 3600.0
#: Longest JWT lifetime GitHub accepts (``exp`` − now), seconds, plus clock-drift leeway.
MAX_JWT_LIFETIME = 600 + 60
#: Seconds to wait for the server thread to start or stop.
SERVER_TIMEOUT = 10.0
#: First GitHub id given to repositories and users created without one.
FIRST_GITHUB_ID = 100_001
#: Commit status states GitHub accepts.
STATUS_STATES = frozenset({"error", "failure", "pending", "success"})

#: Permissions objects of GitHub's repository roles.
ROLE_PERMISSIONS: dict[str, dict[str, bool]] = {
    "admin": dict.fromkeys(("admin", "maintain", "push", "triage", "pull"), True),
    "maintain": {"admin": False, "maintain": True, "push": True, "triage": True, "pull": True},
    "write": {"admin": False, "maintain": False, "push": True, "triage": True, "pull": True},
    "triage": {"admin": False, "maintain": False, "push": False, "triage": True, "pull": True},
    "read": {"admin": False, "maintain": False, "push": False, "triage": False, "pull": True},
}

#: A role name (``admin``, ``maintain``, ``write``, ``triage``, ``read``) or a permissions object.
PermissionSpec = Mapping[str, bool] | str

_GIT_PATH = re.compile(
    r"/(?P<owner>[^/]+)/(?P<repo>[^/]+?)(?:\.git)?/(?P<service>info/refs|git-upload-pack)"
)
_TOKEN_ALPHABET = string.ascii_letters + string.digits

_Handler = Callable[[Request, re.Match[str]], Awaitable[Response]]


def permissions_of(spec: PermissionSpec) -> dict[str, bool]:
    """The full GitHub permissions object for a role name or a partial object."""
    if isinstance(spec, str):
        return dict(ROLE_PERMISSIONS[spec])
    return {key: bool(spec.get(key, False)) for key in ROLE_PERMISSIONS["admin"]}


def _role_name(permissions: Mapping[str, bool]) -> str:
    for role, granted in ROLE_PERMISSIONS.items():
        if permissions == granted:
            return role
    return "read"


def _iso(epoch: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch))


def _new_token(prefix: str) -> str:
    return prefix + "".join(secrets.choice(_TOKEN_ALPHABET) for _ in range(36))


def _json(payload: Any, status: int = 200, headers: Mapping[str, str] | None = None) -> Response:
    body = json.dumps(payload, separators=(",", ":")).encode()
    return Response(body, status, dict(headers or {}), "application/json; charset=utf-8")


def _message(status: int, message: str, headers: Mapping[str, str] | None = None) -> Response:
    docs = "https://docs.github.com/rest"
    return _json({"message": message, "documentation_url": docs}, status, headers)


@dataclass
class Collaborator:
    """A GitHub user with permissions on one repository."""

    id: int
    login: str
    permissions: dict[str, bool]


@dataclass
class FakeUser:
    """A GitHub user with an OAuth token; ``member`` of the org or not."""

    login: str
    id: int
    token: str
    member: bool = True


@dataclass
class FakeRepo:
    """A repository of the fake org. ``has_git`` is False for metadata-only repositories."""

    id: int
    name: str
    description: str | None
    private: bool
    default_branch: str
    created_at: int
    pushed_at: int
    has_git: bool
    commit_count: int = 0
    collaborators: dict[int, Collaborator] = field(default_factory=dict)
    statuses: dict[str, list[dict[str, Any]]] = field(default_factory=dict)


@dataclass(frozen=True)
class RecordedRequest:
    """One request the fake answered.

    ``path`` is relative to the API root for API requests (so it is the same with or without an
    ``api_prefix``) and the raw path for git requests; ``url`` is the full URL as received.
    """

    method: str
    path: str
    url: str
    status: int
    authorization: str | None


@dataclass(frozen=True)
class _Actor:
    """Who a token belongs to: the installation (``user`` None) or a user."""

    user: FakeUser | None


class FakeGitHub:
    """GitHub for one organization and one App installation, served on 127.0.0.1.

    State is plain Python objects behind one lock, changed through the methods below, from any
    thread. The server starts with :meth:`start` (or ``with``) and answers on an ephemeral port.
    """

    def __init__(
        self,
        org: str = "acme",
        tmp_dir: Path | str | None = None,
        *,
        api_prefix: str = "",
        app_id: int = 4242,
        installation_id: int = 1,
        token_ttl: float = DEFAULT_TOKEN_TTL,
    ) -> None:
        self.org = org
        self.api_prefix = api_prefix.rstrip("/")
        self.app_id = app_id
        self.installation_id = installation_id
        self.token_ttl = token_ttl
        self.tokens_minted = 0
        self.rate_limit = RateLimitWindow()
        self._key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self._owns_tmp = tmp_dir is None
        self._tmp = Path(tmp_dir) if tmp_dir else Path(tempfile.mkdtemp(prefix="fake-github-"))
        self._git = BareRepos(self._tmp / "repos")
        self._lock = threading.RLock()
        self._injections = Injections()
        self._installation_tokens: dict[str, float] = {}
        self._installation_revoked = False
        self._users: dict[str, FakeUser] = {}
        self._repos: dict[str, FakeRepo] = {}
        self._next_id = FIRST_GITHUB_ID
        self._requests: list[RecordedRequest] = []
        self._routes = self._route_table()
        self._port: int | None = None
        self._server: ListeningServer | None = None
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None

    # Lifecycle ---------------------------------------------------------------------------------

    def start(self) -> FakeGitHub:
        """Listen on an ephemeral port of 127.0.0.1; return once requests are accepted."""
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.bind(("127.0.0.1", 0))
        self._port = sock.getsockname()[1]
        config = uvicorn.Config(
            self._asgi,
            interface="asgi3",
            lifespan="off",
            log_config=None,
            access_log=False,
            timeout_graceful_shutdown=int(SERVER_TIMEOUT),
        )
        ready = threading.Event()
        self._server = ListeningServer(config, ready.set)
        self._thread = threading.Thread(
            target=self._serve, args=(self._server, sock), name="fake-github", daemon=True
        )
        self._thread.start()
        if not ready.wait(SERVER_TIMEOUT):
            raise RuntimeError("the GitHub fake did not start")
        return self

    def _serve(self, server: ListeningServer, sock: socket.socket) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            loop.run_until_complete(self._run(server, sock))
        finally:
            loop.close()
            sock.close()

    async def _run(self, server: ListeningServer, sock: socket.socket) -> None:
        self._stopping = asyncio.Event()
        await server.serve(sockets=[sock])

    def stop(self) -> None:
        """Stop the server (cutting injected delays short) and remove a temporary directory."""
        if self._server and self._thread:
            self._server.should_exit = True
            if self._loop and self._stopping and not self._loop.is_closed():
                with contextlib.suppress(RuntimeError):
                    self._loop.call_soon_threadsafe(self._stopping.set)
            self._thread.join(SERVER_TIMEOUT)
            self._server = self._thread = None
        if self._owns_tmp:
            shutil.rmtree(self._tmp, ignore_errors=True)

    def __enter__(self) -> FakeGitHub:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # Addresses and credentials -----------------------------------------------------------------

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:<port>``, the server root."""
        if self._port is None:
            raise RuntimeError("the GitHub fake is not started")
        return f"http://127.0.0.1:{self._port}"

    @property
    def api_url(self) -> str:
        """REST API root (``COCOV_GITHUB_API_URL``), including ``api_prefix``."""
        return self.base_url + self.api_prefix

    @property
    def git_url(self) -> str:
        """Git base URL (``COCOV_GITHUB_URL``); repositories are ``{git_url}/{org}/{name}.git``."""
        return self.base_url

    def clone_url(self, name: str) -> str:
        return f"{self.git_url}/{self.org}/{name}.git"

    @property
    def private_key_pem(self) -> bytes:
        """The App's private key, PEM (PKCS#8)."""
        return self._key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )

    @property
    def private_key_b64(self) -> str:
        """The App's private key as ``COCOV_GITHUB_APP_PRIVATE_KEY`` holds it (base64 of PEM)."""
        return base64.b64encode(self.private_key_pem).decode()

    def settings_fields(self) -> dict[str, str]:
        """``Settings`` keyword arguments pointing cocov-jobs at this fake."""
        return {
            "github_api_url": self.api_url,
            "github_url": self.git_url,
            "github_app_id": str(self.app_id),
            "github_app_private_key": self.private_key_b64,
            "github_app_installation_id": str(self.installation_id),
            "github_org_name": self.org,
        }

    def env(self) -> dict[str, str]:
        """The same as ``COCOV_*`` environment variables (for subprocesses: demo, benchmarks)."""
        return {"COCOV_" + key.upper(): value for key, value in self.settings_fields().items()}

    @staticmethod
    def git_auth_header(token: str) -> str:
        """The ``Authorization`` header value git must send: Basic ``x-access-token:TOKEN``."""
        return "Basic " + base64.b64encode(f"x-access-token:{token}".encode()).decode()

    # Tokens ------------------------------------------------------------------------------------

    def issue_installation_token(self) -> str:
        """A valid installation token, without the JWT dance (not counted in ``tokens_minted``)."""
        token = _new_token("ghs_")
        with self._lock:
            self._installation_tokens[token] = time.time() + self.token_ttl
        return token

    def expire_all_tokens(self) -> None:
        """Make every installation token issued so far expired."""
        with self._lock:
            for token in self._installation_tokens:
                self._installation_tokens[token] = 0.0

    def revoke_installation(self) -> None:
        """Uninstall the App: tokens answer 401, minting answers 404."""
        with self._lock:
            self._installation_revoked = True

    def add_user(self, login: str, github_id: int | None = None, *, member: bool = True) -> str:
        """Create a user (an org member unless ``member`` is False); return their OAuth token."""
        with self._lock:
            user = FakeUser(login, github_id or self._take_id(), _new_token("gho_"), member)
            self._users[login] = user
            return user.token

    def user(self, login: str) -> FakeUser:
        with self._lock:
            return self._users[login]

    def revoke_user_token(self, token: str) -> None:
        """Revoke a user's OAuth token: it answers 401 from now on."""
        with self._lock:
            for user in self._users.values():
                if user.token == token:
                    user.token = ""

    def _installation_token_valid(self, token: str) -> bool:
        with self._lock:
            expires = self._installation_tokens.get(token, 0.0)
            return not self._installation_revoked and expires > time.time()

    def _take_id(self) -> int:
        self._next_id += 1
        return self._next_id - 1

    # Repositories ------------------------------------------------------------------------------

    def add_repo(
        self,
        name: str,
        *,
        github_id: int | None = None,
        default_branch: str = "main",
        description: str | None = None,
        files: Mapping[str, bytes | str] | None = None,
        private: bool = True,
    ) -> FakeRepo:
        """Create a repository backed by a real bare git repository.

        Its first commit adds ``files`` (``None``: a ``README.md``; ``{}``: no commit at all,
        an empty repository, for which GitHub's commit listing answers 409).
        """
        repo = self._new_repo(name, github_id, default_branch, description, private, has_git=True)
        self._git.init(self._relative(name), default_branch)
        if files is None:
            files = {"README.md": f"# {name}\n"}
        if files:
            self.commit(name, files, message="Initial commit")
        return repo

    def add_repos(
        self, count: int, *, prefix: str = "repo", private: bool = True
    ) -> list[FakeRepo]:
        """Create ``count`` metadata-only repositories ``<prefix>-<n>`` quickly (no git data)."""
        return [
            self._new_repo(f"{prefix}-{n}", None, "main", None, private, has_git=False)
            for n in range(count)
        ]

    def add_big_repo(self, name: str, files: int = 10_000, commits: int = 2_000) -> FakeRepo:
        """Create a repository with ``files`` files and ``commits`` commits in seconds."""
        repo = self._new_repo(name, None, "main", None, True, has_git=True)
        relative = self._relative(name)
        self._git.init(relative, "main")
        self._git.write_big_history(relative, branch="main", files=files, commits=commits)
        with self._lock:
            repo.commit_count = commits
            repo.pushed_at = BASE_EPOCH + (commits - 1) * COMMIT_INTERVAL
        return repo

    def _new_repo(
        self,
        name: str,
        github_id: int | None,
        default_branch: str,
        description: str | None,
        private: bool,
        *,
        has_git: bool,
    ) -> FakeRepo:
        with self._lock:
            if name in self._repos:
                raise ValueError(f"repository {name!r} already exists")
            repo_id = github_id or self._take_id()
            created = BASE_EPOCH + len(self._repos) * COMMIT_INTERVAL
            repo = FakeRepo(
                repo_id, name, description, private, default_branch, created, created, has_git
            )
            self._repos[name] = repo
            return repo

    def repo(self, name: str) -> FakeRepo:
        with self._lock:
            return self._repos[name]

    def repos(self) -> list[FakeRepo]:
        with self._lock:
            return list(self._repos.values())

    def _relative(self, name: str) -> str:
        return f"{self.org}/{name}.git"

    def commit(
        self,
        name: str,
        files: Mapping[str, FileChange],
        *,
        message: str = "Update files",
        author: tuple[str, str] = DEFAULT_AUTHOR,
        branch: str | None = None,
    ) -> str:
        """Commit ``files`` (``None`` content deletes a path) on ``branch``; return the sha.

        ``branch`` defaults to the default branch; a new branch starts from the default
        branch's head.
        """
        with self._lock:
            repo = self._repos[name]
            epoch = BASE_EPOCH + repo.commit_count * COMMIT_INTERVAL
            repo.commit_count += 1
            repo.pushed_at = epoch
        branch = branch or repo.default_branch
        relative = self._relative(name)
        parent = self._git.head(relative, branch) or self._git.head(relative, repo.default_branch)
        return self._git.commit(
            relative,
            branch=branch,
            parent=parent,
            files=files,
            message=message,
            author=author,
            epoch=epoch,
        )

    def head(self, name: str, branch: str | None = None) -> str:
        """The sha a branch (default: the default branch) points to."""
        repo = self.repo(name)
        sha = self._git.head(self._relative(name), branch or repo.default_branch)
        if sha is None:
            raise KeyError(f"{name} has no branch {branch or repo.default_branch}")
        return sha

    def rename_repo(self, old: str, new: str) -> None:
        """Rename a repository (its git data moves; the old name answers 404)."""
        with self._lock:
            repo = self._repos.pop(old)
            repo.name = new
            self._repos[new] = repo
            if repo.has_git:
                self._git.path(self._relative(old)).rename(self._git.path(self._relative(new)))

    def delete_repo(self, name: str) -> None:
        with self._lock:
            repo = self._repos.pop(name)
            if repo.has_git:
                shutil.rmtree(self._git.path(self._relative(name)))

    def add_collaborator(
        self, repo: str, user_id: int, login: str, permissions: PermissionSpec = "write"
    ) -> None:
        """Make ``login`` (GitHub id ``user_id``) a collaborator of ``repo``."""
        with self._lock:
            collaborator = Collaborator(user_id, login, permissions_of(permissions))
            self._repos[repo].collaborators[user_id] = collaborator

    def add_collaborators(
        self,
        repo: str,
        count: int,
        *,
        first_id: int = 1_000_000,
        permissions: PermissionSpec = "write",
    ) -> list[int]:
        """Add ``count`` collaborators ``user<id>`` with ids from ``first_id``; return the ids."""
        ids = list(range(first_id, first_id + count))
        granted = permissions_of(permissions)
        with self._lock:
            target = self._repos[repo].collaborators
            for user_id in ids:
                target[user_id] = Collaborator(user_id, f"user{user_id}", dict(granted))
        return ids

    def remove_collaborator(self, repo: str, user_id: int) -> None:
        with self._lock:
            self._repos[repo].collaborators.pop(user_id, None)

    def grant(self, user_login: str, repo: str, permissions: PermissionSpec) -> None:
        """Give an existing user ``permissions`` on ``repo`` (as a collaborator)."""
        user = self.user(user_login)
        self.add_collaborator(repo, user.id, user.login, permissions)

    def statuses(self, repo: str, sha: str) -> list[dict[str, Any]]:
        """Commit statuses posted for ``sha`` of ``repo``, oldest first."""
        with self._lock:
            return [dict(status) for status in self._repos[repo].statuses.get(sha, [])]

    # Fault injection ---------------------------------------------------------------------------

    def fail_next(
        self,
        method: str | None,
        path_regex: str,
        status: int = 502,
        times: int = 1,
        *,
        body: Any = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        """Answer the next ``times`` requests matching ``method`` (None: any) and ``path_regex``
        (searched in the recorded path) with ``status``, JSON ``body`` (default: a GitHub-style
        message) and ``headers``."""
        payload = body if body is not None else {"message": f"Injected {status}"}
        self._injections.fail(method, path_regex, lambda: _json(payload, status, headers), times)

    def rate_limit_next(
        self,
        path_regex: str,
        kind: Literal["primary", "secondary"] = "primary",
        retry_after: int = 60,
        *,
        status: int = 403,
        times: int = 1,
        method: str | None = None,
    ) -> None:
        """Rate-limit the next matching requests.

        Primary: ``status`` with ``X-RateLimit-Remaining: 0`` and ``X-RateLimit-Reset`` =
        now + ``retry_after``. Secondary: ``status`` with ``Retry-After: retry_after`` and
        GitHub's "secondary rate limit" message.
        """
        secondary = {"Retry-After": str(retry_after)}
        respond = (
            self._primary_limit(retry_after, status)
            if kind == "primary"
            else lambda: _message(status, SECONDARY_LIMIT_MESSAGE, secondary)
        )
        self._injections.fail(method, path_regex, respond, times)

    def _primary_limit(self, reset_in: int, status: int) -> Callable[[], Response]:
        def respond() -> Response:
            headers = {
                **self.rate_limit.headers(count=False),
                "X-RateLimit-Remaining": "0",
                "X-RateLimit-Used": str(self.rate_limit.limit),
                "X-RateLimit-Reset": str(int(time.time()) + reset_in),
            }
            return _message(status, PRIMARY_LIMIT_MESSAGE, headers)

        return respond

    def delay_next(
        self, path_regex: str, seconds: float, *, times: int = 1, method: str | None = None
    ) -> None:
        """Hold the next matching requests ``seconds`` before answering (cut short by stop)."""
        self._injections.delay(method, path_regex, seconds, times)

    def clear_injections(self) -> None:
        self._injections.clear()

    # Request log -------------------------------------------------------------------------------

    @property
    def requests(self) -> list[RecordedRequest]:
        with self._lock:
            return list(self._requests)

    @property
    def request_log(self) -> list[tuple[str, str, int]]:
        """``(method, path, status)`` of every request, in order."""
        return [(r.method, r.path, r.status) for r in self.requests]

    @property
    def authorization_headers(self) -> list[str]:
        """Every ``Authorization`` header received (API and git)."""
        return [r.authorization for r in self.requests if r.authorization]

    def clear_log(self) -> None:
        with self._lock:
            self._requests.clear()

    # Dispatch ----------------------------------------------------------------------------------

    async def _asgi(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        request = Request(scope, receive)
        response = await self._respond(request)
        await response(scope, receive, send)

    async def _respond(self, request: Request) -> Response:
        raw_path = request.url.path
        git = _GIT_PATH.fullmatch(raw_path)
        api_path = None if git else self._api_path(raw_path)
        path = api_path or raw_path
        await self._hold(self._injections.take_delay(request.method, path))
        response = self._injections.take_failure(request.method, path)
        if response is None and git:
            response = await self._serve_git(request, git)
        elif response is None:
            response = await self._serve_api(request, api_path)
        if not git:
            response = self._finish_api(request, response)
        self._record(request, path, response.status_code)
        return response

    def _api_path(self, raw_path: str) -> str | None:
        """The path relative to the API root, or None when it lies outside ``api_prefix``."""
        if not self.api_prefix:
            return raw_path
        if raw_path.startswith(self.api_prefix + "/"):
            return raw_path.removeprefix(self.api_prefix)
        return None

    async def _hold(self, seconds: float) -> None:
        if seconds > 0 and self._stopping is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), seconds)

    def _record(self, request: Request, path: str, status: int) -> None:
        entry = RecordedRequest(
            request.method, path, str(request.url), status, request.headers.get("authorization")
        )
        with self._lock:
            self._requests.append(entry)

    def _finish_api(self, request: Request, response: Response) -> Response:
        if request.method == "GET" and response.status_code == 200:
            tag = etag(bytes(response.body))
            if etag_matches(request.headers.get("if-none-match"), tag):
                response = Response(status_code=304, headers={"ETag": tag})
            else:
                response.headers["ETag"] = tag
        for name, value in self.rate_limit.headers(count=response.status_code != 304).items():
            response.headers.setdefault(name, value)
        return response

    def _route_table(self) -> list[tuple[str, re.Pattern[str], _Handler]]:
        repo = r"/repos/(?P<owner>[^/]+)/(?P<repo>[^/]+)"
        routes: list[tuple[str, str, _Handler]] = [
            ("POST", r"/app/installations/(?P<id>\d+)/access_tokens", self._mint),
            ("GET", r"/orgs/(?P<org>[^/]+)/repos", self._org_repos),
            ("GET", r"/orgs/(?P<org>[^/]+)/members/(?P<login>[^/]+)", self._org_member),
            ("GET", repo, self._get_repo),
            ("GET", repo + "/commits", self._commits),
            ("POST", repo + r"/statuses/(?P<sha>\w+)", self._status),
            ("GET", r"/repositories/(?P<id>\d+)/collaborators", self._collaborators),
            ("GET", r"/user", self._user),
        ]
        return [(method, re.compile(regex), handler) for method, regex, handler in routes]

    async def _serve_api(self, request: Request, path: str | None) -> Response:
        for method, regex, handler in self._routes:
            match = regex.fullmatch(path) if path else None
            if match and method == request.method:
                return await handler(request, match)
        return _message(404, "Not Found")

    # Authentication ----------------------------------------------------------------------------

    def _authenticate(self, request: Request) -> _Actor | Response:
        header = request.headers.get("authorization")
        if not header:
            return _message(401, "Requires authentication")
        scheme, _, token = header.partition(" ")
        if scheme.lower() not in ("token", "bearer") or not token.strip():
            return _message(401, "Bad credentials")
        token = token.strip()
        if self._installation_token_valid(token):
            return _Actor(user=None)
        with self._lock:
            user = next((u for u in self._users.values() if u.token == token), None)
        return _Actor(user) if user else _message(401, "Bad credentials")

    def _permissions(self, actor: _Actor, repo: FakeRepo) -> dict[str, bool] | None:
        """What ``actor`` may do on ``repo``; None when they cannot see it."""
        if actor.user is None:
            return permissions_of("admin")
        collaborator = repo.collaborators.get(actor.user.id)
        if collaborator:
            return dict(collaborator.permissions)
        return None if repo.private else permissions_of("read")

    def _visible_repo(
        self, request: Request, owner: str, name: str
    ) -> tuple[_Actor, FakeRepo, dict[str, bool]] | Response:
        actor = self._authenticate(request)
        if isinstance(actor, Response):
            return actor
        with self._lock:
            repo = self._repos.get(name) if owner == self.org else None
            permissions = self._permissions(actor, repo) if repo else None
        if repo is None or permissions is None:
            return _message(404, "Not Found")
        return actor, repo, permissions

    def _verify_app_jwt(self, request: Request) -> Response | None:
        """None when the request carries a valid app JWT, else GitHub's 401 answer."""
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer":
            return _message(401, "A JSON web token could not be decoded")
        try:
            claims = jwt.decode(
                token.strip(),
                self._key.public_key(),
                algorithms=["RS256"],
                options={"require": ["iat", "exp", "iss"]},
            )
        except jwt.ExpiredSignatureError:
            return _message(401, "'Expiration time' claim ('exp') must be in the future")
        except jwt.InvalidTokenError:
            return _message(401, "A JSON web token could not be decoded")
        if str(claims["iss"]) != str(self.app_id):
            return _message(401, "'Issuer' claim ('iss') must be the App's id")
        if claims["exp"] > time.time() + MAX_JWT_LIFETIME:
            return _message(401, "'Expiration time' claim ('exp') is too far in the future")
        return None

    # API handlers ------------------------------------------------------------------------------

    async def _mint(self, request: Request, match: re.Match[str]) -> Response:
        rejection = self._verify_app_jwt(request)
        if rejection:
            return rejection
        with self._lock:
            if int(match["id"]) != self.installation_id or self._installation_revoked:
                return _message(404, "Not Found")
            self.tokens_minted += 1
            token = _new_token("ghs_")
            expires = time.time() + self.token_ttl
            self._installation_tokens[token] = expires
        body = {
            "token": token,
            "expires_at": _iso(expires),
            "permissions": {"contents": "read", "metadata": "read", "statuses": "write"},
            "repository_selection": "all",
        }
        return _json(body, 201)

    async def _org_repos(self, request: Request, match: re.Match[str]) -> Response:
        actor = self._authenticate(request)
        if isinstance(actor, Response):
            return actor
        if match["org"].lower() != self.org.lower():
            return _message(404, "Not Found")
        with self._lock:
            visible = [
                self._repo_json(repo, permissions)
                for repo in self._sorted_repos(request)
                if (permissions := self._permissions(actor, repo)) is not None
            ]
        return self._paginated(request, visible)

    def _sorted_repos(self, request: Request) -> list[FakeRepo]:
        sort = request.query_params.get("sort", "created")
        keys: dict[str, Callable[[FakeRepo], Any]] = {
            "full_name": lambda repo: repo.name,
            "pushed": lambda repo: (repo.pushed_at, repo.id),
            "updated": lambda repo: (repo.pushed_at, repo.id),
        }
        default_direction = "asc" if sort == "full_name" else "desc"
        descending = request.query_params.get("direction", default_direction) == "desc"
        key = keys.get(sort, lambda repo: (repo.created_at, repo.id))
        return sorted(self._repos.values(), key=key, reverse=descending)

    def _paginated(self, request: Request, items: list[dict[str, Any]]) -> Response:
        page, per_page = page_params(request)
        chunk = items[(page - 1) * per_page : page * per_page]
        link = link_header(request, page, per_page, len(items))
        return _json(chunk, headers={"Link": link} if link else None)

    def _repo_json(self, repo: FakeRepo, permissions: dict[str, bool]) -> dict[str, Any]:
        full_name = f"{self.org}/{repo.name}"
        return {
            "id": repo.id,
            "node_id": base64.b64encode(f"010:Repository{repo.id}".encode()).decode(),
            "name": repo.name,
            "full_name": full_name,
            "private": repo.private,
            "visibility": "private" if repo.private else "public",
            "owner": {"login": self.org, "type": "Organization"},
            "html_url": f"{self.git_url}/{full_name}",
            "url": f"{self.api_url}/repos/{full_name}",
            "description": repo.description,
            "fork": False,
            "archived": False,
            "created_at": _iso(repo.created_at),
            "updated_at": _iso(repo.pushed_at),
            "pushed_at": _iso(repo.pushed_at),
            "default_branch": repo.default_branch,
            "permissions": permissions,
        }

    async def _get_repo(self, request: Request, match: re.Match[str]) -> Response:
        found = self._visible_repo(request, match["owner"], match["repo"])
        if isinstance(found, Response):
            return found
        _, repo, permissions = found
        with self._lock:
            return _json(self._repo_json(repo, permissions))

    async def _org_member(self, request: Request, match: re.Match[str]) -> Response:
        actor = self._authenticate(request)
        if isinstance(actor, Response):
            return actor
        with self._lock:
            user = self._users.get(match["login"])
            is_member = match["org"] == self.org and user is not None and user.member
        return Response(status_code=204) if is_member else _message(404, "Not Found")

    async def _user(self, request: Request, match: re.Match[str]) -> Response:
        actor = self._authenticate(request)
        if isinstance(actor, Response):
            return actor
        if actor.user is None:
            return _message(403, "Resource not accessible by integration")
        return _json({"login": actor.user.login, "id": actor.user.id, "type": "User"})

    async def _collaborators(self, request: Request, match: re.Match[str]) -> Response:
        actor = self._authenticate(request)
        if isinstance(actor, Response):
            return actor
        with self._lock:
            repo = next((r for r in self._repos.values() if r.id == int(match["id"])), None)
            permissions = self._permissions(actor, repo) if repo else None
            if repo is None or permissions is None:
                return _message(404, "Not Found")
            if not permissions["push"]:
                return _message(403, "Must have push access to view repository collaborators.")
            items = [_collaborator_json(c) for c in repo.collaborators.values()]
        return self._paginated(request, items)

    async def _commits(self, request: Request, match: re.Match[str]) -> Response:
        found = self._visible_repo(request, match["owner"], match["repo"])
        if isinstance(found, Response):
            return found
        _, repo, _ = found
        relative = self._relative(repo.name)
        if not repo.has_git or repo.commit_count == 0:
            return _message(409, "Git Repository is empty.")
        ref = request.query_params.get("sha") or repo.default_branch
        sha = await self._git.resolve(relative, ref)
        if sha is None:
            return _message(404, f"No commit found for SHA: {ref}")
        page, per_page = page_params(request)
        total = await self._git.count(relative, sha)
        commits = await self._git.log(relative, sha, skip=(page - 1) * per_page, limit=per_page)
        link = link_header(request, page, per_page, total)
        items = [self._commit_json(repo, commit) for commit in commits]
        return _json(items, headers={"Link": link} if link else None)

    def _commit_json(self, repo: FakeRepo, commit: GitCommit) -> dict[str, Any]:
        full_name = f"{self.org}/{repo.name}"
        return {
            "sha": commit.sha,
            "commit": {
                "author": {
                    "name": commit.author_name,
                    "email": commit.author_email,
                    "date": _iso(commit.author_time),
                },
                "committer": {
                    "name": commit.committer_name,
                    "email": commit.committer_email,
                    "date": _iso(commit.committer_time),
                },
                "message": commit.message,
                "tree": {"sha": commit.tree},
            },
            "url": f"{self.api_url}/repos/{full_name}/commits/{commit.sha}",
            "html_url": f"{self.git_url}/{full_name}/commit/{commit.sha}",
            "author": None,
            "committer": None,
            "parents": [{"sha": parent} for parent in commit.parents],
        }

    async def _status(self, request: Request, match: re.Match[str]) -> Response:
        found = self._visible_repo(request, match["owner"], match["repo"])
        if isinstance(found, Response):
            return found
        _, repo, permissions = found
        if not permissions["push"]:
            return _message(404, "Not Found")
        try:
            payload = json.loads(await request.body())
        except ValueError:
            return _message(400, "Problems parsing JSON")
        if not isinstance(payload, dict) or payload.get("state") not in STATUS_STATES:
            return _message(422, "Validation Failed: state is not included in the list")
        sha = match["sha"]
        if not repo.has_git or await self._git.resolve(self._relative(repo.name), sha) != sha:
            return _message(422, f"No commit found for SHA: {sha}")
        return _json(self._record_status(repo, sha, payload), 201)

    def _record_status(self, repo: FakeRepo, sha: str, payload: dict[str, Any]) -> dict[str, Any]:
        with self._lock:
            status = {
                "id": self._take_id(),
                "state": payload["state"],
                "context": payload.get("context") or "default",
                "description": payload.get("description"),
                "target_url": payload.get("target_url"),
                "created_at": _iso(time.time()),
            }
            repo.statuses.setdefault(sha, []).append(status)
            return dict(status)

    # Git smart HTTP ----------------------------------------------------------------------------

    async def _serve_git(self, request: Request, match: re.Match[str]) -> Response:
        rejection = self._check_git_auth(request.headers.get("authorization"))
        if rejection:
            return rejection
        with self._lock:
            repo = self._repos.get(match["repo"]) if match["owner"] == self.org else None
        if repo is None or not repo.has_git:
            return Response(b"Repository not found.\n", 404, media_type="text/plain")
        service = match["service"]
        if service == "info/refs" and request.query_params.get("service") != "git-upload-pack":
            return Response(b"Only git-upload-pack is served.\n", 403, media_type="text/plain")
        body = await request.body()
        if request.headers.get("content-encoding") == "gzip":
            body = gzip.decompress(body)
        cgi = await self._git.http_backend(
            path_info=f"/{self._relative(repo.name)}/{service}",
            method=request.method,
            query=request.url.query,
            content_type=request.headers.get("content-type", ""),
            git_protocol=request.headers.get("git-protocol"),
            body=body,
        )
        return Response(cgi.body, cgi.status, dict(cgi.headers))

    def _check_git_auth(self, header: str | None) -> Response | None:
        challenge = {"WWW-Authenticate": 'Basic realm="GitHub"'}
        if not header:
            return Response(b"Authentication required.\n", 401, challenge, "text/plain")
        token = _git_token(header)
        if token is None or not self._installation_token_valid(token):
            message = b"Invalid username or token. Password authentication is not supported.\n"
            return Response(message, 401, challenge, "text/plain")
        return None


def _git_token(header: str) -> str | None:
    """The token in a git ``Authorization`` header: Basic password, or Bearer/token value."""
    scheme, _, value = header.partition(" ")
    if scheme.lower() in ("bearer", "token"):
        return value.strip() or None
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode()
    except (ValueError, UnicodeDecodeError):
        return None
    return decoded.partition(":")[2] or None


def _collaborator_json(collaborator: Collaborator) -> dict[str, Any]:
    return {
        "login": collaborator.login,
        "id": collaborator.id,
        "type": "User",
        "site_admin": False,
        "permissions": dict(collaborator.permissions),
        "role_name": _role_name(collaborator.permissions),
    }


__all__ = [
    "ROLE_PERMISSIONS",
    "Collaborator",
    "FakeGitHub",
    "FakeRepo",
    "FakeUser",
    "PermissionSpec",
    "RecordedRequest",
    "permissions_of",
]
