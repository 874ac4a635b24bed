"""Request authentication, with Cocov's error codes (docs/architecture.md §6.9).

Two credentials, both in the ``Authorization`` header (scheme matched case-insensitively):

* ``token <repositories.token>`` — the coverage reporter (:func:`upload_repository`);
* ``bearer <service token>`` — the service API (:func:`service_token`). Service tokens are
  Cocov's: ``cos_`` + 64 hex digits, looked up by ``base64(sha256(token))`` in
  ``service_tokens``, so tokens an existing Cocov installation issued work unchanged. Each
  use stamps ``last_used_at``.

A missing header is 401 ``auth.no_authorization``; another scheme or an empty token is 401
``auth.invalid_token``; an unknown service token is 401 ``auth.invalid_token``; an unknown
repository token is 403 ``auth.forbidden`` (as Cocov answers the reporter).
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.requests import Request

from cocov_jobs.crypto import service_token_digest
from cocov_jobs.db.models import Repository, ServiceToken, utc_now
from cocov_jobs.web.errors import ApiError

#: Scheme of the coverage reporter's repository token.
TOKEN_SCHEME = "token"
#: Scheme of service tokens.
BEARER_SCHEME = "bearer"


@dataclass(frozen=True)
class ServiceCaller:
    """The service token a request authenticated with."""

    token_id: int
    owner_id: int

    @property
    def source(self) -> str:
        """How the job history names this caller as the one who enqueued a job."""
        return f"token:{self.token_id}"


def credentials(request: Request, scheme: str) -> str:
    """The token after ``scheme`` in the ``Authorization`` header, else a 401."""
    header = request.headers.get("authorization", "").strip()
    if not header:
        raise ApiError(401, "auth.no_authorization", "Authorization header is missing")
    given, _, token = header.partition(" ")
    token = token.strip()
    if given.lower() != scheme or not token:
        raise ApiError(
            401, "auth.invalid_token", f"Expected the header 'Authorization: {scheme} <token>'"
        )
    return token


async def upload_repository(session: AsyncSession, request: Request) -> int:
    """Id of the repository whose token the request carries, else 401/403."""
    token = credentials(request, TOKEN_SCHEME)
    repository_id = await session.scalar(select(Repository.id).where(Repository.token == token))
    if repository_id is None:
        raise ApiError(403, "auth.forbidden", "No repository has this token")
    return repository_id


async def use_service_token(session: AsyncSession, token: str) -> ServiceCaller | None:
    """The service token ``token`` (its ``last_used_at`` stamped), or None if unknown."""
    row = (
        await session.execute(
            update(ServiceToken)
            .where(ServiceToken.token_hash == service_token_digest(token.strip()))
            .values(last_used_at=utc_now(), updated_at=utc_now())
            .returning(ServiceToken.id, ServiceToken.owner_id)
        )
    ).one_or_none()
    return None if row is None else ServiceCaller(token_id=row.id, owner_id=row.owner_id)


async def service_token(session: AsyncSession, request: Request) -> ServiceCaller:
    """The service token the request carries (its ``last_used_at`` stamped), else 401."""
    caller = await use_service_token(session, credentials(request, BEARER_SCHEME))
    if caller is None:
        raise ApiError(401, "auth.invalid_token", "Unknown service token")
    return caller
