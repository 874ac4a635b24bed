"""HTTP conventions shared by every request cocov-jobs sends to GitHub."""

from __future__ import annotations

import httpx

#: REST API version pinned by ``X-GitHub-Api-Version``.
API_VERSION = "2022-11-28"
#: ``User-Agent`` of every request (GitHub rejects requests without one).
USER_AGENT = "cocov-jobs"
#: Headers of every request, besides ``Authorization``.
API_HEADERS = {
    "Accept": "application/vnd.github+json",
    "X-GitHub-Api-Version": API_VERSION,
    "User-Agent": USER_AGENT,
}
#: Seconds to establish a connection to GitHub.
CONNECT_TIMEOUT = 10.0
#: Seconds to wait for each read of an answer (and each write and pool checkout).
READ_TIMEOUT = 30.0
#: Timeouts of every request unless a client is given others.
DEFAULT_TIMEOUT = httpx.Timeout(READ_TIMEOUT, connect=CONNECT_TIMEOUT)
