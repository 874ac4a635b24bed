"""``cocov-jobs demo``: every job end to end on one machine, then the dashboard.

What it sets up
===============

* The GitHub fake (:mod:`cocov_jobs.testing`) on 127.0.0.1 with the sample organization of
  :mod:`cocov_jobs.demo_sample` (a small Python project with a ``.cocov.yaml``, its coverage,
  two other repositories, collaborators).
* Settings pointing at the fake, local clone storage under the demo directory and a random
  ``COCOV_CRYPTOGRAPHIC_KEY`` (:func:`demo_settings`). The demo directory
  (``--data-dir``, default ``<COCOV_DATA_DIR>/demo``) holds the embedded stores, the clones and
  the log, so a real installation's data directory is never touched. Configured
  ``COCOV_DATABASE_URL`` / ``COCOV_REDIS_URL`` still win, as for every command: the demo then
  writes its sample rows, jobs and Worker descriptors there.
* An operator user owning a service token (the dashboard login), in the first step.

The flow
========

A worker and the web app run in this process. Each step does what Cocov's API or a CI
pipeline would (insert rows and enqueue jobs in one transaction, or call the HTTP endpoints),
then waits for the state its jobs leave — polling every :data:`POLL_INTERVAL` seconds, at most
:data:`STEP_TIMEOUT` seconds, and failing at once when one of the run's jobs fails or is
retried. The first failed step stops the flow. A repository and users left by an earlier run
in the same stores (recognised by their description and logins, see
:mod:`~cocov_jobs.demo_sample`) are removed first, with ``destroy_repository``.

Afterwards (unless ``--no-serve``) the dashboard and the worker keep running until Ctrl-C or
SIGTERM; the fake and the embedded stores stop with them.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
import socket
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Literal, NamedTuple, TypeVar

import httpx
import structlog
import uvicorn
from rich.console import Console, RenderableType
from rich.live import Live
from rich.spinner import Spinner
from rich.table import Table
from sqlalchemy import text

from cocov_jobs import contracts
from cocov_jobs.cli.demo_sample import (
    AUTHOR,
    AUTHOR_LOGIN,
    BRANCH,
    COLLABORATORS,
    DEMO_LOGINS,
    OPERATOR_LOGIN,
    ORG,
    REPO,
    REPO_DESCRIPTION,
    TOKEN_DESCRIPTION,
    Sample,
    coverage_data,
)
from cocov_jobs.config import Settings
from cocov_jobs.crypto import KEY_SIZE, new_service_token, service_token_digest
from cocov_jobs.db.migrate import upgrade
from cocov_jobs.db.models import CheckSetStatus, CloneStatus, CoverageStatus, MemberLevel
from cocov_jobs.embedded import Stores
from cocov_jobs.engine import admin, queue
from cocov_jobs.engine.worker import Worker
from cocov_jobs.services import Services
from cocov_jobs.testing import FakeGitHub
from cocov_jobs.web.app import create_app

log = structlog.get_logger(__name__)
T = TypeVar("T")

# Flow ------------------------------------------------------------------------------------------

#: Seconds between two checks of the state a step waits for.
POLL_INTERVAL: Final = 0.1
#: Seconds a step waits for its jobs before it fails.
STEP_TIMEOUT: Final = 60.0
#: Seconds the summary waits for running jobs to finish (their log rows are written in batches).
SETTLE_TIMEOUT: Final = 5.0
#: Seconds an HTTP request to the web app may take.
HTTP_TIMEOUT: Final = 30.0
#: Address the demo's web app listens on.
HOST: Final = "127.0.0.1"
#: Log file inside the demo directory (the terminal shows the progress instead).
LOG_FILE: Final = "demo.log"
#: Progress display refreshes per second.
REFRESH_PER_SECOND: Final = 8
#: Characters of a sha shown in results.
SHORT_SHA: Final = 7
#: Longest error text shown in a failed step.
MAX_ERROR_CHARS: Final = 300
#: Hex digits of a Cocov repository token after ``crt_``.
REPOSITORY_TOKEN_HEX: Final = 42
#: Who the job history says enqueued the jobs the demo enqueues itself (as Cocov's API would).
DEMO_ORIGIN: Final = "demo"


class JobRuns(NamedTuple):
    """Successful runs of one job in this demo run, and the id of the last one."""

    name: str
    runs: int
    last_id: int


class StepFailed(Exception):
    """A step could not complete; the message says why (shown in its row)."""


def demo_dir(base: Settings, data_dir: Path | None) -> Path:
    """``data_dir``, else the ``demo`` folder of ``COCOV_DATA_DIR``."""
    return data_dir if data_dir is not None else base.data_dir / "demo"


def demo_settings(base: Settings, fake: FakeGitHub, directory: Path) -> Settings:
    """``base`` pointed at the fake, with ``directory``, local storage and a random key.

    The stores are always the embedded ones in ``directory``: the demo never writes into an
    installation configured by ``COCOV_DATABASE_URL`` / ``COCOV_REDIS_URL``, and takes in
    nothing from ``COCOV_SIDEKIQ_REDIS_URL``.
    """
    return base.model_copy(
        update={
            **fake.settings_fields(),
            "database_url": "",
            "database_host": "",
            "redis_url": "",
            "redis_cache_url": "",
            "sidekiq_redis_url": "",
            "data_dir": directory,
            "git_service_storage_mode": "local",
            "git_service_local_storage_path": directory / "storage",
            # KEY_SIZE hex digits: the key is the text's bytes.
            "cryptographic_key": secrets.token_hex(KEY_SIZE // 2),
        }
    )


def log_to_file(path: Path) -> None:
    """Send the process's log lines (same format) to ``path`` instead of standard error."""
    path.parent.mkdir(parents=True, exist_ok=True)
    root = logging.getLogger()
    handler = logging.FileHandler(path)
    if root.handlers:
        handler.setFormatter(root.handlers[0].formatter)
    root.handlers[:] = [handler]


def listen(port: int | None, default_port: int) -> socket.socket:
    """A listening socket on :data:`HOST`: ``port``, else ``default_port`` or a free one."""
    if port is not None:
        return socket.create_server((HOST, port))
    try:
        return socket.create_server((HOST, default_port))
    except OSError:
        return socket.create_server((HOST, 0))


# Progress display ------------------------------------------------------------------------------

StepState = Literal["waiting", "running", "done", "failed", "skipped"]
_ICONS: Final[Mapping[StepState, str]] = {
    "waiting": "[dim]·[/dim]",
    "done": "[green]✓[/green]",
    "failed": "[red]✗[/red]",
    "skipped": "[dim]-[/dim]",
}


@dataclass
class StepRow:
    title: str
    state: StepState = "waiting"
    result: str = ""


@dataclass
class Board:
    """One row per step: ✓/✗ and its one-line result (rendered live by rich)."""

    rows: list[StepRow]
    _spinner: Spinner = field(default_factory=lambda: Spinner("dots", style="cyan"))

    def __rich__(self) -> RenderableType:
        table = Table(box=None, show_header=False, pad_edge=False)
        table.add_column(width=1)
        table.add_column(style="bold", no_wrap=True)
        table.add_column()
        for row in self.rows:
            icon: RenderableType = self._spinner if row.state == "running" else _ICONS[row.state]
            table.add_row(icon, row.title, row.result)
        return table

    async def run(self, steps: list[tuple[str, Callable[[], Awaitable[str]]]]) -> bool:
        """Run the steps in order; stop at the first failure. True when all are done."""
        for index, (row, (_, action)) in enumerate(zip(self.rows, steps, strict=True)):
            row.state = "running"
            try:
                row.result = await action()
            except Exception as exc:
                row.state, row.result = "failed", _failure_text(exc)
                log.exception("demo step failed", step=row.title)
                for later in self.rows[index + 1 :]:
                    later.state = "skipped"
                return False
            row.state = "done"
        return True


def _failure_text(exc: Exception) -> str:
    message = str(exc) if isinstance(exc, StepFailed) else f"{type(exc).__name__}: {exc}"
    return message[:MAX_ERROR_CHARS]


# SQL -------------------------------------------------------------------------------------------

_LAST_JOB_ID = text(
    "SELECT greatest((SELECT max(id) FROM pgqueuer), (SELECT max(job_id) FROM pgqueuer_log))"
)
_PREVIOUS_REPOSITORY = text(
    "SELECT id FROM repositories WHERE name = :name AND description = :description"
)
_REPOSITORY_EXISTS = text("SELECT EXISTS (SELECT 1 FROM repositories WHERE id = :id)")
_FORGET_USERS = tuple(
    text(sql)
    for sql in (
        "DELETE FROM service_tokens WHERE owner_id IN (SELECT id FROM users WHERE login = ANY(:l))",
        "DELETE FROM user_emails WHERE user_id IN (SELECT id FROM users WHERE login = ANY(:l))",
        "UPDATE commits SET user_id = NULL"
        " WHERE user_id IN (SELECT id FROM users WHERE login = ANY(:l))",
        "DELETE FROM users WHERE login = ANY(:l)",
    )
)
_INSERT_USER = text(
    "INSERT INTO users (login, github_id, github_token, admin, created_at, updated_at)"
    " VALUES (:login, :github_id, :github_token, :admin, now(), now()) RETURNING id"
)
_INSERT_EMAIL = text(
    "INSERT INTO user_emails (user_id, email, created_at, updated_at)"
    " VALUES (:user_id, :email, now(), now())"
)
_INSERT_TOKEN = text(
    "INSERT INTO service_tokens (token_hash, description, owner_id, created_at, updated_at)"
    " VALUES (:token_hash, :description, :owner_id, now(), now())"
)
_INSERT_REPOSITORY = text(
    "INSERT INTO repositories (name, description, default_branch, token, github_id,"
    " created_at, updated_at)"
    " VALUES (:name, :description, :branch, :token, :github_id, now(), now()) RETURNING id"
)
_MEMBER_COUNT = text("SELECT count(*) FROM repository_members WHERE repository_id = :id")
_HEAD = text(
    "SELECT c.id, c.sha, c.message FROM branches b JOIN commits c ON c.id = b.head_id"
    " WHERE b.repository_id = :id AND b.name = :branch"
)
_PROCESSED = text(
    """
    SELECT c.clone_size, cs.id AS check_set_id,
           (SELECT count(*) FROM checks WHERE checks.check_set_id = cs.id) AS checks
    FROM commits c
    JOIN repositories r ON r.id = c.repository_id
    JOIN check_sets cs ON cs.commit_id = c.id
    WHERE c.id = :id AND c.clone_status = :cloned AND cs.status = :queued
      AND r.commits_size > 0
    """
)
_COVERAGE = text(
    """
    SELECT c.minimum_coverage,
           (SELECT count(*) FROM coverage_files f WHERE f.coverage_info_id = i.id) AS files
    FROM coverage_infos i JOIN commits c ON c.id = i.commit_id
    WHERE i.commit_id = :id AND i.status = :completed
    """
)
_SUCCEEDED = text(
    "SELECT count(DISTINCT job_id) FROM pgqueuer_log"
    " WHERE job_id = ANY(:ids) AND status = 'successful'"
)
_MEMBERSHIPS = text(
    "SELECT r.name, m.level FROM repository_members m"
    " JOIN repositories r ON r.id = m.repository_id"
    " WHERE m.github_member_id = :github_id ORDER BY r.name"
)
_COMMIT_OWNER = text(
    "SELECT u.login FROM commits c JOIN users u ON u.id = c.user_id WHERE c.id = :id"
)
_RUNNING = text("SELECT count(*) FROM pgqueuer WHERE id > :since AND status = 'picked'")
_JOBS_RUN = text(
    "SELECT entrypoint, count(*) AS runs, max(job_id) AS last_id FROM pgqueuer_log"
    " WHERE job_id > :since AND status = 'successful' GROUP BY entrypoint ORDER BY min(job_id)"
)


# The flow --------------------------------------------------------------------------------------


@dataclass
class Flow:
    """The steps, and what they learn along the way (ids, tokens)."""

    services: Services
    stores: Stores
    sample: Sample
    worker: Worker
    server: uvicorn.Server
    listener: socket.socket
    http: httpx.AsyncClient
    worker_task: asyncio.Task[None] | None = None
    web_task: asyncio.Task[None] | None = None
    since: int = 0
    service_token: str = ""
    repository_id: int = 0
    repository_token: str = ""
    commit_id: int = 0

    def steps(self) -> list[tuple[str, Callable[[], Awaitable[str]]]]:
        return [
            ("Start", self.start),
            ("Org sync", self.org_sync),
            ("Add repository", self.add_repository),
            ("Initialize", self.initialize),
            ("Process the commit", self.process_commit),
            ("Upload coverage", self.upload_coverage),
            ("Coverage processed", self.coverage_processed),
            ("Permissions", self.permissions),
            ("Commit author linked", self.author_linked),
        ]

    @property
    def fake(self) -> FakeGitHub:
        return self.sample.fake

    @property
    def dashboard_url(self) -> str:
        host, port = self.listener.getsockname()[:2]
        return f"http://{host}:{port}/dashboard"

    # Helpers -----------------------------------------------------------------------------------

    async def _scalar(self, statement: Any, **params: Any) -> Any:
        async with self.services.engine.connect() as conn:
            return await conn.scalar(statement, params)

    async def _row(self, statement: Any, **params: Any) -> Any:
        async with self.services.engine.connect() as conn:
            return (await conn.execute(statement, params)).one_or_none()

    async def _enqueue(self, name: str, **args: int) -> int | None:
        async with self.services.sessions.begin() as session, queue.enqueued_by(DEMO_ORIGIN):
            return await queue.enqueue(session, name, **args)

    async def until(
        self, what: str, probe: Callable[[], Awaitable[T | None]], *, watch_jobs: bool = True
    ) -> T:
        """``probe()`` once it is not None.

        :class:`StepFailed` after :data:`STEP_TIMEOUT` seconds, when the worker stops, or
        (``watch_jobs``) when a job of this run failed or waits for a retry.
        """
        try:
            async with asyncio.timeout(STEP_TIMEOUT):
                while (found := await probe()) is None:
                    if watch_jobs:
                        await self._check_jobs()
                    if self.worker_task is None or self.worker_task.done():
                        raise StepFailed(f"the worker stopped before {what}")
                    await asyncio.sleep(POLL_INTERVAL)
        except TimeoutError:
            raise StepFailed(f"no {what} after {STEP_TIMEOUT:.0f} s (see {LOG_FILE})") from None
        return found

    async def _check_jobs(self) -> None:
        """Fail when a job of this run failed or waits for a retry."""
        for state in ("failed", "retrying"):
            for row in await admin.list_jobs(self.services, state=state):
                if row.id > self.since:
                    raise StepFailed(f"{row.job} (job {row.id}) {state}: {row.error_text}")

    def _status(self, context: str) -> dict[str, Any] | None:
        posted = [s for s in self.fake.statuses(REPO, self.sample.sha) if s["context"] == context]
        return posted[-1] if posted else None

    # Steps -------------------------------------------------------------------------------------

    async def start(self) -> str:
        await upgrade(self.services.engine, self.stores.database_url)
        self.since = int(await self._scalar(_LAST_JOB_ID) or 0)
        self.web_task = asyncio.create_task(self.server.serve(sockets=[self.listener]))
        self.worker_task = asyncio.create_task(self.worker.run())
        removed = await self._forget_previous_run()
        self.service_token = await self._create_operator()
        return f"{self._stores_text()}; GitHub fake {self.fake.base_url}" + (
            "; the previous demo run was removed" if removed else ""
        )

    def _stores_text(self) -> str:
        embedded = self.stores.embedded
        if not embedded:
            return "configured PostgreSQL and Redis"
        return f"embedded {' and '.join(embedded)} in {self.services.settings.data_dir}"

    async def _forget_previous_run(self) -> bool:
        previous = await self._scalar(_PREVIOUS_REPOSITORY, name=REPO, description=REPO_DESCRIPTION)
        if previous is not None:
            await self._enqueue("destroy_repository", repository_id=previous)

            async def gone() -> bool | None:
                return None if await self._scalar(_REPOSITORY_EXISTS, id=previous) else True

            await self.until("removal of the previous demo repository", gone)
        async with self.services.sessions.begin() as session:
            for statement in _FORGET_USERS:
                await session.execute(statement, {"l": list(DEMO_LOGINS)})
        return previous is not None

    async def _create_operator(self) -> str:
        """The operator user and the service token of the dashboard (and the service API)."""
        token = new_service_token()
        operator = self.fake.user(OPERATOR_LOGIN)
        async with self.services.sessions.begin() as session:
            owner = await session.scalar(
                _INSERT_USER,
                {
                    "login": OPERATOR_LOGIN,
                    "github_id": operator.id,
                    "github_token": self.sample.operator_token,
                    "admin": True,
                },
            )
            await session.execute(
                _INSERT_TOKEN,
                {
                    "token_hash": service_token_digest(token),
                    "description": TOKEN_DESCRIPTION,
                    "owner_id": owner,
                },
            )
        return token

    async def org_sync(self) -> str:
        # As Cocov's API does before it enqueues the refresh.
        await self.services.cache_redis.set(contracts.ORG_REPOS_STATUS, "updating")
        await self._enqueue("update_organization_repos")
        items = await self.until("organization listing", self._org_listing)
        names = ", ".join(item["name"] for item in items)
        return f"{len(items)} repositories of {ORG} cached: {names}"

    async def _org_listing(self) -> list[dict[str, Any]] | None:
        cache = self.services.cache_redis
        status, items = await cache.mget(contracts.ORG_REPOS_STATUS, contracts.ORG_REPOS_ITEMS)
        if status != b"present" or items is None:
            return None
        listing: list[dict[str, Any]] = json.loads(items)
        return listing

    async def add_repository(self) -> str:
        """Insert the repository and enqueue its jobs in one transaction, as Cocov's API does."""
        self.repository_token = "crt_" + secrets.token_hex(REPOSITORY_TOKEN_HEX // 2)
        async with self.services.sessions.begin() as session:
            self.repository_id = await session.scalar(
                _INSERT_REPOSITORY,
                {
                    "name": REPO,
                    "description": REPO_DESCRIPTION,
                    "branch": BRANCH,
                    "token": self.repository_token,
                    "github_id": self.fake.repo(REPO).id,
                },
            )
            for name in ("update_repo_permissions", "initialize_repository"):
                with queue.enqueued_by(DEMO_ORIGIN):
                    await queue.enqueue(session, name, repository_id=self.repository_id)

        async def members() -> int | None:
            count = int(await self._scalar(_MEMBER_COUNT, id=self.repository_id))
            return count if count == len(COLLABORATORS) else None

        count = await self.until("repository members", members)
        return f"{REPO} (id {self.repository_id}); its {count} collaborators are members"

    async def initialize(self) -> str:
        async def head() -> Any:
            return await self._row(_HEAD, id=self.repository_id, branch=BRANCH)

        commit = await self.until(f"head of {BRANCH}", head)
        self.commit_id = int(commit.id)
        return f'{commit.sha[:SHORT_SHA]} "{commit.message}" is the head of {BRANCH}'

    async def process_commit(self) -> str:
        async def processed() -> Any:
            row = await self._row(
                _PROCESSED,
                id=self.commit_id,
                cloned=int(CloneStatus.completed),
                queued=int(CheckSetStatus.queued),
            )
            if row is None or self._status("cocov") is None:
                return None
            if not await self._descriptor_waiting(int(row.check_set_id)):
                return None
            return row if await self.services.storage.commit_exists(REPO, self.sample.sha) else None

        row = await self.until("processed commit", processed)
        status = self._status("cocov") or {}
        return (
            f"clone stored ({_kib(row.clone_size)}), {row.checks} checks on"
            f" {contracts.CHECKS_QUEUE}, status cocov: {status.get('state')}"
        )

    async def _descriptor_waiting(self, check_set_id: int) -> bool:
        for raw in await self.services.redis.lrange(contracts.CHECKS_QUEUE, 0, -1):
            if json.loads(raw).get("check_set_id") == check_set_id:
                return True
        return False

    async def upload_coverage(self) -> str:
        data = coverage_data()
        response = await self.http.post(
            "/v1/reports",
            json={"data": data, "commit_sha": self.sample.sha},
            headers={"Authorization": f"token {self.repository_token}"},
        )
        if response.status_code != httpx.codes.NO_CONTENT:
            raise StepFailed(f"POST /v1/reports answered {response.status_code}: {response.text}")
        return f"POST /v1/reports ({len(data)} files): {response.status_code}"

    async def coverage_processed(self) -> str:
        async def recorded() -> Any:
            if self._status("cocov/coverage") is None:
                return None
            return await self._row(
                _COVERAGE, id=self.commit_id, completed=int(CoverageStatus.completed)
            )

        row = await self.until("recorded coverage", recorded)
        status = self._status("cocov/coverage") or {}
        return (
            f"{row.files} files (tests/** excluded), minimum {row.minimum_coverage}%;"
            f' cocov/coverage: {status.get("state")} "{status.get("description")}"'
        )

    async def permissions(self) -> str:
        """The author signs in to Cocov: user row, then Cocov's ``user-logged-in`` event."""
        author = self.fake.user(AUTHOR_LOGIN)
        async with self.services.sessions.begin() as session:
            user_id = await session.scalar(
                _INSERT_USER,
                {
                    "login": AUTHOR_LOGIN,
                    "github_id": author.id,
                    "github_token": self.sample.author_token,
                    "admin": False,
                },
            )
            await session.execute(_INSERT_EMAIL, {"user_id": user_id, "email": AUTHOR[1]})
        jobs = await self._post_event("user-logged-in", user_id)

        async def succeeded() -> bool | None:
            done = await self._scalar(_SUCCEEDED, ids=jobs)
            return True if done == len(jobs) else None

        await self.until("sign-in jobs", succeeded)
        async with self.services.engine.connect() as conn:
            rows = (await conn.execute(_MEMBERSHIPS, {"github_id": author.id})).all()
        memberships = ", ".join(f"{r.name} ({MemberLevel(r.level).name})" for r in rows)
        return f"{AUTHOR_LOGIN} signed in; member of {memberships}"

    async def _post_event(self, event: str, user_id: int) -> list[int]:
        response = await self.http.post(
            f"/v1/events/{event}",
            json={"user_id": user_id},
            headers={"Authorization": f"bearer {self.service_token}"},
        )
        if response.status_code != httpx.codes.ACCEPTED:
            raise StepFailed(f"POST /v1/events/{event} answered {response.status_code}")
        return [int(i) for i in response.json()["jobs"].values() if i is not None]

    async def author_linked(self) -> str:
        async def owner() -> str | None:
            login = await self._scalar(_COMMIT_OWNER, id=self.commit_id)
            return None if login is None else str(login)

        login = await self.until("commit author", owner)
        return f"{self.sample.sha[:SHORT_SHA]} by {AUTHOR[1]} belongs to {login}"

    async def jobs_run(self) -> list[JobRuns]:
        """Successful runs of this run's jobs by name, once none is running (or after a while)."""

        async def settled() -> bool | None:
            return None if await self._scalar(_RUNNING, since=self.since) else True

        with contextlib.suppress(StepFailed, TimeoutError):
            async with asyncio.timeout(SETTLE_TIMEOUT):
                await self.until("settled jobs", settled, watch_jobs=False)
        async with self.services.engine.connect() as conn:
            rows = (await conn.execute(_JOBS_RUN, {"since": self.since})).all()
        return [JobRuns(str(r.entrypoint), int(r.runs), int(r.last_id)) for r in rows]


def _kib(size: int | None) -> str:
    return f"{(size or 0) / 1024:.1f} KiB"


# Entry point -----------------------------------------------------------------------------------


async def run(
    services: Services,
    stores: Stores,
    sample: Sample,
    *,
    console: Console,
    listener: socket.socket,
    make_server: Callable[[Any, str, int], uvicorn.Server],
    serve: bool,
) -> bool:
    """Run the flow with a progress display; then serve the dashboard unless ``serve`` is False.

    Returns True when every step completed.
    """
    worker = Worker(services)
    worker.install_signal_handlers()
    host, port = listener.getsockname()[:2]
    server = make_server(create_app(services, expect_worker=True), host, port)
    async with httpx.AsyncClient(base_url=f"http://{host}:{port}", timeout=HTTP_TIMEOUT) as http:
        flow = Flow(services, stores, sample, worker, server, listener, http)
        try:
            ok = await _show(flow, console)
            worker_task = flow.worker_task
            serving = serve and worker_task is not None and not worker_task.done()
            await _print_summary(flow, console, links=serving)
            if serving and worker_task is not None:
                _print_dashboard(flow, console)
                await asyncio.wait({worker_task})
        finally:
            await _stop(flow)
    return ok


async def _show(flow: Flow, console: Console) -> bool:
    steps = flow.steps()
    board = Board([StepRow(title) for title, _ in steps])
    with Live(board, console=console, refresh_per_second=REFRESH_PER_SECOND):
        ok = await board.run(steps)
    console.print()
    return ok


async def _print_summary(flow: Flow, console: Console, *, links: bool) -> None:
    """The jobs this run ran, first run first, each with its dashboard page when ``links``."""
    if flow.worker_task is not None:
        runs = await flow.jobs_run()
        width = max((len(r.name) for r in runs), default=0)
        console.print(f"Jobs run: {sum(r.runs for r in runs)}")
        for r in runs:
            page = f"  {flow.dashboard_url}/jobs/{r.last_id}" if links else ""
            console.print(f"  {r.name:<{width}} ×{r.runs}{page}", highlight=False)
    console.print(f"Log: {flow.services.settings.data_dir / LOG_FILE}")


def _print_dashboard(flow: Flow, console: Console) -> None:
    console.print(
        f"Dashboard: {flow.dashboard_url}  (token: {flow.service_token})",
        highlight=False,
        soft_wrap=True,
    )
    console.print("Ctrl-C stops the dashboard, the worker, the GitHub fake and the stores.")


async def _stop(flow: Flow) -> None:
    flow.worker.stop()
    flow.server.should_exit = True
    tasks = [t for t in (flow.worker_task, flow.web_task) if t is not None]
    for outcome in await asyncio.gather(*tasks, return_exceptions=True):
        if isinstance(outcome, BaseException):
            log.error("demo task failed", error=repr(outcome))
