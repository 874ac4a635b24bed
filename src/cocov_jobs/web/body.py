"""Reading request bodies: a size limit enforced while streaming, and JSON objects.

:func:`read_body` answers 413 ``request.too_large`` as soon as the declared ``Content-Length``
or the bytes received so far exceed the limit, without reading the rest.
:func:`parse_json_object` answers 400 ``request.invalid_json`` for text that is not JSON or
nests deeper than the parser's recursion limit, and 400 ``request.not_an_object`` for JSON that
is not an object.
"""

from __future__ import annotations

import json
from typing import Any

from starlette.requests import Request

from cocov_jobs.web.errors import ApiError

#: One mebibyte, the unit of the size limits.
MIB = 1024 * 1024


def _too_large(limit: int) -> ApiError:
    return ApiError(413, "request.too_large", f"Request body exceeds {limit} bytes")


async def read_body(request: Request, limit: int) -> bytes:
    """The whole body, or 413 once more than ``limit`` bytes are declared or received."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise _too_large(limit)
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _too_large(limit)
        chunks.append(chunk)
    return b"".join(chunks)


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
