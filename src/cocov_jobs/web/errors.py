"""Cocov's error envelope and the exception handlers that produce it.

Every error answer has the body ``{"code": "<dotted.path>", "message": "<text>"}``
(docs/architecture.md §6.9). Routes raise :class:`ApiError` for request errors; the handlers below
turn the rest into:

* 503 ``service.unavailable`` with ``Retry-After: RETRY_AFTER_SECONDS`` when PostgreSQL or
  Redis cannot be reached (:func:`store_unavailable`) — the request changed nothing that
  committed, so the client may simply send it again;
* 500 ``internal_error`` for anything else (logged with its traceback by the server).
"""

from __future__ import annotations

import asyncpg
import redis.exceptions
import sqlalchemy.exc
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from cocov_jobs.db.session import caused_by, no_connection_slot, raw_connection_lost

#: Seconds a client is told to wait (``Retry-After``) when a store is unavailable.
RETRY_AFTER_SECONDS = 5


class ApiError(Exception):
    """A request error answered with ``status`` and Cocov's envelope."""

    def __init__(
        self, status: int, code: str, message: str, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers

    def __reduce__(self) -> tuple[type[ApiError], tuple[int, str, str, dict[str, str] | None]]:
        """Picklable (raised in report parser processes)."""
        return ApiError, (self.status, self.code, self.message, self.headers)


def error_response(
    status: int, code: str, message: str, headers: dict[str, str] | None = None
) -> JSONResponse:
    return JSONResponse({"code": code, "message": message}, status_code=status, headers=headers)


#: asyncpg errors that mean the server went away or refuses connections for now (SQLSTATE
#: class 08, 57P01-57P03; 53300 is :func:`no_connection_slot`), or that a dropped connection
#: left the client protocol mid-operation.
#: SQLAlchemy's asyncpg dialect wraps most of them as a plain ``DBAPIError``.
_ASYNCPG_UNAVAILABLE = (
    asyncpg.exceptions.PostgresConnectionError,
    asyncpg.exceptions.AdminShutdownError,
    asyncpg.exceptions.CrashShutdownError,
    asyncpg.exceptions.CannotConnectNowError,
    asyncpg.exceptions.InternalClientError,
)


def store_unavailable(exc: BaseException) -> bool:
    """Whether ``exc`` means PostgreSQL or Redis could not be reached or dropped the connection."""
    if isinstance(exc, sqlalchemy.exc.DBAPIError):
        return (
            exc.connection_invalidated
            or isinstance(exc, sqlalchemy.exc.OperationalError | sqlalchemy.exc.InterfaceError)
            or isinstance(getattr(exc.orig, "__cause__", None), _ASYNCPG_UNAVAILABLE)
            or no_connection_slot(exc)
        )
    return (
        raw_connection_lost(exc)
        or caused_by(exc, _ASYNCPG_UNAVAILABLE)
        or no_connection_slot(exc)
        or isinstance(
            exc, OSError | redis.exceptions.ConnectionError | redis.exceptions.TimeoutError
        )
    )


async def _api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    return error_response(exc.status, exc.code, exc.message, exc.headers)


async def _store_error(request: Request, exc: Exception) -> Response:
    """The 503 of a request that met a store it could not reach (nothing committed)."""
    if not store_unavailable(exc):
        raise exc
    return error_response(
        503,
        "service.unavailable",
        "A data store is unavailable; nothing was recorded. Try again later.",
        headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
    )


async def _internal_error(request: Request, exc: Exception) -> Response:
    if store_unavailable(exc):  # a lost connection re-raised by SQLAlchemy's asyncpg adapter
        return await _store_error(request, exc)
    return error_response(500, "internal_error", "Internal server error")


#: ``exception_handlers`` of the web app.
EXCEPTION_HANDLERS = {
    ApiError: _api_error,
    OSError: _store_error,
    sqlalchemy.exc.DBAPIError: _store_error,
    # Statements sent straight to the session's asyncpg connection (the webhook path).
    asyncpg.exceptions.PostgresError: _store_error,
    asyncpg.exceptions.InterfaceError: _store_error,
    redis.exceptions.ConnectionError: _store_error,
    redis.exceptions.TimeoutError: _store_error,
    Exception: _internal_error,
}
