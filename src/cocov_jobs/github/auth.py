"""Credentials for GitHub requests: the App's installation token (cached in Redis) or a user token.

Rules:

* App JWT: RS256 over ``{iat: now − 60, exp: now + 540, iss: <app id>}`` with the App's private
  key. ``iat`` is backdated for clock drift; ``exp`` stays inside GitHub's ten-minute cap even
  when our clock runs a minute fast.
* The installation token is minted with ``POST {api}/app/installations/{id}/access_tokens`` and
  cached in the primary Redis under :data:`~cocov_jobs.contracts.INSTALLATION_TOKEN` as JSON
  ``{"token": "…", "expires_at": "<ISO 8601>"}`` without TTL: Cocov's shape, so Cocov's API can
  share it. A cached token is used while more than :data:`REFRESH_MARGIN` seconds remain.
* One refresh at a time: within a process an :class:`asyncio.Lock`; across processes the Redis
  lock :data:`TOKEN_LOCK` (``SET NX PX`` :data:`LOCK_TTL`, released by compare-and-delete). A
  caller that finds the lock taken polls the cache every :data:`LOCK_POLL_INTERVAL` seconds and
  takes the lock itself if it frees up; after :data:`LOCK_WAIT` seconds it gives up with a
  :class:`~cocov_jobs.engine.retry.TransientError`.
* :meth:`InstallationTokenProvider.invalidate` drops the cached token after GitHub rejected it
  (401), only if the cache still holds that very token; the client then retries once.
* A user token is used as given and never retried: a 401 means the user must log in again.
* Tokens never appear in a ``repr``, a log line or an error message.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import time
from datetime import datetime
from typing import Protocol

import httpx
import jwt
import redis.asyncio as aioredis

from cocov_jobs import contracts
from cocov_jobs.config import Settings
from cocov_jobs.engine.retry import TransientError
from cocov_jobs.github.errors import classify, transport_error
from cocov_jobs.github.http import API_HEADERS, DEFAULT_TIMEOUT, tls_context

log = logging.getLogger(__name__)

#: Seconds before ``expires_at`` from which a cached installation token is refreshed.
REFRESH_MARGIN = 300.0
#: Seconds the App JWT's ``iat`` is backdated.
JWT_BACKDATE = 60
#: Seconds from now to the App JWT's ``exp``.
JWT_LIFETIME = 540
#: Redis lock held by the one process refreshing the installation token (Cocov's lock name).
TOKEN_LOCK = "locks:github:installation:token"
#: Lifetime of :data:`TOKEN_LOCK`, seconds: longer than a mint can take (connect + read timeouts).
LOCK_TTL = 60.0
#: Longest wait for another process's refresh, seconds, before failing transiently.
LOCK_WAIT = 65.0
#: Seconds between two looks at the cache while another process refreshes.
LOCK_POLL_INTERVAL = 0.05

_RELEASE_LOCK = """
if redis.call("GET", KEYS[1]) == ARGV[1] then return redis.call("DEL", KEYS[1]) end
return 0
"""
_DELETE_IF_TOKEN = """
local raw = redis.call("GET", KEYS[1])
if not raw then return 0 end
local ok, doc = pcall(cjson.decode, raw)
if ok and type(doc) == "table" and doc["token"] == ARGV[1] then
  return redis.call("DEL", KEYS[1])
end
return 0
"""


class TokenSource(Protocol):
    """Where a client gets the token of its next request."""

    #: What the token is, for error messages ("installation token", "user token").
    description: str

    async def token(self) -> str:
        """A token to send now."""
        ...

    async def invalidate(self, token: str) -> bool:
        """GitHub rejected ``token``; return True when asking :meth:`token` again may help."""
        ...


def app_jwt(app_id: str, private_key_pem: bytes, *, now: float | None = None) -> str:
    """The App's JWT, valid :data:`JWT_LIFETIME` seconds."""
    issued = int(time.time() if now is None else now)
    claims = {"iat": issued - JWT_BACKDATE, "exp": issued + JWT_LIFETIME, "iss": app_id}
    return jwt.encode(claims, private_key_pem, algorithm="RS256")


class UserToken:
    """A user's OAuth token, used as given."""

    description = "user token"

    def __init__(self, token: str) -> None:
        self._token = token

    async def token(self) -> str:
        return self._token

    async def invalidate(self, token: str) -> bool:
        return False

    def __repr__(self) -> str:
        return "UserToken(<redacted>)"


class InstallationTokenProvider:
    """The App installation's token, shared through Redis by every process (see module rules).

    Share one instance per process so its :class:`asyncio.Lock` serialises local callers.
    """

    description = "installation token"

    def __init__(
        self,
        redis: aioredis.Redis,
        *,
        api_url: str,
        app_id: str,
        private_key_pem: bytes,
        installation_id: str,
        refresh_margin: float = REFRESH_MARGIN,
        lock_wait: float = LOCK_WAIT,
    ) -> None:
        self._redis = redis
        self._api_url = api_url.rstrip("/")
        self._app_id = app_id
        self._private_key_pem = private_key_pem
        self._installation_id = installation_id
        self._refresh_margin = refresh_margin
        self._lock_wait = lock_wait
        self._local = asyncio.Lock()

    @classmethod
    def from_settings(cls, settings: Settings, redis: aioredis.Redis) -> InstallationTokenProvider:
        return cls(
            redis,
            api_url=settings.github_api_url,
            app_id=settings.github_app_id,
            private_key_pem=settings.github_app_private_key_pem,
            installation_id=settings.github_app_installation_id,
        )

    def __repr__(self) -> str:
        return f"InstallationTokenProvider(installation_id={self._installation_id!r})"

    async def token(self) -> str:
        """The cached token, or a fresh one when less than the refresh margin remains."""
        cached = await self._fresh_cached()
        if cached:
            return cached
        async with self._local:
            return await self._fresh_cached() or await self._refresh()

    async def invalidate(self, token: str) -> bool:
        """Forget ``token`` if the cache still holds it (another caller may have replaced it)."""
        await self._redis.eval(_DELETE_IF_TOKEN, 1, contracts.INSTALLATION_TOKEN, token)
        return True

    async def _fresh_cached(self) -> str | None:
        raw = await self._redis.get(contracts.INSTALLATION_TOKEN)
        try:
            doc = json.loads(raw or "null")
            token, expires_at = doc["token"], datetime.fromisoformat(doc["expires_at"])
        except (TypeError, KeyError, ValueError):
            return None
        remaining = expires_at.timestamp() - time.time()
        return str(token) if token and remaining > self._refresh_margin else None

    async def _refresh(self) -> str:
        """Mint under the Redis lock, or wait for the process holding it to store its token."""
        deadline = time.monotonic() + self._lock_wait
        while True:
            owner = secrets.token_hex(16)
            if await self._redis.set(TOKEN_LOCK, owner, nx=True, px=int(LOCK_TTL * 1000)):
                try:
                    return await self._fresh_cached() or await self._mint_and_store()
                finally:
                    await self._redis.eval(_RELEASE_LOCK, 1, TOKEN_LOCK, owner)
            await asyncio.sleep(LOCK_POLL_INTERVAL)
            cached = await self._fresh_cached()
            if cached:
                return cached
            if time.monotonic() > deadline:
                raise TransientError(
                    "timed out waiting for another process to refresh the GitHub installation token"
                )

    async def _mint_and_store(self) -> str:
        path = f"/app/installations/{self._installation_id}/access_tokens"
        bearer = app_jwt(self._app_id, self._private_key_pem)
        async with httpx.AsyncClient(
            headers=API_HEADERS, timeout=DEFAULT_TIMEOUT, verify=tls_context()
        ) as http:
            try:
                response = await http.post(
                    self._api_url + path, headers={"Authorization": f"Bearer {bearer}"}
                )
            except httpx.TransportError as exc:
                raise transport_error(exc, method="POST", path=path) from exc
        error = classify(response, method="POST", path=path, credential="App JWT", secrets=[bearer])
        if error:
            raise error
        body = response.json()
        token, expires_at = str(body["token"]), str(body["expires_at"])
        cached = json.dumps({"token": token, "expires_at": expires_at})
        await self._redis.set(contracts.INSTALLATION_TOKEN, cached)
        log.info("minted a GitHub installation token valid until %s", expires_at)
        return token
