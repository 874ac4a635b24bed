"""A job that cannot get a database connection because PostgreSQL has no slot left (too many
clients, or the server is starting) is put back without using an attempt: the shortage is the
installation's, not the job's. The errors are PostgreSQL's own, raised by a real server."""

from __future__ import annotations

import asyncpg
import pytest

from cocov_jobs.db.session import asyncpg_dsn, create_engine
from cocov_jobs.engine.retry import RECONNECT_DELAY, RetryPolicy, decide

POLICY = RetryPolicy(max_attempts=3, base_delay=10.0, max_delay=25.0)


async def test_no_connection_slot_through_asyncpg_is_retried_without_an_attempt(
    no_slot_database_url: str,
) -> None:
    with pytest.raises(asyncpg.TooManyConnectionsError) as raised:
        await asyncpg.connect(asyncpg_dsn(no_slot_database_url))
    decision = decide(raised.value, POLICY.max_attempts - 1, POLICY)
    assert decision is not None and not decision.counted
    assert RECONNECT_DELAY <= decision.delay <= 2 * RECONNECT_DELAY


async def test_no_connection_slot_through_a_session_is_retried_without_an_attempt(
    no_slot_database_url: str,
) -> None:
    engine = create_engine(no_slot_database_url)
    try:
        with pytest.raises(Exception) as raised:
            async with engine.connect():
                pass
    finally:
        await engine.dispose()
    decision = decide(raised.value, POLICY.max_attempts - 1, POLICY)
    assert decision is not None and not decision.counted
    assert "no connection slot" in decision.reason


async def test_other_database_errors_still_use_attempts(database_url: str) -> None:
    conn = await asyncpg.connect(asyncpg_dsn(database_url))
    try:
        with pytest.raises(asyncpg.UndefinedTableError) as raised:
            await conn.execute("SELECT * FROM no_such_table")
    finally:
        await conn.close()
    decision = decide(raised.value, 0, POLICY)
    assert decision is not None and decision.counted
