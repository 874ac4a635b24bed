"""HTTP conventions shared by every request cocov-jobs sends to GitHub."""

from __future__ import annotations

import functools
import ssl

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


@functools.cache
def tls_context() -> ssl.SSLContext:
    """The TLS settings of every client that talks to GitHub, built once per process (CA bundle
    from certifi, or ``SSL_CERT_FILE``/``SSL_CERT_DIR``, as httpx does). httpx builds one per
    client otherwise, loading the CA bundle each time: about 23 ms of CPU, most of a permission
    sync's, which makes a client per user token."""
    return httpx.create_ssl_context()
