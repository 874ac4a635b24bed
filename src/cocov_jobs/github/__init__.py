"""GitHub access for the jobs: App JWT, installation token cache, user client, statuses.

Built on httpx and PyJWT rather than a full SDK (githubkit, PyGithub): both are small and
async-ready, and the jobs need fine control over exactly the parts an SDK hides — conditional
requests with ETags, rate-limit headers turned into deferrals instead of sleeps, error
classification into the engine's retry classes, and keeping tokens out of every message.
githubkit would bring generated models for the whole API for the five endpoints we call.

Entry points: :func:`installation_client`, :func:`user_client`, :class:`GitHubClient`,
:class:`InstallationTokenProvider`, :func:`level_from_github`.
"""

from __future__ import annotations

from cocov_jobs.github.auth import InstallationTokenProvider, TokenSource, UserToken, app_jwt
from cocov_jobs.github.client import GitHubClient, installation_client, user_client
from cocov_jobs.github.errors import GitHubError, GitHubRateLimited, GitHubUnavailable
from cocov_jobs.github.levels import level_from_github

__all__ = [
    "GitHubClient",
    "GitHubError",
    "GitHubRateLimited",
    "GitHubUnavailable",
    "InstallationTokenProvider",
    "TokenSource",
    "UserToken",
    "app_jwt",
    "installation_client",
    "level_from_github",
    "user_client",
]
