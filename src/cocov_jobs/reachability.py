"""Whether PostgreSQL and Redis answer, and if not, why — in one line naming the setting and the
address, never the password: ``cannot reach PostgreSQL at 127.0.0.1:1 (COCOV_DATABASE_URL):
connection refused``.

The commands check both stores once at start-up (``cli.common``) and the readiness probe says
the same line for a store that does not answer.
"""

from __future__ import annotations

import asyncio
import os
import socket
from dataclasses import dataclass
from urllib.parse import parse_qs, urlsplit

import redis.asyncio as aioredis
from sqlalchemy import text

from cocov_jobs.config import Settings
from cocov_jobs.logs import Redactor
from cocov_jobs.services import Services

#: Seconds a store has to answer the start-up check.
CHECK_TIMEOUT = 5.0


def address(url: str) -> str:
    """``host:port`` of a store URL, or its Unix socket path."""
    parts = urlsplit(url)
    socket_dir = parse_qs(parts.query).get("host", [""])[0]
    if socket_dir.startswith("/"):
        return socket_dir
    if parts.scheme == "unix":
        return parts.path
    port = parts.port or {"redis": 6379, "rediss": 6379}.get(parts.scheme, 5432)
    return f"{parts.hostname or 'localhost'}:{port}"


def reason(exc: BaseException, settings: Settings) -> str:
    """Why connecting failed, in a few words (the innermost system error when there is one)."""
    found: BaseException | None = exc
    while found is not None:
        if isinstance(found, TimeoutError):
            return f"no answer within {CHECK_TIMEOUT:g} s"
        if isinstance(found, socket.gaierror):
            return "unknown host"
        if isinstance(found, OSError) and found.errno is not None:
            return os.strerror(found.errno).lower()
        found = found.__cause__ or found.__context__
    words = str(exc).strip().splitlines()
    return Redactor(settings.secret_values())(words[0] if words else type(exc).__name__)


def postgresql_variable(settings: Settings) -> str:
    if settings.database_url:
        return "COCOV_DATABASE_URL"
    return "COCOV_DATABASE_HOST" if settings.database_host else "embedded"


@dataclass(frozen=True)
class RedisStore:
    """A Redis the process uses: its client, URL and the setting that names it."""

    name: str
    client: aioredis.Redis
    url: str
    variable: str
    settings: Settings


def redis_stores(services: Services) -> dict[str, RedisStore]:
    """The primary Redis (``redis``) and, with the Sidekiq intake, Sidekiq's (``sidekiq_redis``)."""
    settings = services.settings
    stores = {
        "redis": RedisStore(
            "Redis",
            services.redis,
            services.redis_url,
            "COCOV_REDIS_URL" if settings.redis_url else "embedded",
            settings,
        )
    }
    if services.sidekiq_redis is not None:
        stores["sidekiq_redis"] = RedisStore(
            "Sidekiq's Redis",
            services.sidekiq_redis,
            settings.sidekiq_redis_url,
            "COCOV_SIDEKIQ_REDIS_URL",
            settings,
        )
    return stores


def postgresql_failure(services: Services, exc: BaseException) -> str:
    """The line saying PostgreSQL could not be reached, and why (``exc``)."""
    where = f"{address(services.database_url)} ({postgresql_variable(services.settings)})"
    return f"cannot reach PostgreSQL at {where}: {reason(exc, services.settings)}"


async def postgresql_problem(services: Services) -> str | None:
    """``None`` when PostgreSQL answers, else :func:`postgresql_failure`."""
    try:
        async with asyncio.timeout(CHECK_TIMEOUT), services.engine.connect() as conn:
            await conn.execute(text("SELECT 1"))
    except Exception as exc:
        return postgresql_failure(services, exc)
    return None


async def redis_problem(store: RedisStore, within: float = CHECK_TIMEOUT) -> str | None:
    """``None`` when ``store`` answers within ``within`` s, else the line saying why not."""
    try:
        async with asyncio.timeout(within):
            await store.client.ping()
    except Exception as exc:
        where = f"{address(store.url)} ({store.variable})"
        return f"cannot reach {store.name} at {where}: {reason(exc, store.settings)}"
    return None
