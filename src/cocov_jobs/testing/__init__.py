"""Test doubles that speak real protocols: a GitHub REST API + git smart-HTTP server.

Nothing in the product imports this package; tests, benchmarks and the demo do.
"""

from __future__ import annotations

from cocov_jobs.testing.fake_git import DEFAULT_AUTHOR
from cocov_jobs.testing.github_fake import FakeGitHub, FakeRepo, FakeUser, RecordedRequest

__all__ = ["DEFAULT_AUTHOR", "FakeGitHub", "FakeRepo", "FakeUser", "RecordedRequest"]
