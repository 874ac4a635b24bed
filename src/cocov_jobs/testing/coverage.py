"""Coverage upload files in the reporters' wire format (tests and fault scenarios)."""

from __future__ import annotations

import base64

from cocov_jobs.coverage import encode_lines


def covered(covered_lines: int, missed_lines: int) -> str:
    """One file of an upload (base64 of the wire format): ``covered_lines`` hit once, then
    ``missed_lines`` never hit."""
    return base64.b64encode(encode_lines([1] * covered_lines + [0] * missed_lines)).decode()
