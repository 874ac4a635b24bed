"""A worker's advisory locks: held on one PostgreSQL connection, taken and released in batches.

A job declared with ``lock="…"``, and code that locks a resource (a commit's clone), holds a
session-level advisory lock on its key while it runs (docs/architecture.md §4.5). A worker
process holds all of its locks on one connection of its own, so its running jobs cost it one
connection instead of one each, and the claims and releases of jobs that start and end together
reach PostgreSQL in one statement: while one statement is out, the next collects every request
made meanwhile. At low load that is one round trip per claim and per release, as before.

PostgreSQL's session-level locks are re-entrant for the session that holds them, so exclusion
within the process is kept here: a key is held at most once, and a claim of a held key is refused
without a round trip. A key stays held until its release has reached PostgreSQL.

When the connection is lost, PostgreSQL drops every lock on it, as it does when a worker is
killed; jobs that held one keep running (as they did when a job's own lock connection was lost),
and the next statement opens a new connection. A statement that fails while the connection still
works cannot tell which locks it took, so the connection is closed, which drops them all.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import asyncpg
import structlog

from cocov_jobs.db.session import connection_lost

log = structlog.get_logger(__name__)

#: Releases the keys of $2 and tries those of $1, answering in $1's order. No key is in both
#: (a key stays held here until its release is answered), so their order does not matter.
_STATEMENT = """
SELECT
    (SELECT count(pg_advisory_unlock(hashtextextended(key, 0))) FROM unnest($2::text[]) AS key),
    ARRAY(
        SELECT pg_try_advisory_lock(hashtextextended(key, 0))
        FROM unnest($1::text[]) WITH ORDINALITY AS claim(key, position)
        ORDER BY position
    )
"""

#: Seconds :meth:`Locks.close` waits for releases still on their way.
CLOSE_TIMEOUT = 5.0

T = TypeVar("T")
_Requests = list[tuple[str, "asyncio.Future[Any]"]]


class Locks:
    """The advisory locks of one worker process (see the module docstring).

    ``connect`` opens the connection they are held on (again after it was lost).
    """

    def __init__(self, connect: Callable[[], Awaitable[asyncpg.Connection]]) -> None:
        self._connect = connect
        self._connection: asyncpg.Connection | None = None
        #: Keys held in this process, being claimed or being released.
        self._held: set[str] = set()
        self._claims: _Requests = []
        self._releases: _Requests = []
        self._sender: asyncio.Task[None] | None = None

    @contextlib.asynccontextmanager
    async def hold(self, key: str) -> AsyncIterator[bool]:
        """Try the lock on ``key``; yield whether it was taken; release it after the block."""
        acquired = await self._claim(key)
        try:
            yield acquired
        finally:
            if acquired:
                await self._release(key)

    async def close(self) -> None:
        """Send the releases still waiting, then close the connection (dropping any lock)."""
        if self._sender is not None:
            await asyncio.wait({self._sender}, timeout=CLOSE_TIMEOUT)
        if self._connection is not None:
            with contextlib.suppress(Exception):
                await self._connection.close(timeout=CLOSE_TIMEOUT)
            self._connection = None

    async def _claim(self, key: str) -> bool:
        if key in self._held:
            return False
        self._held.add(key)
        answer: asyncio.Future[bool] = self._submit(self._claims, key)
        try:
            acquired = await asyncio.shield(answer)
        except asyncio.CancelledError:
            # The claim goes on without us: release what it takes.
            answer.add_done_callback(lambda done: self._abandon(key, done))
            raise
        except BaseException:
            self._held.discard(key)  # the statement failed: its connection, and locks, are gone
            raise
        if not acquired:
            self._held.discard(key)
        return acquired

    def _abandon(self, key: str, claim: asyncio.Future[bool]) -> None:
        if not claim.cancelled() and claim.exception() is None and claim.result():
            self._release_later(key)
        else:
            self._held.discard(key)

    async def _release(self, key: str) -> None:
        # Shielded: a job cancelled while its release is out still releases.
        await asyncio.shield(self._release_later(key))

    def _release_later(self, key: str) -> asyncio.Future[None]:
        released: asyncio.Future[None] = self._submit(self._releases, key)
        released.add_done_callback(lambda _: self._held.discard(key))
        return released

    def _submit(self, requests: _Requests, key: str) -> asyncio.Future[T]:
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        requests.append((key, future))
        if self._sender is None or self._sender.done():
            self._sender = asyncio.create_task(self._send())
        return future

    async def _send(self) -> None:
        """Send the waiting claims and releases, one statement at a time, until none wait."""
        while self._claims or self._releases:
            claims, self._claims = self._claims, []
            releases, self._releases = self._releases, []
            try:
                connection = await self._open()
                row = await connection.fetchrow(
                    _STATEMENT, [key for key, _ in claims], [key for key, _ in releases]
                )
            except Exception as exc:
                error = self._discard(exc)
                for _, future in claims:
                    if not future.done():
                        future.set_exception(error)
                for _, future in releases:  # the lock went with the connection
                    if not future.done():
                        future.set_result(None)
                continue
            except BaseException as exc:  # cancelled: the loop is closing
                self._discard(exc)
                for _, future in claims + self._claims + releases + self._releases:
                    future.cancel()
                self._claims, self._releases = [], []
                raise
            assert row is not None
            for (_, future), taken in zip(claims, row[1], strict=True):
                if not future.done():
                    future.set_result(bool(taken))
            for _, future in releases:
                if not future.done():
                    future.set_result(None)

    async def _open(self) -> asyncpg.Connection:
        if self._connection is None or self._connection.is_closed():
            self._connection = await self._connect()
        return self._connection

    def _discard(self, exc: BaseException) -> BaseException:
        """Close the connection after a failed statement (its locks go with it); the error to
        give the claims: a lost connection when the connection closed under the statement
        (asyncpg may report the server's goodbye, racing a statement, as an internal error)."""
        connection, self._connection = self._connection, None
        if connection is None:
            return exc
        closed = connection.is_closed()
        connection.terminate()
        if connection_lost(exc):
            return exc
        if closed:
            lost: BaseException = asyncpg.exceptions.ConnectionDoesNotExistError(
                f"the connection closed under the statement: {exc!r}"
            )
            lost.__cause__ = exc
            return lost
        log.warning("advisory locks dropped with their connection", error=repr(exc))
        return exc
