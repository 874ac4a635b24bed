"""Reading what a test's process logged."""

from __future__ import annotations

import json
from typing import Any


def json_log_lines(captured: str) -> list[dict[str, Any]]:
    """The JSON log lines (``COCOV_LOG_FORMAT=json``) among ``captured`` standard error."""
    return [json.loads(line) for line in captured.splitlines() if line.startswith("{")]
