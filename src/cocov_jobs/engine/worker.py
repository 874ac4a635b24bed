"""Worker process: runs the registry's jobs from PgQueuer, with the retry policy of
:mod:`cocov_jobs.engine.retry`.

Shutdown, as Sidekiq documents it
=================================

1. ``SIGTSTP`` (or :meth:`Worker.quiet`): stop fetching new jobs; running jobs finish. The
   process stays up until it is told to stop.
2. ``SIGTERM`` / ``SIGINT``: stop fetching, then wait up to ``COCOV_SHUTDOWN_TIMEOUT`` (25 s)
   for running jobs. Jobs still running after that are interrupted and put back in the queue
   at once (not counted as an attempt), so another worker runs them again.
3. ``SIGKILL`` or a crash: nothing runs; the jobs' heartbeats stop and any worker picks them
   again after ``COCOV_HEARTBEAT_TIMEOUT`` (30 s).

Each worker keeps a row in ``cocov_jobs_workers`` (host, pid, concurrency, RSS, heartbeat every
:data:`WORKER_HEARTBEAT_INTERVAL` seconds) for the readiness probe and the dashboard. A killed
worker's row stays, shown as dead, until a worker starts after :data:`DEAD_WORKER_SECONDS` of
silence and removes it: restarts (the supervisor's, a crash loop's) never pile rows up.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import json
import os
import resource
import signal
import socket
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import structlog
from pgqueuer.adapters.persistence.composer import ComposedQuery
from pgqueuer.adapters.persistence.qb import QueryQueueBuilder
from pgqueuer.db import AsyncpgPoolDriver
from pgqueuer.models import Job, TracebackRecord
from pgqueuer.qm import QueueManager
from pgqueuer.queries import Queries
from pgqueuer.types import JOB_STATUS

from cocov_jobs.db.session import asyncpg_dsn
from cocov_jobs.engine import history, metrics
from cocov_jobs.engine.context import JobContext, RetryJob, execute, keep_connection_state
from cocov_jobs.engine.locks import Locks
from cocov_jobs.engine.retry import INTERRUPTED, PermanentError
from cocov_jobs.engine.schedules import run_periodic
from cocov_jobs.logs import Redactor
from cocov_jobs.services import Services

log = structlog.get_logger(__name__)

#: Seconds between two updates of this worker's row in ``cocov_jobs_workers``.
WORKER_HEARTBEAT_INTERVAL = 5.0
#: Seconds between two checks of the queue in ``--burst`` mode.
BURST_POLL_INTERVAL = 0.1
#: Seconds before reconnecting after PgQueuer's loop failed (doubling, up to the max, while
#: PostgreSQL refuses connections).
RECONNECT_DELAY = 0.5
RECONNECT_MAX_DELAY = 10.0
#: Session settings of the worker's own connections: PgQueuer's bookkeeping (pick, heartbeat,
#: finish, retry, schedules), this worker's row, and the jobs' advisory locks. Job
#: data never goes through it (jobs write through ``services.sessions``, enqueues included).
#: ``synchronous_commit = off``: these commits do not wait for the WAL flush (measured on the
#: 2-core bench machine: 1.1-2x the no-op drain rate, more under load; bench/README.md). Only a
#: PostgreSQL crash can lose them, and only the last ~0.6 s (3 x ``wal_writer_delay``) not yet
#: covered by a later synchronous commit; a lost pick or finish puts the job back (queued, or
#: picked with a stale heartbeat), so it runs again: the at-least-once contract jobs already
#: have for a killed worker.
WORKER_POOL_SETTINGS = {
    "application_name": "cocov-jobs-worker",
    "timezone": "UTC",
    "synchronous_commit": "off",
}

#: Connections of the worker's pool: PgQueuer's listener, pick, finish and heartbeat, re-queues,
#: this worker's row and heartbeat, the burst watcher and the scheduler. Each holds one only for
#: a statement (the listener excepted), so a burst of re-queues waits for one briefly.
WORKER_POOL_SIZE = 8

_REQUEUE_NOT_COUNTED = """
WITH retry AS (
    UPDATE pgqueuer
    SET status = 'queued', execute_after = NOW() + $2::interval, updated = NOW(),
        queue_manager_id = NULL
    WHERE id = $1::bigint
    RETURNING id, entrypoint, priority
)
INSERT INTO pgqueuer_log (job_id, status, entrypoint, priority, traceback)
SELECT id, 'queued', entrypoint, priority, $3::jsonb FROM retry
"""

_BUSY_OR_READY = """
SELECT count(*) FROM pgqueuer
WHERE (status = 'queued' AND execute_after <= NOW() + $1::interval) OR status = 'picked'
"""


#: Seconds after its last heartbeat that a dead worker's row is removed by the next worker to start.
DEAD_WORKER_SECONDS = 3600


@functools.lru_cache(maxsize=8)
def _recording(statement: str) -> str:
    return history.recording_runs(statement)


def _traceback(record: TracebackRecord | None) -> str | None:
    """PgQueuer's traceback record as the JSON its log table stores (no NUL: see
    :func:`~cocov_jobs.engine.history.storable`)."""
    return history.storable(record.model_dump_json()) if record is not None else None


#: How PgQueuer's pick statement starts setting a picked job's columns.
_PICK = "SET status = 'picked',"


@functools.lru_cache(maxsize=8)
def _releasing_dedupe(statement: str) -> str:
    """PgQueuer's pick ``statement`` also releasing the picked jobs' dedupe keys."""
    if _PICK not in statement:
        raise RuntimeError("PgQueuer's pick statement changed: the dedupe release cannot be added")
    return statement.replace(_PICK, f"{_PICK} dedupe_key = NULL,")


@dataclasses.dataclass
class _QueueBuilder(QueryQueueBuilder):
    """PgQueuer's statements, with a job's dedupe key released by the statement that picks it
    (docs/architecture.md §4.6): a request arriving once a job is taken queues exactly one more
    run, which sees everything this one will. Released there, it costs neither a statement nor
    another version of the job's row."""

    def build_dequeue_query(self, **kwargs: Any) -> ComposedQuery:
        query = super().build_dequeue_query(**kwargs)
        return ComposedQuery(sql=_releasing_dedupe(query.sql), args=query.args)


#: Errors of the history's part of a statement (a value PostgreSQL refuses, the table missing on
#: a database not yet upgraded): the statement is sent again without it, so the job history can
#: never hold up the queue. Connection errors are not among them (PgQueuer retries those).
_HISTORY_ERRORS = (
    asyncpg.DataError,
    asyncpg.IntegrityConstraintViolationError,
    asyncpg.SyntaxOrAccessError,
)


@dataclasses.dataclass
class _Queries(Queries):
    """PgQueuer's queries, releasing dedupe keys at the pick (:class:`_QueueBuilder`), recording
    each run in the job history (:mod:`~cocov_jobs.engine.history`) in the statement that ends
    it, with re-queues that do not use up an attempt, and every error they store masked by
    ``redact`` (no secret in ``pgqueuer_log.traceback`` nor in a run's error;
    :mod:`cocov_jobs.logs`).

    ``runs`` holds this worker's runs by job id: the worker adds a run when it starts and fills
    in its end; PgQueuer passes us only the job.
    """

    qbq: QueryQueueBuilder = dataclasses.field(default_factory=_QueueBuilder)
    runs: dict[int, history.Run] = dataclasses.field(default_factory=dict)
    worker: str = ""
    redact: Redactor = dataclasses.field(default_factory=Redactor)

    def _masked(self, record: TracebackRecord | None) -> TracebackRecord | None:
        """``record`` with its message, traceback and context redacted (both stores use it)."""
        if record is None:
            return None
        context = record.additional_context
        return record.model_copy(
            update={
                "exception_message": self.redact(record.exception_message),
                "traceback": self.redact(record.traceback),
                "additional_context": (
                    {key: self.redact(str(value)) for key, value in context.items()}
                    if context is not None
                    else None
                ),
            }
        )

    def _run(self, job: Job) -> history.Run:
        # A job canceled before its run started has no run yet: it ends now, here.
        return self.runs.get(job.id) or history.Run(job, self.worker)

    async def _execute_recording(
        self, statement: str, args: list[Any], runs: list[tuple[Any, ...]]
    ) -> None:
        """``statement`` with ``args``, recording ``runs`` in it; without them on a
        :data:`_HISTORY_ERRORS` error (logged)."""
        try:
            await self.driver.execute(_recording(statement), *args, *history.run_parameters(runs))
        except _HISTORY_ERRORS as exc:
            log.warning("job runs not recorded in the history", runs=len(runs), error=repr(exc))
            await self.driver.execute(statement, *args)

    async def log_jobs(
        self, job_status: list[tuple[Job, JOB_STATUS, TracebackRecord | None]]
    ) -> None:
        """PgQueuer's finish (batched), with the runs it ends."""
        await self._execute_recording(
            self.qbq.build_log_job_query(),
            [
                [job.id for job, _, _ in job_status],
                [status for _, status, _ in job_status],
                [_traceback(self._masked(tb)) for _, _, tb in job_status],
            ],
            [
                self._run(job).row(history.FINAL_OUTCOMES[status], self.redact)
                for job, status, _ in job_status
            ],
        )
        for job, _, _ in job_status:
            self.runs.pop(job.id, None)

    async def retry_job(
        self, job: Job, delay: timedelta, traceback_record: TracebackRecord | None
    ) -> None:
        """Re-queue ``job`` with its run; when PostgreSQL cannot be reached, leave it picked.

        PgQueuer holds a job as failed when this raises, which would end a job that only
        needed a retry. Left picked, its heartbeat goes stale and any worker picks it again
        (at least once, as for a killed worker).
        """
        run = self._run(job)
        statement = self.qbq.build_retry_job_query() if run.counted else _REQUEUE_NOT_COUNTED
        try:
            await self._execute_recording(
                statement,
                [job.id, delay, _traceback(self._masked(traceback_record))],
                [run.row(run.outcome or "retried", self.redact)],
            )
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            log.warning(
                "retry not recorded; the job will be picked again", job_id=job.id, error=repr(exc)
            )
        finally:
            self.runs.pop(job.id, None)


def connect_locks(database_url: str) -> Locks:
    """The advisory locks of a worker on ``database_url`` (on a connection with the settings of
    the worker's pool)."""
    dsn = asyncpg_dsn(database_url)
    return Locks(functools.partial(asyncpg.connect, dsn, server_settings=WORKER_POOL_SETTINGS))


def peak_connections(concurrency: int) -> int:
    """PostgreSQL connections one worker process may hold: a session per job slot, its locks'
    connection and its pool (peaks measured draining 10,000 jobs: 15 at concurrency 10, 45 at
    40)."""
    return concurrency + 1 + WORKER_POOL_SIZE


class Worker:
    """Runs registered jobs with ``concurrency`` slots until stopped (or drained, in burst)."""

    def __init__(
        self,
        services: Services,
        *,
        concurrency: int | None = None,
        burst: bool = False,
        burst_horizon: float = 0.0,
        schedule: bool = True,
    ) -> None:
        """``burst``: stop once no job is running or due within ``burst_horizon`` seconds;
        ``schedule``: also enqueue the periodic jobs when due (never in burst mode)."""
        settings = services.settings
        self.services = services
        self.concurrency = concurrency or settings.worker_concurrency
        self.burst = burst
        self.burst_horizon = timedelta(seconds=burst_horizon)
        self.schedule = schedule and not burst
        self.shutdown_timeout = settings.shutdown_timeout
        self.heartbeat_timeout = timedelta(seconds=settings.heartbeat_timeout)
        self.id = str(uuid.uuid4())
        #: How the job history names this worker.
        self.label = f"{socket.gethostname()}:{os.getpid()}"
        self._stop = asyncio.Event()
        self._quiet = False
        self._interrupting = False
        self._running: dict[int, asyncio.Task[None]] = {}
        # PgQueuer may hand over up to 2 × batch jobs; at most ``concurrency`` of them run.
        self._slots = asyncio.Semaphore(self.concurrency)
        self._pool: asyncpg.Pool | None = None
        self._qm: QueueManager | None = None
        #: This worker's runs by job id, until their end is recorded (see ``_Queries``).
        self._runs: dict[int, history.Run] = {}
        self._redact = Redactor(settings.secret_values())
        self._locks = connect_locks(services.database_url)

    # Control -----------------------------------------------------------------------------------

    def stop(self) -> None:
        """Stop fetching, finish running jobs within the shutdown timeout, then return."""
        self._stop.set()
        if self._qm is not None:
            self._qm.shutdown.set()

    def quiet(self) -> None:
        """Stop fetching new jobs; keep running until :meth:`stop`."""
        self._quiet = True
        if self._qm is not None:
            self._qm.shutdown.set()

    def install_signal_handlers(self) -> None:
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, self.stop)
        loop.add_signal_handler(signal.SIGINT, self.stop)
        loop.add_signal_handler(signal.SIGTSTP, self.quiet)

    @property
    def running_jobs(self) -> list[int]:
        return list(self._running)

    # Main loop ---------------------------------------------------------------------------------

    async def run(self) -> None:
        self._pool = await self._create_pool()
        qm = self._queue_manager()
        self.id = str(qm.queue_manager_id)  # running jobs name their worker by this id
        await self._register()
        log.info("worker started", worker_id=self.id, concurrency=self.concurrency)
        qm_task = asyncio.create_task(self._run_queue(qm))
        helpers = [asyncio.create_task(self._heartbeat())]
        if self.burst:
            helpers.append(asyncio.create_task(self._watch_burst()))
        if self.schedule:
            # On the current pool, which _run_queue replaces after PostgreSQL went away.
            helpers.append(asyncio.create_task(run_periodic(self.services, lambda: self._pool)))
        try:
            await self._stop.wait()
            self.stop()  # the queue manager may have been replaced since stop() was called
            await self._drain(qm_task)
        finally:
            for task in helpers:
                task.cancel()
            await asyncio.gather(*helpers, return_exceptions=True)
            if not qm_task.done():
                qm_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await qm_task
            await self._unregister()
            await self._locks.close()
            await self._pool.close()
            log.info("worker stopped", worker_id=self.id)

    async def _create_pool(self) -> asyncpg.Pool:
        return await asyncpg.create_pool(
            asyncpg_dsn(self.services.database_url),
            min_size=2,
            max_size=WORKER_POOL_SIZE,
            server_settings=WORKER_POOL_SETTINGS,
            reset=keep_connection_state,
        )

    def _queue_manager(self) -> QueueManager:
        """A PgQueuer queue manager on our pool with every job registered."""
        assert self._pool is not None
        qm = QueueManager(
            _Queries(
                AsyncpgPoolDriver(self._pool),
                runs=self._runs,
                worker=self.label,
                redact=self._redact,
            )
        )
        for definition in self.services.registry:
            qm.entrypoint(definition.name, on_failure="hold", accepts_context=False)(self._entry)
        self._qm = qm
        return qm

    async def _run_queue(self, qm: QueueManager) -> None:
        """Run PgQueuer's loop; when it fails (PostgreSQL restarted or unreachable), replace the
        pool and start a new loop, until the worker is stopped or quieted.

        The old pool is terminated: after a server restart its connections are dead, and a
        failed loop can leave some of them acquired for good (its listener connection), which
        would starve the new loop. Jobs the failed loop held are picked again (by any worker)
        once their heartbeat is stale.
        """
        batch_size = max(1, self.concurrency // 2)
        while True:
            try:
                await qm.run(
                    batch_size=batch_size,
                    max_concurrent_tasks=max(self.concurrency, 2 * batch_size),
                    heartbeat_timeout=self.heartbeat_timeout,
                    dequeue_timeout=timedelta(seconds=1),
                )
                return
            except Exception as exc:
                if self._stop.is_set() or self._quiet:
                    raise
                log.warning("job queue loop failed; reconnecting", error=repr(exc))
            if not await self._renew_pool():
                return
            # A new id: PgQueuer counts the jobs still marked picked by the old one against
            # this worker's capacity, which would block every dequeue.
            qm = self._queue_manager()
            await self._rename(str(qm.queue_manager_id))

    async def _renew_pool(self) -> bool:
        """Open a new pool (retrying with backoff) and terminate the old one; False if stopped."""
        delay = RECONNECT_DELAY
        while True:
            await asyncio.sleep(delay)
            if self._stop.is_set() or self._quiet:
                return False
            try:
                fresh = await self._create_pool()
            except (OSError, asyncpg.PostgresError) as exc:
                log.warning("reconnecting to PostgreSQL failed", error=repr(exc), delay=delay)
                delay = min(delay * 2, RECONNECT_MAX_DELAY)
                continue
            old, self._pool = self._pool, fresh
            if old is not None:
                old.terminate()
            return True

    async def _drain(self, qm_task: asyncio.Task[None]) -> None:
        """Wait for running jobs; after the timeout, interrupt and re-queue them."""
        done, _ = await asyncio.wait({qm_task}, timeout=self.shutdown_timeout)
        if done:
            return
        log.warning("shutdown timeout: re-queueing running jobs", jobs=self.running_jobs)
        self._interrupting = True
        for task in list(self._running.values()):
            task.cancel()
        await asyncio.wait({qm_task}, timeout=10)

    async def _entry(self, job: Job) -> None:
        run = self._runs[job.id] = history.Run(job, self.label)
        inner = asyncio.create_task(self._execute(job, run))
        self._running[job.id] = inner
        # `jobs cancel` NOTIFYs; PgQueuer cancels this scope, and with it the run.
        scope = self._qm.get_context(job.id).cancellation if self._qm else contextlib.nullcontext()
        try:
            with scope:
                await inner
        except RetryJob as retry:
            decision = retry.decision
            run.finish("retried" if decision.counted else "deferred", decision.reason)
            raise
        except asyncio.CancelledError:
            if inner.cancelled() and self._interrupting:
                run.finish("interrupted", INTERRUPTED.reason)
                raise RetryJob(INTERRUPTED) from None
            run.finish()
            raise
        except Exception as exc:
            run.finish(error=history.error_text(exc))
            raise
        else:
            run.finish()
        finally:
            self._running.pop(job.id, None)

    async def _execute(self, job: Job, run: history.Run) -> None:
        async with self._slots:
            run.started_at = datetime.now(UTC)
            await self._run(job, run)

    async def _run(self, job: Job, run: history.Run) -> None:
        assert self._pool is not None
        definition = self.services.registry.resolve(job.entrypoint)
        try:
            args = json.loads(job.payload or b"{}")
            if not isinstance(args, dict):
                raise ValueError("payload is not a JSON object")
        except ValueError as exc:
            raise PermanentError(f"malformed job payload: {exc}") from None
        run.arguments = history.history_arguments(job.payload or b"{}", args)
        # Every log line of the run names the job and the records it works on (``*_id`` args).
        fields = {k: v for k, v in args.items() if k.endswith("_id")}
        fields.update(job=definition.name, job_id=job.id, attempt=job.attempts + 1)
        bound = log.bind(**fields)
        with (
            structlog.contextvars.bound_contextvars(**fields),
            metrics.observe_job(definition.name, job),
        ):
            ctx = JobContext(
                services=self.services,
                job_id=job.id,
                name=definition.name,
                attempts=job.attempts,
                locks=self._locks,
                log=bound,
            )
            await execute(definition, ctx, args)

    # Bookkeeping -------------------------------------------------------------------------------

    async def _register(self) -> None:
        assert self._pool is not None
        await self._pool.execute(
            "WITH gone AS (DELETE FROM cocov_jobs_workers"
            f" WHERE heartbeat_at < now() - interval '{DEAD_WORKER_SECONDS} seconds')"
            " INSERT INTO cocov_jobs_workers (id, host, pid, concurrency, rss_bytes)"
            " VALUES ($1, $2, $3, $4, $5)",
            self.id,
            socket.gethostname(),
            os.getpid(),
            self.concurrency,
            _rss_bytes(),
        )

    async def _rename(self, new_id: str) -> None:
        """Give this worker's row the id of its new queue manager (jobs name it by that id)."""
        assert self._pool is not None
        try:
            await self._pool.execute(
                "UPDATE cocov_jobs_workers SET id = $2 WHERE id = $1", self.id, new_id
            )
        except (OSError, asyncpg.PostgresError) as exc:
            log.warning("worker row not renamed", error=repr(exc))
        self.id = new_id

    async def _unregister(self) -> None:
        assert self._pool is not None
        with contextlib.suppress(Exception):
            await self._pool.execute("DELETE FROM cocov_jobs_workers WHERE id = $1", self.id)

    async def _heartbeat(self) -> None:
        assert self._pool is not None
        while True:
            await asyncio.sleep(WORKER_HEARTBEAT_INTERVAL)
            try:
                await self._pool.execute(
                    "UPDATE cocov_jobs_workers SET heartbeat_at = now(), rss_bytes = $2,"
                    " running = $3, quiet = $4 WHERE id = $1",
                    self.id,
                    _rss_bytes(),
                    len(self._running),
                    self._quiet,
                )
            except (OSError, asyncpg.PostgresError) as exc:
                log.warning("worker heartbeat failed", error=str(exc))

    async def _watch_burst(self) -> None:
        """In burst mode, stop once no job is ready (due) or running anywhere."""
        assert self._pool is not None
        while not self._stop.is_set():
            await asyncio.sleep(BURST_POLL_INTERVAL)
            if self._running:
                continue
            if await self._pool.fetchval(_BUSY_OR_READY, self.burst_horizon) == 0:
                self.stop()


def _rss_bytes() -> int:
    """Current resident set size (Linux ``/proc``), falling back to the peak."""
    try:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
