"""The intake: the jobs Cocov's Rails API hands to Sidekiq, taken into PostgreSQL exactly once.

Cocov's API keeps enqueuing into Sidekiq's Redis (``COCOV_SIDEKIQ_REDIS_URL``): ``LPUSH
queue:<name>`` for jobs to run now, ``ZADD schedule`` (score: run time) for later ones. When that
variable is set, every worker process (and ``run``) runs an :class:`Intake` that turns each
payload of the queues named by ``COCOV_SIDEKIQ_QUEUES`` and of ``schedule`` into our job
(:mod:`~cocov_jobs.sidekiq.payload`, :mod:`~cocov_jobs.sidekiq.store`).

No loss, no double
==================

A payload leaves Redis only after the PostgreSQL transaction holding its job has committed. A
process takes in with :data:`LANES` lanes at once, each with its own id (``host:pid:random``);
one round of a lane (:meth:`Lane.take_in`):

1. **Claim** (one Lua script, atomic): set the lane's heartbeat key
   ``cocov-jobs:intake:heartbeat:<id>`` (it expires after ``COCOV_HEARTBEAT_TIMEOUT``), register
   ``<id>`` in the set ``cocov-jobs:intake:processes``, move up to :data:`BATCH` payloads from
   the right end of each queue (Sidekiq's order: oldest first) to the lane's in-flight list
   ``cocov-jobs:intake:inflight:<id>`` (RPOPLPUSH), and return the whole in-flight list. The
   ``schedule`` set is read, not claimed: up to :data:`BATCH` entries, due or not, earliest first.
2. **Store** the lot in one transaction: keys (``jid``) taken before are skipped, the rest become
   jobs, due at their score for ``schedule`` entries; commit.
3. **Acknowledge**: delete the in-flight list; remove the ``schedule`` members read (ZREM).

A process killed anywhere leaves its claimed payloads in its lanes' in-flight lists: not yet in
PostgreSQL if it died before the commit, in it with their keys taken if after. Every
:data:`RECOVER_INTERVAL` seconds each lane looks for registered ids whose heartbeat key has
expired and moves their in-flight lists into its own (Lua, atomic); its next round
stores what was not taken and skips what was. A ``schedule`` entry read by two processes, or
read again after a crash before its ZREM, is skipped the same way. Several processes on
several hosts can take in at once: a payload is in one in-flight list at a time, and the taken
keys settle every replay. (The scripts name keys they compute, so Sidekiq's Redis must not be a
Redis Cluster; Sidekiq does not support one either.)

Failures: when Redis or PostgreSQL cannot be reached the round is tried again (doubling delays
up to :data:`MAX_RETRY_DELAY`); the in-flight list is kept meanwhile. When one batch cannot be
stored while both stores answer, its payloads are stored one per transaction, and one that
still fails is kept as a failed job with the error: the payloads behind it go on.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import socket
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Final, cast

import redis.asyncio as aioredis
import structlog
from prometheus_client import Counter, Gauge, Histogram
from sqlalchemy import text

from cocov_jobs.engine.metrics import DURATION_BUCKETS, REGISTRY
from cocov_jobs.services import Services
from cocov_jobs.sidekiq.payload import (
    INVALID_ARGUMENTS,
    PayloadError,
    enqueued_at,
    epoch,
    read_payload,
)
from cocov_jobs.sidekiq.store import Entry, Stored, store

log = structlog.get_logger(__name__)

#: Payloads claimed from the queues (and read from ``schedule``) per round and transaction.
BATCH: Final = 1000
#: Rounds under way at once in one process (:class:`Intake`): while one lane's transaction
#: commits, another claims and reads; PostgreSQL's work, most of a round, runs on two cores.
LANES: Final = 2
#: Seconds between two rounds while the queues are empty.
IDLE_POLL: Final = 0.2
#: Seconds between two looks for processes that died with payloads in flight.
RECOVER_INTERVAL: Final = 1.0
#: First and longest wait (seconds) before a failed round is tried again.
RETRY_DELAY: Final = 0.5
MAX_RETRY_DELAY: Final = 10.0

#: Sidekiq's sorted set of jobs to run later.
SCHEDULE: Final = "schedule"
PROCESSES: Final = "cocov-jobs:intake:processes"
HEARTBEAT_PREFIX: Final = "cocov-jobs:intake:heartbeat:"
INFLIGHT_PREFIX: Final = "cocov-jobs:intake:inflight:"

TAKEN = Counter(
    "cocov_jobs_sidekiq_taken",
    "Sidekiq payloads taken in, by Cocov job class ('other': any other class).",
    ["ruby_class"],
    registry=REGISTRY,
)
KEPT = Counter(
    "cocov_jobs_sidekiq_kept",
    "Sidekiq payloads kept as failed jobs because they cannot become one, by reason.",
    ["reason"],
    registry=REGISTRY,
)
TAKE_DELAY = Histogram(
    "cocov_jobs_sidekiq_take_delay_seconds",
    "From a payload's enqueued_at to its job being committed.",
    buckets=DURATION_BUCKETS,
    registry=REGISTRY,
)
WAITING = Gauge(
    "cocov_jobs_sidekiq_waiting",
    "Payloads waiting in Sidekiq's Redis, by queue ('schedule': the scheduled set).",
    ["queue"],
    registry=REGISTRY,
)
INFLIGHT = Gauge(
    "cocov_jobs_sidekiq_inflight",
    "Payloads claimed by intake processes and not yet acknowledged.",
    registry=REGISTRY,
)
LAG = Gauge(
    "cocov_jobs_sidekiq_intake_lag_seconds",
    "Age (now - enqueued_at) of the oldest payload waiting in the queues; 0 when none.",
    registry=REGISTRY,
)

_CLAIM = """
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
redis.call('SADD', KEYS[2], ARGV[1])
local room = tonumber(ARGV[3]) - redis.call('LLEN', KEYS[3])
for i = 4, #KEYS do
  while room > 0 and redis.call('RPOPLPUSH', KEYS[i], KEYS[3]) do
    room = room - 1
  end
end
return redis.call('LRANGE', KEYS[3], 0, -1)
"""

_RECOVER = """
local moved = 0
for _, id in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  if id ~= ARGV[1] and redis.call('EXISTS', ARGV[2] .. id) == 0 then
    while redis.call('RPOPLPUSH', ARGV[3] .. id, KEYS[2]) do
      moved = moved + 1
    end
    redis.call('SREM', KEYS[1], id)
  end
end
return moved
"""

#: On a clean exit: forget the heartbeat (others recover at once what is left in flight) and
#: leave the process set when nothing is.
_LEAVE = """
redis.call('DEL', KEYS[1])
if redis.call('LLEN', KEYS[3]) == 0 then redis.call('SREM', KEYS[2], ARGV[1]) end
"""


class Intake:
    """The intake of one process: :data:`LANES` :class:`Lane` s taking in at once, until
    stopped (:meth:`run`) or until Sidekiq's Redis is empty (:meth:`drain`)."""

    def __init__(self, services: Services, *, batch: int = BATCH, lanes: int = LANES) -> None:
        # One lane reads ``schedule``: lanes of one process would only wait on each other there.
        self.lanes = [Lane(services, batch=batch, schedule=i == 0) for i in range(lanes)]

    def stop(self) -> None:
        """Finish the rounds under way, then return from :meth:`run`."""
        for lane in self.lanes:
            lane.stop()

    async def run(self) -> None:
        queues = list(self.lanes[0].queues)
        log.info(
            "sidekiq intake started", intake_ids=[lane.id for lane in self.lanes], queues=queues
        )
        await asyncio.gather(*(lane.run() for lane in self.lanes))
        log.info("sidekiq intake stopped")

    async def drain(self) -> int:
        """Take in until the queues and ``schedule`` are empty; return the payloads handled."""
        return sum(await asyncio.gather(*(lane.drain() for lane in self.lanes)))


class Lane:
    """One claim → store → acknowledge loop, with its own id, heartbeat and in-flight list;
    ``schedule``: it also reads the ``schedule`` set."""

    def __init__(self, services: Services, *, batch: int = BATCH, schedule: bool = True) -> None:
        if services.sidekiq_redis is None:
            raise ValueError("the intake needs COCOV_SIDEKIQ_REDIS_URL")
        self.services = services
        self.redis: aioredis.Redis = services.sidekiq_redis
        self.queues = services.settings.sidekiq_queue_names
        self.batch = batch
        self.schedule = schedule
        self.heartbeat_ms = int(services.settings.heartbeat_timeout * 1000)
        self.id = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.inflight_key = INFLIGHT_PREFIX + self.id
        self.heartbeat_key = HEARTBEAT_PREFIX + self.id
        self._stop = asyncio.Event()
        self._recovered_at = 0.0

    def stop(self) -> None:
        """Finish the current round, then return from :meth:`run`."""
        self._stop.set()

    async def run(self) -> None:
        """Take in until :meth:`stop`; a failed round is tried again after a growing delay."""
        delay = RETRY_DELAY
        async with self._alive():
            while not self._stop.is_set():
                try:
                    taken = await self.take_in()
                except Exception as exc:  # a store is down or answering errors: go on later
                    log.warning("sidekiq intake round failed", error=repr(exc), retry_in=delay)
                    await self._sleep(self._stop, delay)
                    delay = min(delay * 2, MAX_RETRY_DELAY)
                    continue
                delay = RETRY_DELAY
                if taken < self.batch:
                    await self._sleep(self._stop, IDLE_POLL)

    async def drain(self) -> int:
        """Take in until the queues and ``schedule`` are empty; return the payloads handled."""
        total = 0
        async with self._alive():
            while taken := await self.take_in(recover=True):
                total += taken
        return total

    async def take_in(self, *, recover: bool = False) -> int:
        """One round (see the module docstring); returns the payloads handled in it."""
        if recover or time.monotonic() - self._recovered_at >= RECOVER_INTERVAL:
            await self._recover()
        claimed: list[bytes] = await self.redis.eval(
            _CLAIM,
            3 + len(self.queues),
            self.heartbeat_key,
            PROCESSES,
            self.inflight_key,
            *(f"queue:{name}" for name in self.queues),
            self.id,
            self.heartbeat_ms,
            self.batch,
        )
        scheduled = (
            await scored_members(self.redis, SCHEDULE, 0, self.batch - 1) if self.schedule else []
        )
        if not claimed and not scheduled:
            return 0
        registry = self.services.registry
        entries = [Entry(read_payload(raw, registry), "queue") for raw in claimed]
        entries += [
            Entry(read_payload(raw, registry), SCHEDULE, run_at=epoch(score))
            for raw, score in scheduled
        ]
        await self._store(entries)
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.delete(self.inflight_key)
            if scheduled:
                pipe.zrem(SCHEDULE, *(raw for raw, _ in scheduled))
            await pipe.execute()
        return len(entries)

    async def _store(self, entries: list[Entry]) -> None:
        """Store ``entries`` in one transaction, or one by one when the batch fails while the
        stores answer (module docstring); count what was taken and kept."""
        try:
            results = [await self._store_batch(entries)]
        except Exception:
            if not await self._stores_answer():
                raise
            results = [await self._store_alone(entry) for entry in entries]
        now = time.time()
        for result in results:
            for entry in result.taken:
                TAKEN.labels(entry.payload.ruby_class).inc()
                if entry.payload.enqueued_at is not None:
                    TAKE_DELAY.observe(max(0.0, now - entry.payload.enqueued_at))
            for entry, problem in result.kept:
                KEPT.labels(problem.kind).inc()
                log.warning(
                    "sidekiq payload kept as a failed job",
                    key=entry.payload.key,
                    source=entry.source,
                    reason=str(problem),
                )

    async def _store_batch(self, entries: list[Entry]) -> Stored:
        async with self.services.sessions.begin() as session:
            return await store(session, self.services.redis, entries)

    async def _store_alone(self, entry: Entry) -> Stored:
        """Store one entry; when even that fails, keep it as a failed job with the error —
        unless the error says to try again (deadlock, serialization) or a store is down: then
        the round fails and is tried again, the payloads still in flight."""
        try:
            return await self._store_batch([entry])
        except Exception as exc:
            if _try_again(exc) or not await self._stores_answer():
                raise
            problem = PayloadError(INVALID_ARGUMENTS, f"could not be stored: {exc!r}")
            kept = dataclasses.replace(entry.payload, request=None, problem=problem)
            return await self._store_batch([dataclasses.replace(entry, payload=kept)])

    async def _stores_answer(self) -> bool:
        """Whether PostgreSQL and the primary Redis answer (a failed batch was its own fault)."""
        try:
            async with self.services.engine.connect() as conn:
                await conn.execute(text("SELECT 1"))
            await self.services.redis.ping()
        except Exception:
            return False
        return True

    async def _recover(self) -> None:
        self._recovered_at = time.monotonic()
        moved = await self.redis.eval(
            _RECOVER,
            2,
            PROCESSES,
            self.inflight_key,
            self.id,
            HEARTBEAT_PREFIX,
            INFLIGHT_PREFIX,
        )
        if moved:
            log.info("recovered payloads of a stopped intake process", payloads=int(moved))

    @contextlib.asynccontextmanager
    async def _alive(self) -> AsyncIterator[None]:
        """Refresh the heartbeat key while the body runs (a slow round must not look like a
        dead lane), then leave. The refresher stops on an event, not by cancellation."""
        done = asyncio.Event()
        beating = asyncio.create_task(self._beat(done))
        try:
            yield
        finally:
            done.set()
            await beating
            await self._leave()

    async def _beat(self, done: asyncio.Event) -> None:
        while not await self._sleep(done, self.heartbeat_ms / 3000):
            with contextlib.suppress(Exception):
                await self.redis.set(self.heartbeat_key, self.id, px=self.heartbeat_ms)

    async def _leave(self) -> None:
        with contextlib.suppress(Exception):
            await self.redis.eval(
                _LEAVE, 3, self.heartbeat_key, PROCESSES, self.inflight_key, self.id
            )

    @staticmethod
    async def _sleep(event: asyncio.Event, seconds: float) -> bool:
        """Wait ``seconds`` or until ``event`` is set; whether it is."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(event.wait(), seconds)
        return event.is_set()


async def scored_members(
    redis: aioredis.Redis, key: str, start: int, stop: int
) -> list[tuple[bytes, float]]:
    """``ZRANGE key start stop WITHSCORES``: (member, score) pairs, lowest score first."""
    members = await redis.zrange(key, start, stop, withscores=True)
    return cast(list[tuple[bytes, float]], members)


def _try_again(exc: BaseException) -> bool:
    """Whether PostgreSQL refused ``exc``'s transaction only for now (SQLSTATE class 40:
    deadlock, serialization failure), directly (asyncpg) or wrapped (SQLAlchemy)."""
    codes = {getattr(exc, "sqlstate", None), getattr(getattr(exc, "orig", None), "sqlstate", None)}
    return any(isinstance(code, str) and code.startswith("40") for code in codes)


# What the intake has to do (metrics scrape, dashboard) -----------------------------------------


@dataclass(frozen=True)
class IntakeStatus:
    """Payloads waiting per queue (and in ``schedule``), in flight, and the oldest one's age."""

    waiting: dict[str, int]
    scheduled: int
    inflight: int
    lag_seconds: float | None


async def intake_status(redis: aioredis.Redis, queues: tuple[str, ...]) -> IntakeStatus:
    """Read the intake's backlog from Sidekiq's Redis (a few commands, no scan)."""
    async with redis.pipeline(transaction=False) as pipe:
        for name in queues:
            pipe.llen(f"queue:{name}")
            pipe.lindex(f"queue:{name}", -1)
        pipe.zcard(SCHEDULE)
        pipe.smembers(PROCESSES)
        replies = await pipe.execute()
    waiting = {name: int(replies[2 * i]) for i, name in enumerate(queues)}
    oldest = [enqueued_at(replies[2 * i + 1]) for i in range(len(queues))]
    ids = sorted(replies[-1])
    async with redis.pipeline(transaction=False) as pipe:
        for process_id in ids:
            pipe.llen(INFLIGHT_PREFIX.encode() + process_id)
        inflight = sum(int(n) for n in await pipe.execute()) if ids else 0
    times = [t for t in oldest if t is not None]
    lag = max(0.0, time.time() - min(times)) if times else None
    return IntakeStatus(waiting, int(replies[-2]), inflight, lag)


async def current_status(services: Services) -> IntakeStatus | None:
    """The intake's backlog now (None when no Sidekiq Redis is configured); raises when it cannot
    be read."""
    if services.sidekiq_redis is None:
        return None
    return await intake_status(services.sidekiq_redis, services.settings.sidekiq_queue_names)


async def refresh_metrics(services: Services) -> None:
    """Set the scrape-time gauges (nothing when no Sidekiq Redis is configured; NaN when it
    cannot be read)."""
    try:
        status = await current_status(services)
    except Exception as exc:
        log.warning("sidekiq redis unreadable for metrics", error=repr(exc))
        for name in (*services.settings.sidekiq_queue_names, SCHEDULE):
            WAITING.labels(name).set(float("nan"))
        INFLIGHT.set(float("nan"))
        LAG.set(float("nan"))
        return
    if status is None:
        return
    for name, count in status.waiting.items():
        WAITING.labels(name).set(count)
    WAITING.labels(SCHEDULE).set(status.scheduled)
    INFLIGHT.set(status.inflight)
    LAG.set(status.lag_seconds or 0.0)
