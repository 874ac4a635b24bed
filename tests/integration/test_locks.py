"""A worker's advisory locks on one connection (``engine.locks``), against real PostgreSQL."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import asyncpg
import pytest

from cocov_jobs.db.session import asyncpg_dsn
from cocov_jobs.engine.locks import Locks
from cocov_jobs.engine.retry import RetryPolicy, decide
from cocov_jobs.services import Services
from cocov_jobs.testing.processes import until

#: Statements sent on each connection a :class:`Locks` opened, by the connection's number.
Sent = list[list[str]]


@pytest.fixture
def connector(services: Services) -> tuple[Callable[[], Locks], Sent]:
    """Makes :class:`Locks` whose connections record the statements they send."""
    sent: Sent = []

    async def connect() -> asyncpg.Connection:
        connection = await asyncpg.connect(asyncpg_dsn(services.database_url))
        log: list[str] = []
        connection.add_query_logger(lambda record: log.append(record.query))
        sent.append(log)
        return connection

    return (lambda: Locks(connect)), sent


@pytest.fixture
async def two(connector: tuple[Callable[[], Locks], Sent]) -> AsyncIterator[tuple[Locks, Locks]]:
    """Two workers' locks."""
    make, _ = connector
    first, second = make(), make()
    yield first, second
    await first.close()
    await second.close()


async def test_a_held_key_is_refused_to_another_worker_until_released(
    two: tuple[Locks, Locks],
) -> None:
    first, second = two
    async with first.hold("k") as taken:
        assert taken
        async with second.hold("k") as refused:
            assert not refused
        async with second.hold("other") as free:
            assert free
    async with second.hold("k") as taken_after:
        assert taken_after


async def test_a_held_key_is_refused_in_its_own_process_without_a_round_trip(
    connector: tuple[Callable[[], Locks], Sent],
) -> None:
    make, sent = connector
    locks = make()
    try:
        async with locks.hold("k") as taken:
            assert taken
            statements = len(sent[0])
            async with locks.hold("k") as again:
                assert not again  # PostgreSQL would grant it: its locks are re-entrant
            assert len(sent[0]) == statements
    finally:
        await locks.close()


async def test_claims_and_releases_made_together_share_statements(
    connector: tuple[Callable[[], Locks], Sent],
) -> None:
    make, sent = connector
    locks, other = make(), make()
    started = asyncio.Event()

    async def job(key: str) -> bool:
        async with locks.hold(key) as taken:
            await started.wait()
            return taken

    try:
        tasks = [asyncio.create_task(job(f"key-{n}")) for n in range(20)]
        await asyncio.sleep(0)  # every claim is made before the first statement is answered
        started.set()
        assert await asyncio.gather(*tasks) == [True] * 20
        # 40 requests (20 claims, 20 releases) in far fewer statements
        assert 2 <= len([query for query in sent[0] if "advisory" in query]) <= 3
        for n in range(20):  # all released
            async with other.hold(f"key-{n}") as taken:
                assert taken
    finally:
        await locks.close()
        await other.close()


async def test_a_lost_connection_fails_its_claims_as_lost_and_the_next_claim_reconnects(
    services: Services, two: tuple[Locks, Locks]
) -> None:
    first, second = two
    async with first.hold("before") as taken:
        assert taken
        async with services.engine.connect() as conn:
            raw = await conn.get_raw_connection()
            await raw.driver_connection.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE pid <> pg_backend_pid() AND datname = current_database()"
                " AND query LIKE '%pg_try_advisory_lock%'"
            )
        try:
            async with first.hold("during") as during:
                assert during  # the connection was known closed: replaced before the claim
        except Exception as exc:  # the claim raced the server's goodbye
            decision = decide(exc, 0, RetryPolicy(3, 1.0, 1.0))
            assert decision is not None and not decision.counted  # retried without an attempt
        async with second.hold("before") as lost:
            assert lost  # the server dropped it with the connection
    async with first.hold("after") as reconnected:
        assert reconnected


async def test_a_claim_cancelled_on_its_way_is_released(two: tuple[Locks, Locks]) -> None:
    first, second = two
    claim = asyncio.create_task(first.hold("k").__aenter__())
    await asyncio.sleep(0)  # the claim is submitted
    claim.cancel()
    with pytest.raises(asyncio.CancelledError):
        await claim

    async def free() -> bool:
        async with second.hold("k") as taken:
            return taken

    await until(free)
