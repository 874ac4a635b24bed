"""Enqueue: a job is a PgQueuer row inserted in the caller's open transaction.

A rollback leaves no job; a commit makes it visible (PgQueuer's trigger NOTIFYs at commit).
A job declared with ``dedupe="…"`` has at most one *queued* copy per key: a second enqueue
while one waits is skipped (returns ``None``).

The program's :class:`~cocov_jobs.engine.registry.Registry` travels with its sessions: the
session factory of :class:`~cocov_jobs.services.Services` puts it in ``Session.info`` under
:data:`REGISTRY_KEY`, so every piece of code that holds a session can enqueue by name and have
the arguments validated, without a process-wide registry.

**What enqueued a job** is recorded with it, in the same transaction, in
``cocov_jobs_job_origins``: the origin set by the innermost :func:`enqueued_by` around the
enqueue (``token:12``, ``webhook:<delivery>``, ``job:<id>`` — every job run sets its own —,
``schedule``, ``cli``…). Entry points set it once; the code they call enqueues as usual.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from contextvars import ContextVar, Token
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from pgqueuer.db import AsyncpgDriver
from pgqueuer.queries import Queries
from sqlalchemy.ext.asyncio import AsyncSession

from cocov_jobs.engine.registry import JobDefinition, Registry

#: ``Session.info`` key of the program's job registry.
REGISTRY_KEY = "cocov_jobs.registry"

_origin: ContextVar[str | None] = ContextVar("cocov_jobs_enqueued_by", default=None)

_RECORD_ORIGIN = "INSERT INTO cocov_jobs_job_origins (job_id, enqueued_by) VALUES ($1, $2)"


class Origin:
    """The block of :func:`enqueued_by`: a context manager, plain or ``async``."""

    def __init__(self, origin: str) -> None:
        self.origin = origin
        self._token: Token[str | None] | None = None

    def __enter__(self) -> None:
        self._token = _origin.set(self.origin)

    def __exit__(self, *exc: object) -> None:
        assert self._token is not None
        _origin.reset(self._token)

    async def __aenter__(self) -> None:
        self.__enter__()

    async def __aexit__(self, *exc: object) -> None:
        self.__exit__()


def enqueued_by(origin: str) -> Origin:
    """Record ``origin`` as what enqueued the jobs enqueued inside this block (this task and
    the tasks it starts); ``with`` or ``async with``."""
    return Origin(origin)


def session_registry(session: AsyncSession) -> Registry:
    """The job registry of the program that made ``session``."""
    registry = session.info.get(REGISTRY_KEY)
    if not isinstance(registry, Registry):
        raise RuntimeError("this session was not made by Services.sessions: no job registry")
    return registry


async def asyncpg_connection(session: AsyncSession) -> Any:
    """The session's asyncpg connection, with its transaction begun.

    SQLAlchemy's asyncpg adapter sends BEGIN lazily, on its first statement; a statement sent
    straight to asyncpg before that would run in autocommit. So begin it first (the adapter's
    own method when present — a test pins this — else through one trivial statement).
    """
    connection = await session.connection()
    raw = await connection.get_raw_connection()
    adapter = raw.dbapi_connection
    start = getattr(adapter, "_start_transaction", None)
    if start is not None and getattr(adapter, "_transaction", False) is None:
        await start()
    elif start is None:
        await connection.exec_driver_sql("SELECT 1")
    return raw.driver_connection


@dataclass(frozen=True)
class NewJob:
    """A job to insert: validated ``values``, due after ``delay`` seconds (now when ≤ 0).

    ``dedupe=False`` inserts it even while a copy with its dedupe key waits.
    """

    definition: JobDefinition
    values: dict[str, Any]
    delay: float = 0.0
    dedupe: bool = True
    #: What enqueued it, when not the origin of the enclosing :func:`enqueued_by`.
    origin: str | None = None


async def insert_jobs(session: AsyncSession, jobs: Sequence[NewJob]) -> list[int | None]:
    """Insert ``jobs`` with one statement; their ids in order, None where deduplicated.

    Rows go in ordered by dedupe key, so two transactions inserting overlapping keys wait for
    each other rather than deadlock.
    """
    if not jobs:
        return []
    keys = [job.definition.dedupe_key(job.values) if job.dedupe else None for job in jobs]
    order = sorted(range(len(jobs)), key=lambda i: keys[i] or "")
    connection = await asyncpg_connection(session)
    ids = await Queries(AsyncpgDriver(connection)).enqueue(
        [jobs[i].definition.name for i in order],
        [json.dumps(jobs[i].values).encode() for i in order],
        [0] * len(jobs),
        [timedelta(seconds=jobs[i].delay) if jobs[i].delay > 0 else None for i in order],
        [keys[i] for i in order],
        on_conflict="skip",
    )
    placed: list[int | None] = [None] * len(jobs)
    for position, job_id in zip(order, ids, strict=True):
        placed[position] = job_id
    origins = [
        (job_id, job.origin or _origin.get())
        for job, job_id in zip(jobs, placed, strict=True)
        if job_id is not None and (job.origin or _origin.get())
    ]
    if origins:
        await connection.executemany(_RECORD_ORIGIN, origins)
    return placed


async def insert_job(
    session: AsyncSession, definition: JobDefinition, values: dict[str, Any], delay: float
) -> int | None:
    """Insert validated ``values`` for ``definition``; None when deduplicated."""
    return (await insert_jobs(session, [NewJob(definition, values, delay)]))[0]


async def enqueue(
    session: AsyncSession, name: str, /, *, delay: float = 0.0, **args: object
) -> int | None:
    """Enqueue ``name(**args)`` inside the session's open transaction; return the job id.

    Returns ``None`` when a job with the same dedupe key is already waiting.
    """
    definition = session_registry(session).resolve(name)
    return await insert_job(session, definition, definition.validate(args), delay)
