"""Which storing errors make the intake try a round again rather than keep a payload."""

from __future__ import annotations

import asyncpg
import sqlalchemy.exc

from cocov_jobs.sidekiq.intake import _try_again


class _Adapted(Exception):
    """SQLAlchemy's asyncpg adapter gives the error it wraps a ``sqlstate``."""

    def __init__(self, sqlstate: str) -> None:
        super().__init__(sqlstate)
        self.sqlstate = sqlstate


def test_deadlocks_and_serialization_failures_are_tried_again() -> None:
    assert _try_again(asyncpg.exceptions.DeadlockDetectedError())
    assert _try_again(asyncpg.exceptions.SerializationError())
    wrapped = sqlalchemy.exc.DBAPIError("INSERT …", {}, _Adapted("40P01"))
    assert _try_again(wrapped)


def test_errors_of_the_payload_are_not() -> None:
    assert not _try_again(asyncpg.exceptions.NumericValueOutOfRangeError())
    assert not _try_again(sqlalchemy.exc.DBAPIError("SELECT …", {}, _Adapted("22003")))
    assert not _try_again(ValueError("bad"))
