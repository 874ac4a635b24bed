"""Jobs in the states the administration commands and the dashboard show."""

from __future__ import annotations

from sqlalchemy import text

from cocov_jobs.engine import queue
from cocov_jobs.services import Services
from tests.support.helpers import drain, jobs

#: A payload update_commits_author rejects at once (permanent failure, with a traceback).
BAD_PAYLOAD = b'{"user_id": "not a number"}'


async def failed_job(services: Services) -> int:
    """A job held as failed by a real worker run."""
    async with services.sessions.begin() as session:
        job_id = await session.scalar(
            text(
                "INSERT INTO pgqueuer (priority, entrypoint, payload, status)"
                " VALUES (0, 'update_commits_author', :p, 'queued') RETURNING id"
            ),
            {"p": BAD_PAYLOAD},
        )
    await drain(services, horizon=0)
    assert int(job_id) in [j["id"] for j in await jobs(services) if j["status"] == "failed"]
    return int(job_id)


async def enqueue(services: Services, *, delay: float = 0.0, user_id: int = 1) -> int:
    """An ``update_commits_author`` job, due in ``delay`` seconds."""
    async with services.sessions.begin() as session:
        job_id = await queue.enqueue(session, "update_commits_author", delay=delay, user_id=user_id)
    assert job_id is not None
    return job_id
