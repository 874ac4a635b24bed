"""Small helpers shared by tests: rows, jobs, a burst worker, service tokens."""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import text

from cocov_jobs.crypto import new_service_token, service_token_digest
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


async def insert_repository(services: Services, name: str = "api", **values: Any) -> int:
    """A repository row named ``name`` (token ``crt_<name>``, a GitHub id from the name)."""
    values.setdefault("github_id", abs(hash(name)) % 1_000_000)
    return await insert(
        services, "repositories", name=name, default_branch="main", token=f"crt_{name}", **values
    )


async def service_token(services: Services) -> str:
    """A new service token of a new admin user (the service API's and dashboard's credential)."""
    owner = await insert(services, "users", login="ops", github_id=7, github_token="x", admin=True)
    value = new_service_token()
    await insert(
        services,
        "service_tokens",
        token_hash=service_token_digest(value),
        description="ops",
        owner_id=owner,
    )
    return value
