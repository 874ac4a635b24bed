"""Small helpers shared by tests: rows, jobs, a burst worker."""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import text

from cocov_jobs.engine.worker import Worker
from cocov_jobs.services import Services


async def drain(services: Services, *, concurrency: int = 4, horizon: float = 5.0) -> None:
    """Run a burst worker here until no job runs or is due within ``horizon`` seconds."""
    await Worker(services, concurrency=concurrency, burst=True, burst_horizon=horizon).run()


async def jobs(services: Services) -> list[dict[str, Any]]:
    """Rows still in the queue table (queued, picked, failed), oldest first."""
    async with services.engine.connect() as conn:
        rows = await conn.execute(
            text(
                "SELECT id, entrypoint, payload, status::text AS status, attempts,"
                " execute_after FROM pgqueuer ORDER BY id"
            )
        )
        return [{**row._asdict(), "args": json.loads(row.payload or b"{}")} for row in rows]


async def job_log(services: Services, job_id: int) -> list[dict[str, Any]]:
    async with services.engine.connect() as conn:
        rows = await conn.execute(
            text(
                "SELECT status::text AS status, traceback FROM pgqueuer_log"
                " WHERE job_id = :id ORDER BY id"
            ),
            {"id": job_id},
        )
        return [row._asdict() for row in rows]


async def insert(services: Services, table: str, **values: Any) -> int:
    """Insert one row with Rails-style timestamps; return its id."""
    cols = ", ".join([*values, "created_at", "updated_at"])
    params = ", ".join([*(f":{k}" for k in values), "now()", "now()"])
    async with services.sessions.begin() as session:
        result = await session.execute(
            text(f"INSERT INTO {table} ({cols}) VALUES ({params}) RETURNING id"), values
        )
        return int(result.scalar_one())
