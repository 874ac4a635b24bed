"""A PostgreSQL wire-protocol proxy that counts what its clients ask of the server.

Point a client at :attr:`CountingProxy.url` instead of the server: every byte is relayed
unchanged, and the messages are counted per client *role* (the ``application_name`` of the
connection's start-up message, so the worker's own pool and its job sessions are told apart):

* **statements** — ``Execute`` messages (extended protocol: asyncpg, libpq's
  ``exec_params``) plus simple ``Query`` messages (``BEGIN``, ``COMMIT``, …);
* **round trips** — the times the client sends again after the server has answered: each is
  one wait for the server, however many messages it pipelines (asyncpg prepares a statement
  with ``Flush``, not ``Sync``, so ``ReadyForQuery`` messages alone would miss that wait);
* **prepares** — ``Parse`` messages (a statement the client had not prepared on that connection);
* **transactions** — ``ReadyForQuery`` back to idle after at least one statement: a commit
  or a rollback of an explicit transaction, or one statement run in autocommit.

The proxy refuses TLS and GSSAPI encryption (it answers ``N``, as a server without them does)
so that the traffic stays readable; clients with ``sslmode=prefer`` (asyncpg's and libpq's
default) carry on in clear. It is meant for a counting pass, not for timing: relaying costs
this process CPU on every message.
"""

from __future__ import annotations

import asyncio
import contextlib
import struct
from collections import Counter
from collections.abc import AsyncIterator, Callable
from urllib.parse import parse_qs, parse_qsl, urlencode, urlsplit, urlunsplit

#: Start-up request codes (in place of the protocol version) that ask for encryption or cancel.
SSL_REQUEST = 80877103
GSSENC_REQUEST = 80877104
CANCEL_REQUEST = 80877102
#: What the counters hold, per role.
KINDS = ("statements", "round_trips", "prepares", "transactions")
#: Bytes read from a socket at a time.
CHUNK = 1 << 16


class _Scanner:
    """Splits a relayed byte stream into messages (type byte, 4-byte length) as it passes."""

    def __init__(self, on_message: Callable[[int, int], None]) -> None:
        """``on_message(type, first body byte or -1)``."""
        self.on_message = on_message
        self._header = b""
        self._skip = 0
        self._type = -1

    def feed(self, chunk: bytes) -> None:
        at, size = 0, len(chunk)
        while at < size:
            if self._skip:
                if self._type >= 0:  # the first body byte was asked for
                    self.on_message(self._type, chunk[at])
                    self._type = -1
                step = min(self._skip, size - at)
                self._skip -= step
                at += step
                continue
            take = 5 - len(self._header)
            self._header += chunk[at : at + take]
            at += take
            if len(self._header) < 5:
                return
            kind = self._header[0]
            self._skip = int.from_bytes(self._header[1:5], "big") - 4
            self._header = b""
            if self._skip:
                self._type = kind
            else:
                self.on_message(kind, -1)


class _Connection:
    """What one relayed connection adds to its role's counters."""

    def __init__(self, values: Counter[str]) -> None:
        self.values = values
        self.answered = True  # the server spoke since the client last sent
        self.pending = False  # a statement was sent since the last ReadyForQuery

    def from_client(self, kind: int, _first: int) -> None:
        if self.answered:
            self.values["round_trips"] += 1
            self.answered = False
        if kind in (ord("E"), ord("Q")):
            self.values["statements"] += 1
            self.pending = True
        elif kind == ord("P"):
            self.values["prepares"] += 1

    def from_server(self, kind: int, first: int) -> None:
        self.answered = True
        if kind == ord("Z"):
            if self.pending and first == ord("I"):
                self.values["transactions"] += 1
            self.pending = False


class CountingProxy:
    """Relays connections to ``server_url``'s host and port, counting per role."""

    def __init__(self, server_url: str) -> None:
        """``server_url``: TCP (``host:port``) or a Unix socket directory (``?host=/dir``)."""
        parts = urlsplit(server_url)
        socket_dir = parse_qs(parts.query).get("host", [""])[0]
        self.server_host = parts.hostname or "127.0.0.1"
        self.server_port = parts.port or 5432
        self.server_socket = f"{socket_dir}/.s.PGSQL.{self.server_port}" if socket_dir else None
        self.roles: dict[str, Counter[str]] = {}
        self.port = 0
        self._server: asyncio.Server | None = None

    def url(self, database_url: str) -> str:
        """``database_url`` pointed at this proxy."""
        parts = urlsplit(database_url)
        auth = parts.netloc.rpartition("@")[0]
        netloc = f"{auth}@127.0.0.1:{self.port}" if auth else f"127.0.0.1:{self.port}"
        query = urlencode([(k, v) for k, v in parse_qsl(parts.query) if k != "host"])
        return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))

    def snapshot(self) -> dict[str, dict[str, int]]:
        """Every role's counters now."""
        return {role: {kind: counts[kind] for kind in KINDS} for role, counts in self.roles.items()}

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[CountingProxy]:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        try:
            yield self
        finally:
            self._server.close()
            with contextlib.suppress(Exception):
                await self._server.wait_closed()

    async def _accept(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        try:
            startup = await self._startup(client_r, client_w)
            if startup is None:
                return
            server_r, server_w = await (
                asyncio.open_unix_connection(self.server_socket)
                if self.server_socket
                else asyncio.open_connection(self.server_host, self.server_port)
            )
        except (OSError, asyncio.IncompleteReadError):
            client_w.close()
            return
        server_w.write(startup)
        connection = _Connection(self.roles.setdefault(_application_name(startup), Counter()))
        await asyncio.gather(
            _relay(client_r, server_w, _Scanner(connection.from_client)),
            _relay(server_r, client_w, _Scanner(connection.from_server)),
        )

    @staticmethod
    async def _startup(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bytes | None:
        """The client's start-up message, after refusing encryption; None for a cancel."""
        while True:
            header = await reader.readexactly(8)
            length, code = struct.unpack("!ii", header)
            if code in (SSL_REQUEST, GSSENC_REQUEST):
                writer.write(b"N")
                await writer.drain()
                continue
            body = await reader.readexactly(length - 8)
            if code == CANCEL_REQUEST:
                writer.close()  # cancels are not relayed: nothing here needs them
                return None
            return header + body


def _application_name(startup: bytes) -> str:
    """``application_name`` of a start-up message (``key\\0value\\0…\\0`` after the version)."""
    fields = startup[8:].split(b"\0")
    params = dict(zip(fields[0::2], fields[1::2], strict=False))
    return params.get(b"application_name", b"").decode(errors="replace")


async def _relay(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, scanner: _Scanner
) -> None:
    try:
        while chunk := await reader.read(CHUNK):
            scanner.feed(chunk)
            writer.write(chunk)
            await writer.drain()
    except OSError:
        pass
    finally:
        with contextlib.suppress(Exception):
            writer.close()
