"""``cocov-jobs``: run the service, manage the schema, enqueue and inspect jobs."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Generator, Iterator
from pathlib import Path
from typing import Annotated, Any, TypeVar

import structlog
import typer
import uvicorn
from rich.console import Console
from rich.table import Table

from cocov_jobs import admin, demo, demo_sample, logs, queue
from cocov_jobs.cli_tokens import tokens_app
from cocov_jobs.config import Settings, SettingsError, load_settings
from cocov_jobs.db.migrate import upgrade
from cocov_jobs.embedded import EmbeddedError, Stores, stores
from cocov_jobs.queue import JobArgumentsError, UnknownJobError, resolve
from cocov_jobs.services import Services, open_services
from cocov_jobs.uploads import StoredUpload, UploadError, store_upload_from_file
from cocov_jobs.web.app import create_app, create_probe_app
from cocov_jobs.worker import Worker

app = typer.Typer(no_args_is_help=True, add_completion=False, help=__doc__)
db_app = typer.Typer(no_args_is_help=True, help="Database schema.")
jobs_app = typer.Typer(no_args_is_help=True, help="Inspect and control jobs.")
app.add_typer(db_app, name="db")
app.add_typer(jobs_app, name="jobs")
app.add_typer(tokens_app, name="tokens")

log = structlog.get_logger("cocov_jobs")
#: Tables keep whole rows when piped (rich would wrap at 80 columns).
console = Console(width=None if sys.stdout.isatty() else 200)
T = TypeVar("T")

#: Exit status for usage errors (unknown job, wrong arguments, bad configuration).
EXIT_USAGE = 2
#: ``worker --burst`` also waits for jobs due within this many seconds: short deferrals such
#: as a busy lock (about 2 s) belong to the work being drained; backoff retries do not.
BURST_HORIZON = 5.0


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
        bool,
        typer.Option(
            "--burst", help="Exit once no job is running or due within BURST_HORIZON seconds."
        ),
    ] = False,
) -> None:
    """Run jobs (with Cocov's Sidekiq probe server unless --burst)."""
    settings = _settings()

    async def body(services: Services, found: Stores) -> None:
        if found.embedded:
            await upgrade(services.engine, found.database_url)
        w = Worker(services, concurrency=concurrency, burst=burst, burst_horizon=BURST_HORIZON)
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
    data_file: Annotated[
        Path | None,
        typer.Option(
            "--data-file",
            help="process-coverage REPO_ID SHA: the upload (reporter body or bare data map).",
        ),
    ] = None,
) -> None:
    """Enqueue a job and print its id."""
    try:
        definition = resolve(job_name)
        if data_file is not None:
            _enqueue_upload(definition.name, args or [], data_file)
            return
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


def _enqueue_upload(name: str, args: list[str], path: Path) -> None:
    """``enqueue process-coverage REPO_ID SHA --data-file F`` (see :mod:`cocov_jobs.uploads`)."""
    usage = "usage: cocov-jobs enqueue process-coverage REPO_ID SHA --data-file FILE"
    if name != "process_coverage" or len(args) != 2 or not args[0].isdigit():
        raise _fail(f"--data-file takes a repository id and a commit sha\n{usage}")
    repository_id, sha = int(args[0]), args[1]
    settings = _settings()

    async def body(services: Services, found: Stores) -> StoredUpload:
        async with services.sessions.begin() as session:
            return await store_upload_from_file(
                session, services.redis, repository_id=repository_id, sha=sha, path=path
            )

    try:
        stored = _run_async(settings, body)
    except UploadError as exc:
        raise _fail(f"{exc}\n{usage}") from None
    if stored.deferred:
        typer.echo(f"held until commit {sha} is registered (two hours at most)")
    else:
        typer.echo(stored.job_id)


def _admin(settings: Settings, action: Callable[[Services], Awaitable[T]]) -> T:
    """Run one :mod:`cocov_jobs.admin` call against the configured stores."""

    async def body(services: Services, found: Stores) -> T:
        return await action(services)

    return _run_async(settings, body)


@jobs_app.command("list")
def jobs_list(
    state: Annotated[str | None, typer.Option(help=", ".join(admin.STATES) + ".")] = None,
    job: Annotated[str | None, typer.Option(help="Only this job.")] = None,
    limit: Annotated[int, typer.Option(min=1)] = admin.PAGE_SIZE,
    before: Annotated[int | None, typer.Option(help="Only ids below this (next page).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="JSON lines.")] = False,
) -> None:
    """Jobs waiting, running and failed: id, job, arguments, state, attempts, last error."""
    if state is not None and state not in admin.STATES:
        raise _fail(f"unknown state {state!r}; one of {', '.join(admin.STATES)}")
    if job:
        resolve(job)  # unknown names are a usage error before touching the stores
    settings = _settings()
    rows = _admin(
        settings,
        lambda s: admin.list_jobs(s, state=state, job=job, before=before, limit=limit),
    )
    if as_json:
        for r in rows:
            typer.echo(json.dumps(r.as_json()))
        return
    table = Table("id", "job", "arguments", "state", "attempts", "worker", "last error")
    for r in rows:
        table.add_row(
            str(r.id),
            r.job,
            json.dumps(r.arguments),
            r.state,
            str(r.attempts),
            r.worker or "",
            r.error_text[:120],
        )
    console.print(table)


@jobs_app.command("show")
def jobs_show(job_id: Annotated[int, typer.Argument(metavar="ID")]) -> None:
    """One job: arguments, state, attempts and its whole history with tracebacks."""
    detail = _admin(_settings(), lambda s: admin.show_job(s, job_id))
    if detail is None:
        raise _fail(f"no job {job_id}", 1)
    if detail.row is not None:
        r = detail.row
        console.print(f"[bold]job {r.id}[/bold] {r.job} {json.dumps(r.arguments)}")
        console.print(f"state {r.state}, attempts {r.attempts}, due {r.execute_after:%c}")
    else:
        console.print(f"[bold]job {job_id}[/bold] finished (history only)")
    table = Table("at", "status", "error")
    for h in detail.history:
        tb = h["traceback"] or {}
        error = f"{tb.get('exception_type', '')}: {tb.get('exception_message', '')}" if tb else ""
        table.add_row(f"{h['created']:%Y-%m-%d %H:%M:%S}", h["status"], error)
    console.print(table)
    for h in detail.history:
        if h["traceback"] and h["traceback"].get("traceback"):
            console.print(f"[bold]{h['created']:%H:%M:%S} {h['status']}[/bold]")
            console.print(h["traceback"]["traceback"], markup=False, highlight=False)


@jobs_app.command("retry")
def jobs_retry(
    job_id: Annotated[int | None, typer.Argument(metavar="[ID]")] = None,
    all_failed: Annotated[bool, typer.Option("--all-failed", help="Every failed job.")] = False,
) -> None:
    """Put a failed job back in the queue (attempts reset), or make a waiting one due now."""
    if (job_id is None) == (not all_failed):
        raise _fail("give a job ID or --all-failed (not both)")
    settings = _settings()
    if all_failed:
        count = _admin(settings, admin.retry_all_failed)
        typer.echo(f"{count} failed job(s) queued again")
        return
    assert job_id is not None
    if not _admin(settings, lambda s: admin.retry(s, job_id)):
        raise _fail(f"job {job_id} is not failed or waiting", 1)
    typer.echo(f"job {job_id} queued")


@jobs_app.command("cancel")
def jobs_cancel(job_id: Annotated[int, typer.Argument(metavar="ID")]) -> None:
    """Cancel a waiting job (deleted) or a running one (its worker interrupts it)."""
    if not _admin(_settings(), lambda s: admin.cancel(s, job_id)):
        raise _fail(f"job {job_id} is not waiting or running", 1)
    typer.echo(f"job {job_id} canceled")


@app.command()
def stats() -> None:
    """Jobs by state and job, runs of the last hour, workers."""
    result = _admin(_settings(), admin.stats)
    table = Table("job", *admin.STATES)
    for name, counts in sorted(result.by_job.items()):
        table.add_row(name, *(str(counts.get(s, 0)) for s in admin.STATES))
    table.add_row("[bold]total[/bold]", *(str(result.by_state[s]) for s in admin.STATES))
    console.print(table)
    oldest = result.oldest_ready_seconds
    console.print(
        f"last hour: {result.processed_last_hour} processed, {result.failed_last_hour} failed;"
        f" oldest ready job: {f'{oldest:.1f} s' if oldest is not None else 'none'}"
    )
    workers = Table("host", "pid", "concurrency", "running", "quiet", "heartbeat", "RSS MiB")
    for w in result.workers:
        workers.add_row(
            w["host"],
            str(w["pid"]),
            str(w["concurrency"]),
            str(w["running"]),
            "yes" if w["quiet"] else "",
            f"{w['heartbeat_at']:%H:%M:%S}" + ("" if w["alive"] else " (stale)"),
            f"{w['rss_bytes'] / 2**20:.0f}",
        )
    console.print(workers)


@app.command()
def quiet() -> None:
    """Tell this host's worker processes to stop fetching jobs (SIGTSTP); they keep running."""
    host = socket.gethostname()
    pids = [w["pid"] for w in _admin(_settings(), admin.workers) if w["host"] == host]
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTSTP)
    typer.echo(f"quieted {len(pids)} worker process(es) on {host}")


@app.command("demo")
def demo_command(
    data_dir: Annotated[
        Path | None,
        typer.Option(help="Stores, clones and log of the demo [default: $COCOV_DATA_DIR/demo]."),
    ] = None,
    port: Annotated[
        int | None,
        typer.Option(help="Dashboard port [default: COCOV_WEB_PORT, or a free one if taken]."),
    ] = None,
    serve: Annotated[
        bool, typer.Option("--serve/--no-serve", help="Keep the dashboard running afterwards.")
    ] = True,
) -> None:
    """See it work: a GitHub fake with a sample repository, every job end to end, the dashboard."""
    base = _settings()
    directory = demo.demo_dir(base, data_dir)
    console.print(f"Starting the demo in {directory.resolve()} …")
    demo.log_to_file(directory / demo.LOG_FILE)
    with demo_sample.sample_github() as sample:
        settings = demo.demo_settings(base, sample.fake, directory)
        default_port = base.web_port if serve else 0
        with demo.listen(port, default_port) as listener:

            async def body(services: Services, found: Stores) -> bool:
                return await demo.run(
                    services,
                    found,
                    sample,
                    console=console,
                    listener=listener,
                    make_server=_server,
                    serve=serve,
                )

            completed = _run_async(settings, body)
    if not completed:
        raise typer.Exit(1)


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)
