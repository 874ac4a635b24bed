"""The job engine: a registry of jobs on top of PgQueuer, the retry policy, locks and dedupe.

Lifecycle of a job
==================

1. **Enqueue** — :func:`enqueue` validates the arguments against the job's signature and inserts
   a PgQueuer row *on the caller's SQLAlchemy connection*, inside its open transaction: a
   rollback leaves no job, a commit makes it visible (PgQueuer's trigger NOTIFYs at commit).
   A job declared with ``dedupe="…"`` has at most one *queued* copy per key: a second enqueue
   while one waits is skipped (returns ``None``).
2. **Pick** — a worker (:mod:`cocov_jobs.worker`) dequeues it (``FOR UPDATE SKIP LOCKED``) and
   heartbeats it while it runs. A job whose heartbeat is older than ``COCOV_HEARTBEAT_TIMEOUT``
   (worker killed) is picked again by any worker.
3. **Run** — :func:`execute`: the dedupe key is released first (so a new request during the
   run queues exactly one more run: coalescing); a job declared with ``lock="…"`` then takes a
   session-level PostgreSQL advisory lock on that key; when another worker holds it, the job is
   put back with a short delay (:data:`LOCK_RETRY_DELAY`) instead of blocking a worker slot.
4. **Finish** — success deletes the row (PgQueuer keeps a log row). A failure is classified by
   :func:`retry_decision`:

   * :class:`~cocov_jobs.errors.PermanentError` or invalid arguments: held as ``failed`` at
     once, with the reason (exception message and traceback) in ``pgqueuer_log``;
   * :class:`~cocov_jobs.errors.Deferred`: re-queued after its delay, not counted as an attempt;
   * anything else: re-queued after ``min(max, base · 2^attempts) · U(1, 1.25)`` seconds
     (``COCOV_RETRY_BASE_SECONDS`` = 15, ``COCOV_RETRY_MAX_SECONDS`` = 3600), or after the
     error's ``retry_after`` when it has one; after ``COCOV_MAX_ATTEMPTS`` (25) runs it is held
     as ``failed``. ``cocov-jobs jobs retry`` puts a failed job back with its attempts reset.
"""

from __future__ import annotations

import inspect
import json
import random
import re
import typing
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import pydantic
from pgqueuer.db import AsyncpgDriver
from pgqueuer.errors import RetryRequested
from pgqueuer.queries import Queries
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from cocov_jobs.errors import Deferred, PermanentError, TransientError

if TYPE_CHECKING:
    from cocov_jobs.jobs.context import JobContext

#: Seconds before a job whose advisory lock is busy is tried again (jittered ×1–1.5).
LOCK_RETRY_DELAY = 2.0
#: Jitter factor range applied to backoff delays.
BACKOFF_JITTER = (1.0, 1.25)

JobFunc = Callable[..., Awaitable[None]]


class UnknownJobError(KeyError):
    """No job has that name."""

    def __str__(self) -> str:
        return f"unknown job {self.args[0]!r}; known jobs: {', '.join(known_job_names())}"


class JobArgumentsError(ValueError):
    """The arguments do not match the job's signature."""


@dataclass(frozen=True)
class JobDefinition:
    """A registered job: its function, argument model and lock/dedupe key templates."""

    name: str
    func: JobFunc
    params: tuple[str, ...]
    args_model: type[pydantic.BaseModel]
    lock: str | None
    dedupe: str | None
    description: str

    @property
    def cli_name(self) -> str:
        return self.name.replace("_", "-")

    @property
    def ruby_name(self) -> str:
        return "".join(part.capitalize() for part in self.name.split("_")) + "Job"

    def validate(self, args: Mapping[str, object]) -> dict[str, Any]:
        """Arguments coerced to the job's types; :class:`JobArgumentsError` when they don't fit."""
        try:
            return self.args_model.model_validate(dict(args)).model_dump()
        except pydantic.ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in err['loc']) or 'arguments'}: {err['msg']}"
                for err in exc.errors()
            )
            raise JobArgumentsError(f"{self.cli_name}: {problems}") from None

    def validate_positional(self, values: list[str]) -> dict[str, Any]:
        """Positional command-line values mapped onto the parameters in order."""
        if len(values) != len(self.params):
            raise JobArgumentsError(
                f"{self.cli_name} takes {len(self.params)} argument(s) "
                f"({' '.join(p.upper() for p in self.params) or 'none'}), got {len(values)}"
            )
        return self.validate(dict(zip(self.params, values, strict=True)))

    def lock_key(self, args: Mapping[str, object]) -> str | None:
        return self.lock.format(**args) if self.lock else None

    def dedupe_key(self, args: Mapping[str, object]) -> str | None:
        return f"{self.name}:{self.dedupe.format(**args)}" if self.dedupe is not None else None

    def usage(self) -> str:
        return f"{self.cli_name} {' '.join(p.upper() for p in self.params)}".strip()


REGISTRY: dict[str, JobDefinition] = {}


def job(*, lock: str | None = None, dedupe: str | None = None) -> Callable[[JobFunc], JobFunc]:
    """Register ``async def name(ctx: JobContext, **args)`` as the job ``name``.

    ``lock`` and ``dedupe`` are ``str.format`` templates over the arguments, e.g.
    ``lock="repository:{repository_id}"``.
    """

    def register(func: JobFunc) -> JobFunc:
        hints = typing.get_type_hints(func)
        params = tuple(inspect.signature(func).parameters)[1:]
        fields: dict[str, Any] = {name: (hints[name], ...) for name in params}
        model = pydantic.create_model(
            f"{func.__name__}_args", __config__=pydantic.ConfigDict(extra="forbid"), **fields
        )
        REGISTRY[func.__name__] = JobDefinition(
            name=func.__name__,
            func=func,
            params=params,
            args_model=model,
            lock=lock,
            dedupe=dedupe,
            description=(inspect.getdoc(func) or "").split("\n", 1)[0],
        )
        return func

    return register


def _load_jobs() -> None:
    import cocov_jobs.jobs  # noqa: F401  (registers every job)


def known_job_names() -> list[str]:
    _load_jobs()
    return sorted(d.cli_name for d in REGISTRY.values())


def resolve(name: str) -> JobDefinition:
    """Find a job by task name, kebab-case name or Ruby class name (``ProcessCommitJob``)."""
    _load_jobs()
    key = name.strip()
    if key.endswith("Job") and key[:1].isupper():
        key = re.sub(r"(?<!^)(?=[A-Z])", "_", key[:-3]).lower()
    key = key.replace("-", "_")
    try:
        return REGISTRY[key]
    except KeyError:
        raise UnknownJobError(name) from None


# Enqueue ---------------------------------------------------------------------------------------


async def _asyncpg_connection(conn: AsyncSession | AsyncConnection) -> Any:
    """The session's asyncpg connection, with its transaction begun.

    SQLAlchemy's asyncpg adapter sends BEGIN lazily, on its first statement; a statement sent
    straight to asyncpg before that would run in autocommit. So begin it first (the adapter's
    own method when present — a test pins this — else through one trivial statement).
    """
    connection = await conn.connection() if isinstance(conn, AsyncSession) else conn
    raw = await connection.get_raw_connection()
    adapter = raw.dbapi_connection
    start = getattr(adapter, "_start_transaction", None)
    if start is not None and getattr(adapter, "_transaction", False) is None:
        await start()
    elif start is None:
        await connection.exec_driver_sql("SELECT 1")
    return raw.driver_connection


async def enqueue(
    conn: AsyncSession | AsyncConnection,
    name: str,
    /,
    *,
    delay: float = 0.0,
    **args: object,
) -> int | None:
    """Enqueue ``name(**args)`` inside the caller's open transaction; return the job id.

    Returns ``None`` when a job with the same dedupe key is already waiting.
    """
    definition = resolve(name)
    values = definition.validate(args)
    queries = Queries(AsyncpgDriver(await _asyncpg_connection(conn)))
    ids = await queries.enqueue(
        definition.name,
        json.dumps(values).encode(),
        execute_after=timedelta(seconds=delay) if delay > 0 else None,
        dedupe_key=definition.dedupe_key(values),
        on_conflict="skip",
    )
    return ids[0]


# Retry policy ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class RetryPolicy:
    """Backoff ``min(max_delay, base · 2^attempts) · U(1, 1.25)``; at most ``max_attempts`` runs."""

    max_attempts: int = 25
    base_delay: float = 15.0
    max_delay: float = 3600.0

    def backoff(self, attempts: int) -> float:
        delay = min(self.max_delay, self.base_delay * (2 ** min(attempts, 32)))
        return float(delay * random.uniform(*BACKOFF_JITTER))


@dataclass(frozen=True)
class Retry:
    """Put the job back after ``delay`` seconds; ``counted`` says whether it uses an attempt."""

    delay: float
    counted: bool
    reason: str


def retry_decision(exc: BaseException, attempts: int, policy: RetryPolicy) -> Retry | None:
    """What to do after ``exc`` on a job that was already retried ``attempts`` times.

    ``None`` means finish the job as failed now.
    """
    if isinstance(exc, PermanentError | JobArgumentsError):
        return None
    if isinstance(exc, Deferred):
        return Retry(exc.delay, counted=False, reason=str(exc))
    if attempts + 1 >= policy.max_attempts:
        return None
    retry_after = exc.retry_after if isinstance(exc, TransientError) else None
    delay = retry_after if retry_after is not None else policy.backoff(attempts)
    return Retry(delay, counted=True, reason=f"{type(exc).__name__}: {exc}")


class RetryNotCounted(RetryRequested):
    """A re-queue that does not use up an attempt (deferral, busy lock)."""


def as_retry(decision: Retry) -> RetryRequested:
    cls = RetryRequested if decision.counted else RetryNotCounted
    return cls(delay=timedelta(seconds=decision.delay), reason=decision.reason)


async def execute(
    definition: JobDefinition,
    ctx: JobContext,
    args: Mapping[str, object],
    policy: RetryPolicy,
) -> None:
    """Run one job attempt and translate its outcome for PgQueuer (see the module docstring)."""
    try:
        values = definition.validate(args)
        lock_key = definition.lock_key(values)
        if lock_key is None:
            await definition.func(ctx, **values)
            return
        async with ctx.advisory_lock(lock_key) as acquired:
            if not acquired:
                raise Deferred(
                    f"lock {lock_key} is held by another job",
                    delay=LOCK_RETRY_DELAY * random.uniform(1.0, 1.5),
                )
            await definition.func(ctx, **values)
    except Exception as exc:
        decision = retry_decision(exc, ctx.attempts, policy)
        if decision is None:
            raise
        raise as_retry(decision) from exc
