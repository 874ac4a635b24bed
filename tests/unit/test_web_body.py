"""Request bodies: JSON that nests too deeply for the parser is a 400, not a crash (issue 7)."""

from __future__ import annotations

import pytest

from cocov_jobs.web.body import parse_json_object
from cocov_jobs.web.errors import ApiError

#: Far deeper than CPython's recursion limit (1,000), well inside every body size limit.
DEPTH = 100_000


@pytest.mark.parametrize(
    "body",
    [
        b"[" * DEPTH + b"]" * DEPTH,
        b'{"a":' * DEPTH + b"1" + b"}" * DEPTH,
        b'{"data": ' + b"[" * DEPTH + b"]" * DEPTH + b"}",
    ],
    ids=["arrays", "objects", "inside-an-object"],
)
def test_too_deeply_nested_json_is_invalid_json(body: bytes) -> None:
    with pytest.raises(ApiError) as caught:
        parse_json_object(body)
    assert caught.value.status == 400
    assert caught.value.code == "request.invalid_json"
