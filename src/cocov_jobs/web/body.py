"""Reading request bodies: size limits and deadlines enforced while streaming, bounded memory
for unauthenticated bodies, and JSON objects.

Every body is read chunk by chunk as it arrives:

* more than the route's ``limit`` declared (``Content-Length``) or received — 413
  ``request.too_large`` at once, without reading the rest;
* not received whole within ``COCOV_WEB_BODY_TIMEOUT`` seconds — 408 ``request.timeout``
  (request headers have their own deadline, ``COCOV_WEB_HEADER_TIMEOUT``, in
  :mod:`~cocov_jobs.web.server`).

Bodies read before their sender is known (webhooks: the signature covers the whole body) are
:func:`spool_body`'d: at most :data:`MAX_UNAUTHENTICATED_BODIES` are read at once (a request
waits up to ``COCOV_WEB_HEADER_TIMEOUT`` for a slot, then gets 503 ``request.busy``), each
keeps at most :data:`SPOOL_BYTES` in memory and the rest in a temporary file, and every chunk
is fed to the signature's HMAC as it arrives. So stalled or slow senders hold at most
``MAX_UNAUTHENTICATED_BODIES × SPOOL_BYTES`` (8 MiB) of body memory, for at most the body
deadline each.

:func:`parse_json_object` answers 400 ``request.invalid_json`` for text that is not JSON or
nests deeper than the parser's recursion limit, and 400 ``request.not_an_object`` for JSON that
is not an object.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import tempfile
from collections.abc import AsyncIterator, Callable
from typing import IO, Any

from starlette.requests import ClientDisconnect, Request

from cocov_jobs.web.errors import RETRY_AFTER_SECONDS, ApiError

#: One mebibyte, the unit of the size limits.
MIB = 1024 * 1024
#: Unauthenticated bodies read at the same time, per web process.
MAX_UNAUTHENTICATED_BODIES = 8
#: Bytes of one unauthenticated body kept in memory; the rest is written to a temporary file.
SPOOL_BYTES = 1 * MIB


def _too_large(limit: int) -> ApiError:
    return ApiError(413, "request.too_large", f"Request body exceeds {limit} bytes")


def unauthenticated_body_slots() -> asyncio.Semaphore:
    """The slots :func:`spool_body` takes (one set per app, in ``app.state``)."""
    return asyncio.Semaphore(MAX_UNAUTHENTICATED_BODIES)


async def _stream(request: Request, limit: int, consume: Callable[[bytes], object]) -> None:
    """Feed the body's chunks to ``consume`` within the deadline and the size limit."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise _too_large(limit)
    timeout = request.app.state.services.settings.web_body_timeout
    size = 0
    try:
        async with asyncio.timeout(timeout):
            async for chunk in request.stream():
                size += len(chunk)
                if size > limit:
                    raise _too_large(limit)
                consume(chunk)
    except TimeoutError:
        raise ApiError(
            408, "request.timeout", f"Request body not received within {timeout:g} seconds"
        ) from None
    except ClientDisconnect:
        raise ApiError(400, "request.incomplete", "The client went away mid-body") from None


async def read_body(request: Request, limit: int) -> bytes:
    """The whole body in memory (senders already authenticated), or 413/408."""
    chunks: list[bytes] = []
    await _stream(request, limit, chunks.append)
    return b"".join(chunks)


@contextlib.asynccontextmanager
async def _slot(request: Request) -> AsyncIterator[None]:
    """One of the app's unauthenticated-body slots, waited for at most the header timeout."""
    slots: asyncio.Semaphore = request.app.state.unauthenticated_bodies
    try:
        async with asyncio.timeout(request.app.state.services.settings.web_header_timeout):
            await slots.acquire()
    except TimeoutError:
        raise ApiError(
            503,
            "request.busy",
            "Too many requests are being received; try again later",
            headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
        ) from None
    try:
        yield
    finally:
        slots.release()


@contextlib.asynccontextmanager
async def spool_body(
    request: Request, limit: int, *, observers: tuple[Any, ...] = ()
) -> AsyncIterator[IO[bytes]]:
    """The body of a sender not yet authenticated, in a spooled file positioned at its start.

    Each chunk is also passed to ``update`` of every observer (``hmac``/``hashlib`` objects) as
    it arrives. See the module docstring for the bounds.
    """
    with tempfile.SpooledTemporaryFile(max_size=SPOOL_BYTES) as spool:

        def consume(chunk: bytes) -> None:
            spool.write(chunk)
            for observer in observers:
                observer.update(chunk)

        async with _slot(request):
            await _stream(request, limit, consume)
        spool.seek(0)
        yield spool


def parse_json_object(body: bytes) -> dict[str, Any]:
    """``body`` parsed as a JSON object (UTF-8), else a 400 :class:`ApiError`."""
    try:
        value = json.loads(body)
    except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError
        raise ApiError(400, "request.invalid_json", f"Body is not valid JSON: {exc}") from None
    except RecursionError:  # nesting deeper than the parser's recursion limit
        message = "Body is not valid JSON: nested too deeply"
        raise ApiError(400, "request.invalid_json", message) from None
    if not isinstance(value, dict):
        raise ApiError(400, "request.not_an_object", "Body must be a JSON object")
    return value
