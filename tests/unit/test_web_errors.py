"""Which errors mean "a store is unavailable" (503, nothing recorded) rather than a bug (500).

Issue 7, scenario 2 (``bench/faults/pg_restart.py``): during ``pg_ctl restart -m fast`` the web
app answered 500 to deliveries that failed with "the database system is shutting down" and
similar errors, which SQLAlchemy's asyncpg dialect wraps as a plain ``DBAPIError``.
"""

from __future__ import annotations

import asyncpg
import pytest
import sqlalchemy.exc
from sqlalchemy.dialects.postgresql.asyncpg import AsyncAdapt_asyncpg_dbapi

from cocov_jobs.db.session import connection_lost
from cocov_jobs.web.errors import store_unavailable

DBAPI = AsyncAdapt_asyncpg_dbapi(asyncpg)


def as_sqlalchemy_raises(error: Exception) -> sqlalchemy.exc.DBAPIError:
    """``error`` translated as the asyncpg dialect does, then wrapped as SQLAlchemy does."""
    translate = DBAPI._asyncpg_error_translate
    adapted_class = next(
        (translate[cls] for cls in type(error).__mro__ if cls in translate),
        getattr(DBAPI, type(error).__name__, DBAPI.Error),
    )
    try:
        raise adapted_class(str(error), error) from error
    except Exception as adapted:
        return sqlalchemy.exc.DBAPIError.instance("SELECT 1", {}, adapted, DBAPI.Error)


def as_adapter_raises(error: Exception) -> Exception:
    """``error`` translated as the asyncpg dialect's adapter does, not wrapped by SQLAlchemy:
    what our code meets when it calls the adapter itself (beginning the transaction)."""
    wrapped = as_sqlalchemy_raises(error).orig
    assert isinstance(wrapped, Exception)
    return wrapped


GOING_AWAY = [
    asyncpg.exceptions.CannotConnectNowError("the database system is shutting down"),
    asyncpg.exceptions.AdminShutdownError("terminating connection due to administrator"),
    asyncpg.exceptions.ConnectionDoesNotExistError("connection was closed in the middle"),
    asyncpg.exceptions.InterfaceError("connection is closed"),
]
NOT_GOING_AWAY = [
    asyncpg.exceptions.UniqueViolationError("duplicate key"),
    asyncpg.exceptions.QueryCanceledError("canceling statement due to statement timeout"),
    asyncpg.exceptions.InterfaceError("cannot perform operation: another operation is in progress"),
]


@pytest.mark.parametrize("error", GOING_AWAY, ids=lambda error: f"{type(error).__name__}-{error}")
def test_a_connection_gone_under_a_raw_statement_is_unavailable_and_lost(error: Exception) -> None:
    """The webhook path sends statements straight to asyncpg: its own errors, and the adapter's
    re-raising of them, are a lost connection (503; a job retried without an attempt)."""
    for raised in (error, as_adapter_raises(error)):
        assert store_unavailable(raised)
        assert connection_lost(raised)


@pytest.mark.parametrize(
    "error", NOT_GOING_AWAY, ids=lambda error: f"{type(error).__name__}-{error}"
)
def test_raw_data_and_usage_errors_are_neither_unavailable_nor_lost(error: Exception) -> None:
    for raised in (error, as_adapter_raises(error)):
        assert not store_unavailable(raised)
        assert not connection_lost(raised)


@pytest.mark.parametrize(
    "error",
    [
        asyncpg.exceptions.CannotConnectNowError("the database system is shutting down"),
        asyncpg.exceptions.CannotConnectNowError("the database system is starting up"),
        asyncpg.exceptions.AdminShutdownError("terminating connection due to administrator"),
        asyncpg.exceptions.ConnectionDoesNotExistError("connection was closed in the middle"),
        asyncpg.exceptions.InternalClientError(
            "cannot switch to state 15; another operation (2) is in progress"
        ),
    ],
    ids=lambda error: type(error).__name__,
)
def test_server_going_away_is_unavailable(error: Exception) -> None:
    assert store_unavailable(as_sqlalchemy_raises(error))


@pytest.mark.parametrize(
    "error",
    [
        asyncpg.exceptions.UniqueViolationError("duplicate key"),
        asyncpg.exceptions.QueryCanceledError("canceling statement due to statement timeout"),
        asyncpg.exceptions.UndefinedColumnError("column x does not exist"),
    ],
    ids=lambda error: type(error).__name__,
)
def test_data_and_query_errors_are_not_unavailable(error: Exception) -> None:
    assert not store_unavailable(as_sqlalchemy_raises(error))
