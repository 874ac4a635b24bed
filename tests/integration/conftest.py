"""Integration fixtures: a GitHub fake over real HTTP, one per test."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from cocov_jobs.testing import FakeGitHub


@pytest.fixture
def fake_github(tmp_path: Path) -> Iterator[FakeGitHub]:
    """A started :class:`FakeGitHub` for org ``acme``, its repositories under ``tmp_path``."""
    with FakeGitHub(org="acme", tmp_dir=tmp_path / "github") as fake:
        yield fake
