"""``cocov-jobs sidekiq import``: the jobs a replaced Sidekiq left in its ``retry`` and ``dead``
sets, moved at cut-over.

* ``retry``: each entry becomes its job, due at its score (Sidekiq's next retry time), with
  ``retry_count + 1`` attempts used and Sidekiq's last error in its history;
* ``dead``: each entry becomes its job held as failed with Sidekiq's error (``jobs retry`` or
  the dashboard runs it again).

Entries that cannot become a job are kept as failed ``sidekiq_payload`` jobs, as the intake
keeps them. Moving is idempotent: a batch is stored in one transaction
(:func:`~cocov_jobs.sidekiq.store.store`), then its exact members are removed from the set; an
import interrupted between the two finds those keys taken when run again, and removes them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final

from cocov_jobs.services import Services
from cocov_jobs.sidekiq.intake import BATCH, scored_members
from cocov_jobs.sidekiq.payload import epoch, read_payload
from cocov_jobs.sidekiq.store import Entry, store

RETRY: Final = "retry"
DEAD: Final = "dead"
#: The sets moved, in order.
SETS: Final = (RETRY, DEAD)


@dataclass
class Moved:
    """Per set: payloads that became jobs, were taken before, or were kept as failed."""

    taken: dict[str, int] = field(default_factory=lambda: dict.fromkeys(SETS, 0))
    replayed: dict[str, int] = field(default_factory=lambda: dict.fromkeys(SETS, 0))
    kept: dict[str, int] = field(default_factory=lambda: dict.fromkeys(SETS, 0))


async def preview(services: Services) -> list[Entry]:
    """Every entry :func:`move` would move (``--dry-run``); nothing changes."""
    assert services.sidekiq_redis is not None
    return [
        _entry(services, name, raw, score)
        for name in SETS
        for raw, score in await scored_members(services.sidekiq_redis, name, 0, -1)
    ]


async def move(services: Services) -> Moved:
    """Move both sets (module docstring)."""
    assert services.sidekiq_redis is not None
    moved = Moved()
    for name in SETS:
        while members := await scored_members(services.sidekiq_redis, name, 0, BATCH - 1):
            entries = [_entry(services, name, raw, score) for raw, score in members]
            async with services.sessions.begin() as session:
                result = await store(session, services.redis, entries)
            await services.sidekiq_redis.zrem(name, *(raw for raw, _ in members))
            moved.taken[name] += len(result.taken) - len(result.kept)
            moved.replayed[name] += result.replayed
            moved.kept[name] += len(result.kept)
    return moved


def _entry(services: Services, name: str, raw: bytes, score: float) -> Entry:
    payload = read_payload(raw, services.registry)
    return Entry(payload, name, run_at=epoch(score) if name == RETRY else None, dead=name == DEAD)
