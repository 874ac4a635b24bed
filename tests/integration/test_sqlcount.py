"""The counting PostgreSQL relay ``bench/jobs.py`` measures SQL per job with."""

from __future__ import annotations

import asyncpg

from cocov_jobs.db.session import asyncpg_dsn
from cocov_jobs.testing.sqlcount import CountingProxy


async def test_counts_what_each_application_asks_of_the_server(database_url: str) -> None:
    async with CountingProxy(database_url).running() as proxy:
        url = asyncpg_dsn(proxy.url(database_url))
        counted = await asyncpg.connect(url, server_settings={"application_name": "counted"})
        other = await asyncpg.connect(url, server_settings={"application_name": "other"})
        try:
            before = proxy.snapshot()
            # Prepared (Parse, Describe, Flush: one wait), then executed (Bind, Execute, Sync).
            assert await counted.fetchval("SELECT $1::int", 1) == 1
            # Prepared already: one round trip.
            assert await counted.fetchval("SELECT $1::int", 2) == 2
            # BEGIN, a simple query, COMMIT: three statements, one transaction.
            async with counted.transaction():
                await counted.execute("SELECT 1")
            await other.execute("SELECT 1")
            after = proxy.snapshot()
        finally:
            await counted.close()
            await other.close()

    def delta(role: str) -> dict[str, int]:
        return {kind: after[role][kind] - before[role][kind] for kind in after[role]}

    assert delta("counted") == {"statements": 5, "round_trips": 6, "prepares": 1, "transactions": 3}
    assert delta("other") == {"statements": 1, "round_trips": 1, "prepares": 0, "transactions": 1}
