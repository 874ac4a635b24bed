"""The ``cocov-jobs`` command: run the service, manage the schema, enqueue and inspect jobs.

Help texts are plain text (typer's rich markup is off), so what ``--help`` prints is what the
docstrings and ``help=`` say.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import importlib.metadata
import json
import os
import signal
import socket
import sys
import traceback
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

import asyncpg
import typer
import uvicorn
from rich.table import Table

from cocov_jobs import jobs, logs
from cocov_jobs.cli.common import (
    PROBE_ADDRESS,
    WEB_ADDRESS,
    console,
    fail,
    listen,
    load,
    log,
    migrate_embedded,
    run_async,
    run_with_services,
    serve_with_worker,
    warn_if_connections_short,
    warn_if_listing_misses_cocov,
)
from cocov_jobs.cli.sidekiq import sidekiq_app
from cocov_jobs.cli.supervisor import (
    WEB_FORWARDED,
    Supervisor,
    child_argv,
    child_env,
    web_child_argv,
)
from cocov_jobs.cli.tables import (
    metrics_table,
    plain_row,
    queue_table,
    runs_table,
    workers_table,
)
from cocov_jobs.cli.tokens import has_users, tokens_app
from cocov_jobs.config import Settings
from cocov_jobs.db.migrate import upgrade
from cocov_jobs.db.session import DEFAULT_POOL_SIZE, WEB_MAX_OVERFLOW, WEB_POOL_SIZE, asyncpg_dsn
from cocov_jobs.embedded import Stores
from cocov_jobs.engine import admin, history
from cocov_jobs.engine.queue import enqueue as enqueue_job
from cocov_jobs.engine.queue import enqueued_by
from cocov_jobs.engine.registry import JobArgumentsError, UnknownJobError
from cocov_jobs.engine.schedules import run_periodic
from cocov_jobs.engine.worker import Worker
from cocov_jobs.services import Services
from cocov_jobs.times import parse_utc, utc_text
from cocov_jobs.uploads import StoredUpload, UploadError, store_upload_from_file
from cocov_jobs.web.app import create_app, create_probe_app
from cocov_jobs.web.server import make_server, server_config

app = typer.Typer(
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode=None,
    pretty_exceptions_enable=False,
    help="Cocov's background-job service: run it, manage its schema, enqueue and inspect jobs.",
)
db_app = typer.Typer(no_args_is_help=True, rich_markup_mode=None, help="Database schema.")
jobs_app = typer.Typer(
    no_args_is_help=True, rich_markup_mode=None, help="Inspect and control jobs."
)
app.add_typer(db_app, name="db")
app.add_typer(jobs_app, name="jobs")
app.add_typer(tokens_app, name="tokens")
app.add_typer(sidekiq_app, name="sidekiq")

#: The state ``jobs list`` reads from the job history rather than the queue.
FINISHED = "finished"

#: ``worker --burst`` also waits for jobs due within this many seconds: short deferrals such
#: as a busy lock (about 2 s) belong to the work being drained; backoff retries do not.
BURST_HORIZON = 5.0
#: What jobs enqueued from the command line are recorded as enqueued by.
CLI_ORIGIN = "cli"


def _version(value: bool) -> None:
    if value:
        typer.echo(f"cocov-jobs {importlib.metadata.version('cocov-jobs')}")
        raise typer.Exit()


@app.callback()
def main_options(
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_version, is_eager=True, help="Print the version and exit."
        ),
    ] = False,
) -> None:
    pass


# Processes -----------------------------------------------------------------------------------


@app.command()
def run(
    host: Annotated[str | None, typer.Option(metavar="HOST", help="Web bind address.")] = None,
    port: Annotated[int | None, typer.Option(metavar="PORT", help="Web port.")] = None,
) -> None:
    """Worker, web server and scheduler in one process (migrates the schema first)."""
    settings = load()
    warn_if_listing_misses_cocov(settings)

    address = (host or settings.web_host, port if port is not None else settings.web_port)

    async def body(services: Services, found: Stores) -> None:
        sock = listen(*address, WEB_ADDRESS)
        await upgrade(services.engine, found.database_url)
        if not await has_users(services):
            log.warning(
                "no user yet: run 'cocov-jobs tokens create' for a token to log in to the"
                " dashboard with"
            )
        worker = Worker(services)
        worker.install_signal_handlers()
        server = make_server(create_app(services, expect_worker=True), *address)
        log.info("web listening", host=address[0], port=address[1])
        await serve_with_worker(worker, server, sock)

    run_async(
        settings, body, pool_size=DEFAULT_POOL_SIZE + settings.worker_concurrency, redis="require"
    )


@app.command()
def worker(
    concurrency: Annotated[
        int | None, typer.Option(min=1, metavar="N", help="Jobs run in parallel per process.")
    ] = None,
    processes: Annotated[
        int | None,
        typer.Option(
            min=0,
            metavar="N",
            help="Worker processes under one supervisor (0: one per core).",
        ),
    ] = None,
    burst: Annotated[
        bool,
        typer.Option(
            "--burst",
            help=f"Exit once no job is running or due within {BURST_HORIZON:.0f} seconds.",
        ),
    ] = False,
    child: Annotated[bool, typer.Option("--child", hidden=True)] = False,
) -> None:
    """Run jobs and take in Cocov's Sidekiq queues (with its probe server unless --burst)."""
    settings = load()
    warn_if_listing_misses_cocov(settings)
    count = processes if processes is not None else settings.worker_processes
    count = count or os.cpu_count() or 1
    if count > 1 and not child:
        raise typer.Exit(supervise(settings, count, concurrency, burst))

    address = (settings.sidekiq_probe_address, settings.sidekiq_probe_port)

    async def body(services: Services, found: Stores) -> None:
        sock = None if burst or child else listen(*address, PROBE_ADDRESS)
        await migrate_embedded(services, found)
        if not child:
            await warn_if_connections_short(services, 1, concurrency or settings.worker_concurrency)
        w = Worker(
            services,
            concurrency=concurrency,
            burst=burst,
            burst_horizon=BURST_HORIZON,
            schedule=not child,
        )
        w.install_signal_handlers()
        server = None if sock is None else make_server(create_probe_app(services), *address)
        await serve_with_worker(w, server, sock)

    run_async(settings, body, pool_size=concurrency or settings.worker_concurrency, redis="warn")


def supervise(settings: Settings, processes: int, concurrency: int | None, burst: bool) -> int:
    """Run ``processes`` worker children (see :mod:`cocov_jobs.cli.supervisor`); exit status."""
    address = (settings.sidekiq_probe_address, settings.sidekiq_probe_port)

    async def body(services: Services, found: Stores) -> int:
        sock = None if burst else listen(*address, PROBE_ADDRESS)
        await migrate_embedded(services, found)
        await warn_if_connections_short(
            services, processes, concurrency or settings.worker_concurrency
        )
        supervisor = Supervisor(
            child_argv(concurrency, burst),
            child_env(found.database_url, found.redis_url, found.redis_cache_url),
            processes,
            burst=burst,
        )
        supervisor.install_signal_handlers()
        if sock is None:
            return await supervisor.run()
        pool = await asyncpg.create_pool(asyncpg_dsn(found.database_url), min_size=1, max_size=2)
        server = make_server(create_probe_app(services), *address)
        helpers = [
            asyncio.create_task(server.serve(sockets=[sock])),
            asyncio.create_task(run_periodic(services, lambda: pool)),
        ]
        try:
            return await supervisor.run()
        finally:
            server.should_exit = True
            helpers[1].cancel()
            await asyncio.gather(*helpers, return_exceptions=True)
            await pool.close()

    return run_async(settings, body, redis="warn")


@app.command()
def web(
    host: Annotated[str | None, typer.Option(metavar="HOST", help="Bind address.")] = None,
    port: Annotated[int | None, typer.Option(metavar="PORT", help="Port.")] = None,
    workers: Annotated[
        int | None,
        typer.Option(
            min=1,
            metavar="N",
            help="Web server processes sharing the port, under one supervisor.",
        ),
    ] = None,
    child_fd: Annotated[int | None, typer.Option("--child-fd", hidden=True)] = None,
) -> None:
    """Serve HTTP only (webhooks, uploads, API, dashboard, metrics, probes)."""
    settings = load()

    address = (host or settings.web_host, port if port is not None else settings.web_port)
    count = workers if workers is not None else settings.web_workers
    if count > 1 and child_fd is None:
        raise typer.Exit(supervise_web(settings, address, count))

    async def body(services: Services, found: Stores) -> None:
        if child_fd is None:
            sock = listen(*address, WEB_ADDRESS)
            await migrate_embedded(services, found)
        else:
            sock = socket.socket(fileno=child_fd)
        app_ = create_app(services)
        server = uvicorn.Server(server_config(app_, host=address[0], port=address[1]))
        # What start-up allocated lives as long as the process: keep it out of the collector's
        # generations, so that collections during requests stay short.
        gc.collect()
        gc.freeze()
        await server.serve(sockets=[sock])

    run_async(
        settings,
        body,
        pool_size=WEB_POOL_SIZE,
        max_overflow=WEB_MAX_OVERFLOW,
        redis="require",
    )


def supervise_web(settings: Settings, address: tuple[str, int], processes: int) -> int:
    """Run ``processes`` web children on one listening socket (see
    :mod:`cocov_jobs.cli.supervisor`); exit status."""

    async def body(services: Services, found: Stores) -> int:
        sock = listen(*address, WEB_ADDRESS)
        await migrate_embedded(services, found)
        supervisor = Supervisor(
            web_child_argv(sock.fileno()),
            child_env(found.database_url, found.redis_url, found.redis_cache_url),
            processes,
            burst=False,
            kind="web",
            pass_fds=[sock.fileno()],
            forwarded=WEB_FORWARDED,
        )
        supervisor.install_signal_handlers()
        log.info("web listening", host=address[0], port=address[1], processes=processes)
        try:
            return await supervisor.run()
        finally:
            sock.close()

    return run_async(settings, body, redis="require")


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Create or update the schema (idempotent)."""
    settings = load()

    async def body(services: Services, found: Stores) -> None:
        await upgrade(services.engine, found.database_url)

    run_async(settings, body)
    typer.echo("schema up to date")


# Jobs ----------------------------------------------------------------------------------------


def _jobs_epilog() -> str:
    """Every job with its arguments, one per line (click keeps a paragraph opened by \\b as is)."""
    definitions = sorted(jobs.registry(), key=lambda d: d.cli_name)
    width = max(len(d.usage()) for d in definitions)
    lines = [f"  {d.usage():{width}}  {d.description.replace('``', '')}" for d in definitions]
    return "\b\nJobs and their arguments:\n" + "\n".join(lines)


@app.command("enqueue", context_settings={"ignore_unknown_options": True}, epilog=_jobs_epilog())
def enqueue(
    job_name: Annotated[str, typer.Argument(metavar="JOB", hidden=True)],
    args: Annotated[list[str] | None, typer.Argument(metavar="ARGS", hidden=True)] = None,
    data_file: Annotated[
        Path | None,
        typer.Option(
            "--data-file",
            metavar="FILE",
            help="With process-coverage REPO_ID SHA: the upload (the reporter's body or the bare"
            " data map).",
        ),
    ] = None,
) -> None:
    """Enqueue job JOB with its arguments ARGS, in order, and print its id. JOB is a job's name
    as listed below, its task name (process_commit) or Ruby class name (ProcessCommitJob)."""
    try:
        definition = jobs.registry().resolve(job_name)
        if data_file is not None:
            _enqueue_upload(definition.name, args or [], data_file)
            return
        values = definition.validate_positional(args or [])
    except UnknownJobError as exc:
        raise fail(f"{exc}\nusage: cocov-jobs enqueue JOB [ARGS]...") from None
    except JobArgumentsError as exc:
        raise fail(f"{exc}\nusage: cocov-jobs enqueue {definition.usage()}") from None
    settings = load()

    async def body(services: Services, found: Stores) -> int | None:
        async with services.sessions.begin() as session, enqueued_by(CLI_ORIGIN):
            return await enqueue_job(session, definition.name, **values)

    job_id = run_async(settings, body)
    typer.echo(job_id if job_id is not None else "already queued (deduplicated)")


def _enqueue_upload(name: str, args: list[str], path: Path) -> None:
    """``enqueue process-coverage REPO_ID SHA --data-file F`` (see :mod:`cocov_jobs.uploads`)."""
    usage = "usage: cocov-jobs enqueue process-coverage REPO_ID SHA --data-file FILE"
    if name != "process_coverage" or len(args) != 2 or not args[0].isdigit():
        raise fail(f"--data-file takes a repository id and a commit sha\n{usage}")
    repository_id, sha = int(args[0]), args[1]
    settings = load()

    async def body(services: Services, found: Stores) -> StoredUpload:
        async with services.sessions.begin() as session, enqueued_by(CLI_ORIGIN):
            return await store_upload_from_file(
                session, services.redis, repository_id=repository_id, sha=sha, path=path
            )

    try:
        stored = run_async(settings, body, redis="require")
    except UploadError as exc:
        raise fail(f"{exc}\n{usage}") from None
    if stored.deferred:
        typer.echo(f"held until commit {sha} is registered (two hours at most)")
    else:
        typer.echo(stored.job_id)


def _time_option(value: str | None) -> datetime | None:
    try:
        return parse_utc(value) if value else None
    except ValueError as exc:
        raise fail(str(exc)) from None


def _history_option(metavar: str, what: str) -> Any:
    """An option of ``jobs list --state finished`` only: runs that match ``what``."""
    return typer.Option(metavar=metavar, help=f"With --state {FINISHED}: only runs {what}")


@jobs_app.command("list")
def jobs_list(
    state: Annotated[
        str | None,
        typer.Option(
            metavar="STATE",
            help=f"{', '.join(admin.STATES)}, or {FINISHED} (runs from the job history).",
        ),
    ] = None,
    job: Annotated[str | None, typer.Option(metavar="NAME", help="Only this job.")] = None,
    outcome: Annotated[
        str | None, _history_option("OUTCOME", f"that ended {', '.join(history.OUTCOMES)}.")
    ] = None,
    since: Annotated[
        str | None, _history_option("TIME", "finished at or after TIME (UTC, 2026-12-01 14:00).")
    ] = None,
    until: Annotated[str | None, _history_option("TIME", "finished before TIME (UTC).")] = None,
    argument: Annotated[
        str | None,
        _history_option("VALUE", "with an argument equal to VALUE (NAME=VALUE: that one)."),
    ] = None,
    limit: Annotated[int, typer.Option(min=1, metavar="N", help="Rows shown.")] = admin.PAGE_SIZE,
    before: Annotated[
        int | None,
        typer.Option(
            metavar="ID",
            help=f"The next page: jobs with an id below ID ({FINISHED}: runs after run ID).",
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per line.")] = False,
) -> None:
    """Jobs waiting, running and failed (id, job, arguments, state, attempts, who enqueued it,
    last error), or finished runs from the job history."""
    if state is not None and state not in (*admin.STATES, FINISHED):
        raise fail(f"unknown state {state!r}; one of {', '.join((*admin.STATES, FINISHED))}")
    if state != FINISHED and (outcome or since or until or argument):
        raise fail(f"--outcome, --since, --until and --argument need --state {FINISHED}")
    try:  # wrong names are a usage error before touching the stores
        name = jobs.registry().resolve(job).name if job else None
        runs = history.RunFilter(
            job=name,
            outcome=outcome,
            since=_time_option(since),
            until=_time_option(until),
            argument=argument,
        )
    except (UnknownJobError, ValueError) as exc:
        raise fail(str(exc)) from None
    settings = load()
    if state == FINISHED:
        finished = run_with_services(
            settings, lambda s: history.list_runs(s, runs, before=before, limit=limit)
        )
        if as_json:
            for run in finished:
                typer.echo(json.dumps(run.as_json()))
        else:
            console.print(runs_table(finished))
        return
    rows = run_with_services(
        settings,
        lambda s: admin.list_jobs(s, state=state, job=job, before=before, limit=limit),
    )
    if as_json:
        for r in rows:
            typer.echo(json.dumps(r.as_json()))
        return
    console.print(queue_table(rows))


@jobs_app.command("show")
def jobs_show(job_id: Annotated[int, typer.Argument(metavar="ID", hidden=True)]) -> None:
    """One job (ID): name, arguments, who enqueued it, state, its runs and its state changes with
    their tracebacks."""
    detail = run_with_services(load(), lambda s: admin.show_job(s, job_id))
    if detail is None:
        raise fail(f"no job {job_id}", 1)
    # Data is printed as text, never as rich markup (an argument could read "[/bold]").
    console.print(
        f"job {job_id} {detail.job or ''} {json.dumps(detail.arguments)}",
        markup=False,
        highlight=False,
    )
    facts = [f"state {detail.state}", f"enqueued by {detail.enqueued_by or 'unknown'}"]
    if detail.row is not None:
        facts += [f"attempts {detail.row.attempts}", f"due {utc_text(detail.row.execute_after)}"]
    console.print(", ".join(facts), markup=False, highlight=False)
    console.print(runs_table(detail.runs, with_job=False))
    table = Table("at", "status", "error", title="State changes")
    for h in detail.history:
        tb = h["traceback"] or {}
        error = f"{tb.get('exception_type', '')}: {tb.get('exception_message', '')}" if tb else ""
        plain_row(table, utc_text(h["created"]), h["status"], error)
    console.print(table)
    for h in detail.history:
        if h["traceback"] and h["traceback"].get("traceback"):
            console.print(f"[bold]{utc_text(h['created'])} {h['status']}[/bold]")
            console.print(h["traceback"]["traceback"], markup=False, highlight=False)


@jobs_app.command("retry")
def jobs_retry(
    job_id: Annotated[int | None, typer.Argument(metavar="[ID]", hidden=True)] = None,
    all_failed: Annotated[bool, typer.Option("--all-failed", help="Every failed job.")] = False,
) -> None:
    """Put failed job ID back in the queue (attempts reset), or make waiting job ID due now."""
    if (job_id is None) == (not all_failed):
        raise fail("give a job ID or --all-failed (not both)")
    settings = load()
    if all_failed:
        count = run_with_services(settings, admin.retry_all_failed)
        typer.echo(f"{count} failed job(s) queued again")
        return
    assert job_id is not None
    if not run_with_services(settings, lambda s: admin.retry(s, job_id)):
        raise fail(f"job {job_id} is not failed or waiting", 1)
    typer.echo(f"job {job_id} queued")


@jobs_app.command("cancel")
def jobs_cancel(job_id: Annotated[int, typer.Argument(metavar="ID", hidden=True)]) -> None:
    """Cancel job ID: a waiting one is deleted, a running one is interrupted by its worker."""
    if not run_with_services(load(), lambda s: admin.cancel(s, job_id)):
        raise fail(f"job {job_id} is not waiting or running", 1)
    typer.echo(f"job {job_id} canceled")


@app.command()
def stats() -> None:
    """Jobs by state and job, the last hour's runs, per-job metrics (runs, failures, duration and
    queue wait over the last hour, day and week), workers."""

    async def gather(services: Services) -> tuple[admin.Stats, list[history.Figures]]:
        return await admin.stats(services), await history.job_metrics(services)

    result, figures = run_with_services(load(), gather)
    table = Table("job", *admin.STATES, title="Queue")
    for name, counts in sorted(result.by_job.items()):
        table.add_row(name, *(str(counts.get(s, 0)) for s in admin.STATES))
    table.add_row("[bold]total[/bold]", *(str(result.by_state[s]) for s in admin.STATES))
    console.print(table)
    oldest = result.oldest_ready_seconds
    console.print(
        f"last hour: {result.processed_last_hour} processed, {result.failed_last_hour} failed;"
        f" oldest ready job: {f'{oldest:.1f} s' if oldest is not None else 'none'}"
    )
    console.print(metrics_table(figures))
    console.print(workers_table(result.workers))


@app.command()
def quiet() -> None:
    """Tell this host's worker processes to stop fetching jobs (SIGTSTP); they keep running."""
    host = socket.gethostname()
    pids = [w["pid"] for w in run_with_services(load(), admin.workers) if w["host"] == host]
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTSTP)
    typer.echo(f"quieted {len(pids)} worker process(es) on {host}")


@app.command("demo")
def demo_command(
    data_dir: Annotated[
        Path | None,
        typer.Option(
            metavar="DIR",
            help="Stores, clones and log of the demo [default: $COCOV_DATA_DIR/demo].",
        ),
    ] = None,
    port: Annotated[
        int | None,
        typer.Option(
            metavar="PORT",
            help="Dashboard port [default: COCOV_WEB_PORT, or a free one if taken].",
        ),
    ] = None,
    serve: Annotated[
        bool, typer.Option("--serve/--no-serve", help="Keep the dashboard running afterwards.")
    ] = True,
) -> None:
    """See it work: a GitHub fake with a sample repository, every job end to end, the dashboard."""
    # Imported here: the GitHub fake and the sample cost every other command 0.4 s of start-up.
    from cocov_jobs.cli import demo, demo_sample

    base = load()
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
                    make_server=make_server,
                    serve=serve,
                )

            completed = run_async(settings, body)
    if not completed:
        raise typer.Exit(1)


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)
    except Exception:
        # Not a failure the commands foresaw: the plain traceback (no local variables, which
        # typer's pretty one would print), secrets masked.
        sys.stderr.write(logs.redact(traceback.format_exc()))
        sys.exit(1)
