"""``cocov-jobs``: run the service, manage the schema, enqueue and inspect jobs."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Generator, Iterator
from typing import Annotated, Any, TypeVar

import structlog
import typer
import uvicorn
from rich.console import Console
from rich.table import Table

from cocov_jobs import logs, queue
from cocov_jobs.config import Settings, SettingsError, load_settings
from cocov_jobs.db.migrate import upgrade
from cocov_jobs.embedded import EmbeddedError, Stores, stores
from cocov_jobs.queue import JobArgumentsError, UnknownJobError, resolve
from cocov_jobs.services import Services, open_services
from cocov_jobs.web.app import create_app, create_probe_app
from cocov_jobs.worker import Worker

app = typer.Typer(no_args_is_help=True, add_completion=False, help=__doc__)
db_app = typer.Typer(no_args_is_help=True, help="Database schema.")
jobs_app = typer.Typer(no_args_is_help=True, help="Inspect and control jobs.")
app.add_typer(db_app, name="db")
app.add_typer(jobs_app, name="jobs")

log = structlog.get_logger("cocov_jobs")
#: Tables keep whole rows when piped (rich would wrap at 80 columns).
console = Console(width=None if sys.stdout.isatty() else 200)
T = TypeVar("T")

#: Exit status for usage errors (unknown job, wrong arguments, bad configuration).
EXIT_USAGE = 2


def _fail(message: str, code: int = EXIT_USAGE) -> typer.Exit:
    typer.echo(f"cocov-jobs: {message}", err=True)
    return typer.Exit(code)


def _settings() -> Settings:
    try:
        settings = load_settings()
    except SettingsError as exc:
        raise _fail(str(exc)) from None
    logs.configure(settings.log_format, settings.log_level)
    return settings


@contextlib.contextmanager
def _stores(settings: Settings) -> Iterator[Stores]:
    try:
        with stores(
            database_url=settings.configured_database_url,
            redis_url=settings.redis_url,
            redis_cache_url=settings.redis_cache_url,
            data_dir=settings.data_dir,
        ) as found:
            if found.embedded:
                log.warning(
                    "using embedded stores",
                    embedded=found.embedded,
                    data_dir=str(settings.data_dir.resolve()),
                )
            yield found
    except EmbeddedError as exc:
        raise _fail(str(exc), 1) from None


@contextlib.asynccontextmanager
async def _services(settings: Settings, found: Stores) -> AsyncIterator[Services]:
    async with open_services(
        settings,
        database_url=found.database_url,
        redis_url=found.redis_url,
        redis_cache_url=found.redis_cache_url,
    ) as services:
        yield services


def _run_async(settings: Settings, body: Callable[[Services, Stores], Awaitable[T]]) -> T:
    """Start the stores, open the services and run ``body`` in an event loop."""

    async def main(found: Stores) -> T:
        async with _services(settings, found) as services:
            return await body(services, found)

    with _stores(settings) as found:
        return asyncio.run(main(found))


class _Server(uvicorn.Server):
    """uvicorn without its own signal handlers: the worker owns SIGTERM/SIGINT."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


def _server(app_: Any, host: str, port: int) -> _Server:
    return _Server(uvicorn.Config(app_, host=host, port=port, log_config=None, lifespan="off"))


async def _serve_with_worker(worker: Worker, server: _Server) -> None:
    web = asyncio.create_task(server.serve())
    try:
        await worker.run()
    finally:
        server.should_exit = True
        await web


# Processes -----------------------------------------------------------------------------------


@app.command()
def run(
    host: Annotated[str | None, typer.Option(help="Web bind address.")] = None,
    port: Annotated[int | None, typer.Option(help="Web port.")] = None,
) -> None:
    """Worker, web server and scheduler in one process (migrates the schema first)."""
    settings = _settings()

    async def body(services: Services, found: Stores) -> None:
        await upgrade(services.engine, found.database_url)
        worker = Worker(services)
        worker.install_signal_handlers()
        server = _server(
            create_app(services, expect_worker=True),
            host or settings.web_host,
            port if port is not None else settings.web_port,
        )
        log.info("web listening", host=server.config.host, port=server.config.port)
        await _serve_with_worker(worker, server)

    _run_async(settings, body)


@app.command()
def worker(
    concurrency: Annotated[int | None, typer.Option(min=1, help="Parallel jobs.")] = None,
    burst: Annotated[
        bool, typer.Option("--burst", help="Exit once no job is ready or running.")
    ] = False,
) -> None:
    """Run jobs (with Cocov's Sidekiq probe server unless --burst)."""
    settings = _settings()

    async def body(services: Services, found: Stores) -> None:
        if found.embedded:
            await upgrade(services.engine, found.database_url)
        w = Worker(services, concurrency=concurrency, burst=burst)
        w.install_signal_handlers()
        if burst:
            await w.run()
            return
        probes = _server(
            create_probe_app(services), settings.sidekiq_probe_address, settings.sidekiq_probe_port
        )
        await _serve_with_worker(w, probes)

    _run_async(settings, body)


@app.command()
def web(
    host: Annotated[str | None, typer.Option(help="Bind address.")] = None,
    port: Annotated[int | None, typer.Option(help="Port.")] = None,
) -> None:
    """Serve HTTP only (webhooks, uploads, API, probes)."""
    settings = _settings()

    async def body(services: Services, found: Stores) -> None:
        if found.embedded:
            await upgrade(services.engine, found.database_url)
        server = uvicorn.Server(
            uvicorn.Config(
                create_app(services),
                host=host or settings.web_host,
                port=port if port is not None else settings.web_port,
                log_config=None,
                lifespan="off",
            )
        )
        await server.serve()

    _run_async(settings, body)


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Create or update the schema (idempotent)."""
    settings = _settings()

    async def body(services: Services, found: Stores) -> None:
        await upgrade(services.engine, found.database_url)

    _run_async(settings, body)
    typer.echo("schema up to date")


# Jobs ----------------------------------------------------------------------------------------


@app.command("enqueue", context_settings={"ignore_unknown_options": True})
def enqueue(
    job_name: Annotated[str, typer.Argument(metavar="JOB", help="Job name, e.g. process-commit.")],
    args: Annotated[list[str] | None, typer.Argument(metavar="[ARGS]...")] = None,
) -> None:
    """Enqueue a job and print its id."""
    try:
        definition = resolve(job_name)
        values = definition.validate_positional(args or [])
    except UnknownJobError as exc:
        raise _fail(f"{exc}\nusage: cocov-jobs enqueue JOB [ARGS]...") from None
    except JobArgumentsError as exc:
        raise _fail(f"{exc}\nusage: cocov-jobs enqueue {definition.usage()}") from None
    settings = _settings()

    async def body(services: Services, found: Stores) -> int | None:
        async with services.sessions.begin() as session:
            return await queue.enqueue(session, definition.name, **values)

    job_id = _run_async(settings, body)
    typer.echo(job_id if job_id is not None else "already queued (deduplicated)")


_LIST_JOBS = """
SELECT q.id, q.entrypoint, q.payload, q.status::text AS status, q.attempts,
       q.execute_after, q.execute_after > now() AS waiting,
       (SELECT l.traceback->>'exception_message' FROM pgqueuer_log l
         WHERE l.job_id = q.id AND l.traceback IS NOT NULL ORDER BY l.id DESC LIMIT 1) AS error
FROM pgqueuer q
WHERE ($1::text IS NULL OR q.entrypoint = $1)
ORDER BY q.id DESC
LIMIT $2
"""


def _state(row: dict[str, Any]) -> str:
    status = str(row["status"])
    if status == "picked":
        return "running"
    if status == "queued":
        if row["waiting"]:
            return "retrying" if row["attempts"] else "scheduled"
        return "queued"
    return status


@jobs_app.command("list")
def jobs_list(
    state: Annotated[
        str | None, typer.Option(help="queued, scheduled, retrying, running or failed.")
    ] = None,
    job: Annotated[str | None, typer.Option(help="Only this job.")] = None,
    limit: Annotated[int, typer.Option(min=1)] = 50,
    as_json: Annotated[bool, typer.Option("--json", help="JSON lines.")] = False,
) -> None:
    """Jobs waiting, running and failed: id, job, arguments, state, attempts, last error."""
    entrypoint = resolve(job).name if job else None
    settings = _settings()

    async def body(services: Services, found: Stores) -> list[dict[str, Any]]:
        async with services.engine.connect() as conn:
            raw = await conn.get_raw_connection()
            rows = await raw.driver_connection.fetch(_LIST_JOBS, entrypoint, limit)  # type: ignore[union-attr]
        return [dict(r) for r in rows]

    rows = [r for r in _run_async(settings, body) if state is None or _state(r) == state]
    if as_json:
        for r in rows:
            typer.echo(
                json.dumps(
                    {
                        "id": r["id"],
                        "job": r["entrypoint"],
                        "arguments": json.loads(r["payload"] or b"{}"),
                        "state": _state(r),
                        "attempts": r["attempts"],
                        "error": r["error"],
                    }
                )
            )
        return
    table = Table("id", "job", "arguments", "state", "attempts", "last error")
    for r in rows:
        table.add_row(
            str(r["id"]),
            r["entrypoint"],
            (r["payload"] or b"").decode(),
            _state(r),
            str(r["attempts"]),
            (r["error"] or "")[:120],
        )
    console.print(table)


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)
