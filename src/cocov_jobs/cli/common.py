"""What every command shares: settings, stores, services, one-line failures, servers.

This is where the program is assembled: :func:`run_async` opens the services with the job
registry of :mod:`cocov_jobs.jobs`.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Literal, TypeVar

import structlog
import typer
from rich.console import Console
from sqlalchemy import text

from cocov_jobs import jobs, logs, reachability
from cocov_jobs.config import Settings, SettingsError, load_settings
from cocov_jobs.db.migrate import upgrade
from cocov_jobs.db.session import DEFAULT_MAX_OVERFLOW, DEFAULT_POOL_SIZE
from cocov_jobs.embedded import EmbeddedError, Stores, stores
from cocov_jobs.engine.worker import Worker, peak_connections
from cocov_jobs.services import Services, open_services
from cocov_jobs.sidekiq.intake import Intake
from cocov_jobs.web.server import Server

log = structlog.get_logger("cocov_jobs")
#: Tables keep whole rows when piped (rich would wrap at 80 columns).
console = Console(width=None if sys.stdout.isatty() else 200)
T = TypeVar("T")

#: Exit status for usage errors (unknown job, wrong arguments, bad configuration).
EXIT_USAGE = 2
#: What a command does when Redis does not answer at start-up (see :func:`check_stores`).
RedisCheck = Literal["require", "warn", "skip"]
#: Settings that say where the web server and a worker's probe server listen.
WEB_ADDRESS = "COCOV_WEB_HOST, COCOV_WEB_PORT"
PROBE_ADDRESS = "COCOV_SIDEKIQ_PROBE_ADDRESS, COCOV_SIDEKIQ_PROBE_PORT"


def fail(message: str, code: int = EXIT_USAGE) -> typer.Exit:
    """Print ``cocov-jobs: message`` on standard error; raise the result to exit with ``code``."""
    typer.echo(f"cocov-jobs: {message}", err=True)
    return typer.Exit(code)


def load() -> Settings:
    """The settings (a usage error when one is wrong), with logging configured."""
    try:
        settings = load_settings()
    except SettingsError as exc:
        raise fail(str(exc)) from None
    logs.configure(settings.log_format, settings.log_level, settings.secret_values())
    return settings


def warn_if_listing_misses_cocov(settings: Settings) -> None:
    """One warning line when the organization listing would land where Cocov's API never looks.

    With ``COCOV_REDIS_URL`` set and ``COCOV_REDIS_CACHE_URL`` not, the listing goes to the
    primary Redis; Cocov's API reads it from ``COCOV_REDIS_CACHE_URL`` (its own default:
    ``redis://redis:6379/1``), so its "add repository" page would not see it.
    """
    if settings.redis_url and not settings.redis_cache_url:
        log.warning(
            "COCOV_REDIS_CACHE_URL is not set: the organization repositories listing goes to "
            "COCOV_REDIS_URL, but Cocov's API reads it from COCOV_REDIS_CACHE_URL "
            "(redis://redis:6379/1 when unset); give both the same value"
        )


#: Connections a client may open on the server (superusers keep their reserve), and those open.
_CONNECTION_SLOTS = text(
    "SELECT current_setting('max_connections')::int"
    " - current_setting('superuser_reserved_connections')::int,"
    " (SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend')"
)


async def warn_if_connections_short(services: Services, processes: int, concurrency: int) -> None:
    """One warning line when ``processes`` workers may need more PostgreSQL connections than
    the server has free: jobs then wait for a slot (retried without using an attempt) and run
    late, and Cocov's API, sharing the server, may be refused too."""
    async with services.engine.connect() as conn:
        allowed, in_use = (await conn.execute(_CONNECTION_SLOTS)).one()
    need = processes * peak_connections(concurrency)
    free = allowed - in_use + 1  # this connection is closed again
    if need > free:
        log.warning(
            f"PostgreSQL may run out of connections: {processes} worker process(es) at"
            f" concurrency {concurrency} hold up to about {need}, and the server has {free} of"
            f" {allowed} free (max_connections); lower COCOV_WORKER_CONCURRENCY or"
            " COCOV_WORKER_PROCESSES, or raise max_connections"
        )


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
        raise fail(str(exc), 1) from None


@contextlib.asynccontextmanager
async def open_program(
    settings: Settings,
    found: Stores,
    *,
    pool_size: int = DEFAULT_POOL_SIZE,
    max_overflow: int = DEFAULT_MAX_OVERFLOW,
) -> AsyncIterator[Services]:
    """The services of this program: its stores and the registry of every job."""
    async with open_services(
        settings,
        registry=jobs.registry(),
        pool_size=pool_size,
        max_overflow=max_overflow,
        database_url=found.database_url,
        redis_url=found.redis_url,
        redis_cache_url=found.redis_cache_url,
    ) as services:
        yield services


async def migrate_embedded(services: Services, found: Stores) -> None:
    """Bring an embedded database to the current schema (a configured one is migrated by
    ``db upgrade`` or ``run``, under the operator's control)."""
    if "postgresql" in found.embedded:
        await upgrade(services.engine, found.database_url)


def run_async(
    settings: Settings,
    body: Callable[[Services, Stores], Awaitable[T]],
    *,
    pool_size: int = DEFAULT_POOL_SIZE,
    max_overflow: int = DEFAULT_MAX_OVERFLOW,
    redis: RedisCheck = "skip",
) -> T:
    """Start the stores, open the services, check them (:func:`check_stores`) and run ``body``
    in an event loop.

    ``pool_size``: database connections kept open (a worker needs one per job slot);
    ``max_overflow``: how many more may be opened under bursts.
    The loop is uvloop's (libuv, in C) when it is installed: the web server's request path and
    the worker's job path spend less CPU in the loop and its transports (bench/README.md).
    """

    async def main(found: Stores) -> T:
        async with open_program(
            settings, found, pool_size=pool_size, max_overflow=max_overflow
        ) as services:
            await check_stores(services, redis)
            return await body(services, found)

    with (
        _stores(settings) as found,
        asyncio.Runner(loop_factory=_loop_factory()) as runner,
    ):
        return runner.run(main(found))


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's loop when uvloop is installed, else asyncio's default."""
    try:
        import uvloop
    except ImportError:  # an installation without uvicorn's "standard" extras
        return None
    return uvloop.new_event_loop


async def check_stores(services: Services, redis: RedisCheck) -> None:
    """Exit 1 with one line when PostgreSQL does not answer; the same for Redis (the primary,
    and Sidekiq's when the intake is configured) when the command requires it (``require``), or
    a warning line when it can do without (``warn``: a worker runs the jobs that need only
    PostgreSQL and retries the others)."""
    problem = await reachability.postgresql_problem(services)
    if problem is not None:
        raise fail(problem, 1)
    if redis == "skip":
        return
    for store in reachability.redis_stores(services).values():
        problem = await reachability.redis_problem(store)
        if problem is not None and redis == "require":
            raise fail(problem, 1)
        if problem is not None:
            log.warning(problem)


def listen(host: str, port: int, names: str) -> socket.socket:
    """A socket listening on ``host:port``; exit 1 with one line naming the settings ``names``
    when the address is taken or not ours."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        return socket.create_server((host, port), family=family)
    except OSError as exc:
        reason = (os.strerror(exc.errno) if exc.errno else str(exc)).lower()
        raise fail(f"cannot listen on {host}:{port} ({names}): {reason}", 1) from None


def run_with_services(settings: Settings, action: Callable[[Services], Awaitable[T]]) -> T:
    """Run ``action(services)`` against the configured stores."""

    async def body(services: Services, found: Stores) -> T:
        return await action(services)

    return run_async(settings, body)


async def serve_with_worker(
    worker: Worker, server: Server | None, sock: socket.socket | None = None
) -> None:
    """Run ``worker``, serving HTTP (``server``, on ``sock``) meanwhile, and take in Cocov's
    Sidekiq queues when ``COCOV_SIDEKIQ_REDIS_URL`` is set: a burst worker takes in everything
    there first, any other runs the intake until the worker stops."""
    services = worker.services
    intake = Intake(services) if services.sidekiq_redis is not None else None
    if intake is not None and worker.burst:
        log.info("sidekiq intake drained", payloads=await intake.drain())
    helpers = []
    if server is not None:
        helpers.append(asyncio.create_task(server.serve(sockets=[sock] if sock else None)))
    if intake is not None and not worker.burst:
        helpers.append(asyncio.create_task(intake.run()))
    try:
        await worker.run()
    finally:
        if server is not None:
            server.should_exit = True
        if intake is not None:
            intake.stop()
        await asyncio.gather(*helpers)
