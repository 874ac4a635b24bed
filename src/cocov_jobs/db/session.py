"""Engine and session factory: the one way to reach PostgreSQL (SQLAlchemy 2 on asyncpg).

Transactional enqueue (:func:`cocov_jobs.engine.queue.enqueue`) runs on the same asyncpg
connection as the session.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit, urlunsplit

import sqlalchemy.exc
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

#: Connections kept per process (worker slots + web requests + housekeeping).
DEFAULT_POOL_SIZE = 10
#: Extra connections allowed beyond the pool under bursts.
DEFAULT_MAX_OVERFLOW = 20


def asyncpg_dsn(url: str) -> str:
    """``postgresql://…`` for asyncpg itself (no SQLAlchemy driver suffix)."""
    parts = urlsplit(url)
    return urlunsplit(("postgresql", *parts[1:]))


def sqlalchemy_url(url: str) -> str:
    """``postgresql+asyncpg://…`` for SQLAlchemy."""
    parts = urlsplit(url)
    return urlunsplit(("postgresql+asyncpg", *parts[1:]))


def create_engine(
    url: str, *, pool_size: int = DEFAULT_POOL_SIZE, max_overflow: int = DEFAULT_MAX_OVERFLOW
) -> AsyncEngine:
    """An engine whose sessions run in UTC (Cocov stores naive UTC timestamps).

    No pre-ping: a round trip on every checkout. A connection that died with its server is
    found dead where it is used (:func:`connection_lost`); SQLAlchemy then drops every pooled
    connection older than it, the job is retried without using an attempt and the request is
    answered 503.
    """
    return create_async_engine(
        sqlalchemy_url(url),
        pool_size=pool_size,
        max_overflow=max_overflow,
        connect_args={"server_settings": {"timezone": "UTC", "application_name": "cocov-jobs"}},
    )


def connection_lost(exc: BaseException) -> bool:
    """Whether ``exc`` is a pooled connection found dead (the server restarted meanwhile)."""
    return isinstance(exc, sqlalchemy.exc.DBAPIError) and exc.connection_invalidated


#: SQLSTATEs of a server refusing a new connection for now: no slot left (``too many clients``,
#: a role's or database's connection limit), or the server starting up or shutting down.
NO_SLOT_SQLSTATES = frozenset({"53300", "57P03"})


def no_connection_slot(exc: BaseException) -> bool:
    """Whether ``exc`` is PostgreSQL refusing a new connection (:data:`NO_SLOT_SQLSTATES`),
    raised by asyncpg or wrapped by SQLAlchemy (whose ``orig`` carries the ``sqlstate``)."""
    return any(
        getattr(error, "sqlstate", None) in NO_SLOT_SQLSTATES
        for error in (exc, getattr(exc, "orig", None))
    )


def session_factory(
    engine: AsyncEngine, info: dict[str, Any] | None = None
) -> async_sessionmaker[AsyncSession]:
    """Sessions on ``engine``; each starts with a copy of ``info`` in ``Session.info``."""
    return async_sessionmaker(engine, expire_on_commit=False, info=info)
