"""Cocov's admin "Sidekiq" button opens this dashboard (docs/architecture.md §6.12).

Cocov's API answers ``POST /v1/admin/sidekiq_panel_token`` with ``{"token": "csp_<64 hex>"}``
and keeps ``cocov:sidekiq_auth:<sha256 hex of the token>`` =
``Base64(Cocov-encrypt(user id))`` in its Redis for 60 seconds; the browser then opens
``GET /v1/admin/sidekiq_panel?token=…``. Routed here (with ``/sidekiq``), that request:

1. consumes the token (GETDEL: it works once), decrypts the user id with
   ``COCOV_CRYPTOGRAPHIC_KEY``;
2. requires the user to be a Cocov admin (``users.admin``), as Cocov does;
3. opens a dashboard session for that user, scoped to ``/sidekiq``, and redirects there.

Anything else (no token, another prefix, unknown, expired or used token, a user who is not an
admin, no cryptographic key) is a 403 page saying to open the panel again from Cocov; nothing
is opened. The session then lasts as the dashboard's do, and ends when the user stops being
an admin.
"""

from __future__ import annotations

import hashlib

from sqlalchemy import text
from starlette.requests import Request
from starlette.responses import PlainTextResponse, RedirectResponse, Response
from starlette.routing import Route

from cocov_jobs import contracts
from cocov_jobs.crypto import CryptoError, id_from_encrypted_value
from cocov_jobs.services import Services
from cocov_jobs.web.sessions import SIDEKIQ_PREFIX, open_session

#: Prefix of Cocov's Sidekiq panel exchange tokens.
TOKEN_PREFIX = "csp_"
_ADMIN = text("SELECT admin FROM users WHERE id = :id")
_REFUSED = (
    "This link to the jobs dashboard has expired or was already used. "
    "Open it again from Cocov's administration page."
)


async def exchanged_user(services: Services, token: str) -> int | None:
    """The admin user Cocov issued ``token`` for, consuming it; None when it is unusable."""
    key = services.settings.cryptographic_key_bytes
    if not token.startswith(TOKEN_PREFIX) or key is None:
        return None
    digest = hashlib.sha256(token.encode()).hexdigest()
    value = await services.redis.getdel(contracts.sidekiq_auth_key(digest))
    if value is None:
        return None
    text_value = value.decode("ascii", "replace") if isinstance(value, bytes) else value
    try:
        user_id = id_from_encrypted_value(key, text_value)
    except CryptoError:
        return None
    async with services.sessions() as session:
        admin = await session.scalar(_ADMIN, {"id": user_id})
    return user_id if admin else None


async def sidekiq_panel(request: Request) -> Response:
    services: Services = request.app.state.services
    user_id = await exchanged_user(services, request.query_params.get("token", ""))
    if user_id is None:
        return PlainTextResponse(_REFUSED, status_code=403)
    response = RedirectResponse(SIDEKIQ_PREFIX, status_code=302)
    await open_session(request, response, user_id=user_id, prefix=SIDEKIQ_PREFIX)
    return response


routes = [Route("/v1/admin/sidekiq_panel", sidekiq_panel, methods=["GET"])]
