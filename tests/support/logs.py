"""Reading what a test's process logged."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import pytest

from cocov_jobs import logs


def json_log_lines(captured: str) -> list[dict[str, Any]]:
    """The JSON log lines (``COCOV_LOG_FORMAT=json``) among ``captured`` standard error."""
    return [json.loads(line) for line in captured.splitlines() if line.startswith("{")]


@dataclass
class JsonLogs:
    """This test's log lines, as JSON objects: :meth:`start` (in the test, where standard error
    is the one captured for it), then :meth:`read` what was written since the last read."""

    capsys: pytest.CaptureFixture[str]

    def start(self) -> None:
        logs.configure("json", "INFO")

    def read(self) -> list[dict[str, Any]]:
        return json_log_lines(self.capsys.readouterr().err)
