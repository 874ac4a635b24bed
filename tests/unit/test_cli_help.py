"""The command line's help: plain text, no markup or type placeholders, every job listed."""

from __future__ import annotations

import re

import pytest
from typer.testing import CliRunner

from cocov_jobs import jobs
from cocov_jobs.cli.main import app

COMMANDS = [
    [],
    *([name] for name in ("run", "worker", "web", "enqueue", "stats", "quiet", "demo")),
    ["db", "upgrade"],
    *(["jobs", name] for name in ("list", "show", "retry", "cancel")),
    ["tokens", "create"],
]


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c) or "cocov-jobs")
def test_help_is_plain_text(command: list[str]) -> None:
    result = CliRunner().invoke(app, [*command, "--help"], terminal_width=200)
    assert result.exit_code == 0, result.output
    assert "``" not in result.output  # reST markup
    assert not re.search(r"<(bool|str|int|path|list\[str\]|int range)>", result.output)
    assert "╭" not in result.output  # rich panels


def test_version() -> None:
    result = CliRunner().invoke(app, ["--version"])
    assert result.exit_code == 0 and re.fullmatch(r"cocov-jobs \d+\.\d+\.\d+\S*\n", result.output)


def test_enqueue_help_lists_every_job_with_its_arguments() -> None:
    result = CliRunner().invoke(app, ["enqueue", "--help"], terminal_width=200)
    lines = result.output.splitlines()
    for definition in jobs.registry():
        assert any(line.strip().startswith(definition.usage() + " ") for line in lines), definition
    assert "process-coverage REPOSITORY_ID SHA UPLOAD_ID" in result.output
