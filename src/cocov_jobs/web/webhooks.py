"""``POST /v1/github/events``: GitHub webhooks (docs/architecture.md §6.9, §7.6).

Checks, in this order; nothing is written when one fails:

0. ``COCOV_GITHUB_WEBHOOK_SECRET_KEY`` is set — else 503 ``webhook.secret_not_configured``:
   an unsigned endpoint lets anyone who reaches the port destroy repositories (a ``repository``
   ``deleted`` event). ``COCOV_GITHUB_WEBHOOK_ALLOW_UNSIGNED=true`` opts out of the check
   (Cocov's behaviour), with a warning at start-up (:func:`startup_warning`) and on the first
   request;
1. the body is at most :data:`MAX_WEBHOOK_BYTES` (GitHub's largest payload), enforced while
   reading — 413 ``request.too_large``; it arrives within the body deadline — 408; it is
   spooled with bounded memory and hashed as it arrives (:func:`~cocov_jobs.web.body.spool_body`);
2. when a secret is set, ``X-Hub-Signature-256`` equals
   ``sha256=<hex HMAC-SHA256 of the raw body>``, compared in constant time — else 401
   ``webhook.invalid_signature`` (Cocov answered 403);
3. ``X-GitHub-Event`` and ``X-GitHub-Delivery`` are present (at most
   :data:`MAX_HEADER_VALUE_LENGTH` characters) — else 400 ``webhook.missing_event`` /
   ``webhook.missing_delivery``;
4. the body is a JSON object — else 400 ``request.invalid_json`` / ``request.not_an_object``.

Then, in **one** transaction, the delivery is recorded in ``cocov_jobs_webhook_deliveries``
(``INSERT … ON CONFLICT DO NOTHING`` on the delivery id and on the SHA-256 of the body) and,
when it is new, every rule of the handler table (:mod:`~cocov_jobs.github_events`) is
applied. The answer is sent after the commit:

* 202 ``{"outcome": "applied"}`` — recorded, effects written and jobs enqueued;
* 200 ``{"outcome": "duplicate"}`` — the id, or the same body, was already recorded (the
  signature does not cover the delivery id: a replayed body under a new id is a duplicate
  too); nothing changes. A concurrent copy waits on the first one's uncommitted row, so
  exactly one copy applies;
* 422 ``webhook.malformed_payload`` — the payload lacks what a handler must write; nothing
  written.

**A failing handler is retried by the engine, never swallowed.** When a handler raises, the
transaction rolls back and a second one records the delivery together with a
``process_webhook`` job carrying the payload; the worker applies the same table with the
engine's retry policy (exponential backoff; a job that keeps failing is held as failed, with
its error, for ``cocov-jobs jobs``). The answer is then 202 ``{"outcome": "deferred"}``. When
that transaction fails too the answer is 503 (a store unreachable, or a connection that died —
through SQLAlchemy or under a statement sent straight to asyncpg, which is then discarded rather
than pooled) or 500, with nothing written, and a redelivery starts over.

Statements go straight to the session's asyncpg connection, in the session's transaction
(docs/decisions.md, 33).
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from typing import Any

import structlog
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from cocov_jobs.config import Settings
from cocov_jobs.db.session import transaction
from cocov_jobs.engine import queue
from cocov_jobs.github_events import MalformedPayload, apply_event, event_action
from cocov_jobs.services import Services
from cocov_jobs.web.body import MIB, parse_json_object, spool_body
from cocov_jobs.web.errors import ApiError

log = structlog.get_logger(__name__)

#: Largest accepted body: GitHub caps webhook payloads at 25 MB.
MAX_WEBHOOK_BYTES = 25 * MIB
#: Longest accepted ``X-GitHub-Event`` / ``X-GitHub-Delivery`` value (GitHub's are short).
MAX_HEADER_VALUE_LENGTH = 200
SIGNATURE_HEADER = "X-Hub-Signature-256"
EVENT_HEADER = "X-GitHub-Event"
DELIVERY_HEADER = "X-GitHub-Delivery"
#: Prefix of the signature header's value.
SIGNATURE_PREFIX = "sha256="

APPLIED = "applied"
DUPLICATE = "duplicate"
DEFERRED = "deferred"

#: Conflicts on the delivery id (a redelivery) or the body digest (a replay) skip the insert.
_RECORD_DELIVERY = (
    "INSERT INTO cocov_jobs_webhook_deliveries (delivery_id, event, action, body_digest)"
    " VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING RETURNING delivery_id"
)


@dataclass(frozen=True)
class Delivery:
    id: str
    event: str
    payload: dict[str, Any]
    #: Hex SHA-256 of the raw body.
    digest: str


def startup_warning(settings: Settings) -> None:
    """Log one warning line when webhooks are refused (no secret) or accepted unsigned."""
    if settings.github_webhook_secret_key:
        return
    if settings.github_webhook_allow_unsigned:
        log.warning(
            "COCOV_GITHUB_WEBHOOK_ALLOW_UNSIGNED is true and no COCOV_GITHUB_WEBHOOK_SECRET_KEY"
            " is set: anyone who can reach this port can post webhooks"
        )
    else:
        log.warning(
            "no COCOV_GITHUB_WEBHOOK_SECRET_KEY: /v1/github/events refuses every webhook (503)"
            " until it is set"
        )


def _require_secret(request: Request, settings: Settings) -> None:
    """503 without a webhook secret, unless unsigned webhooks are allowed (warned once)."""
    if settings.github_webhook_secret_key:
        return
    if not settings.github_webhook_allow_unsigned:
        raise ApiError(
            503,
            "webhook.secret_not_configured",
            "Webhooks are refused: COCOV_GITHUB_WEBHOOK_SECRET_KEY is not set",
        )
    state = request.app.state
    if not getattr(state, "warned_unsigned_webhook", False):
        state.warned_unsigned_webhook = True
        log.warning("accepting an unsigned webhook (COCOV_GITHUB_WEBHOOK_ALLOW_UNSIGNED)")


def verify_signature(mac: hmac.HMAC | None, signature: str | None) -> None:
    """401 unless ``signature`` is ``mac``'s digest of the body (skipped without a secret)."""
    if mac is None:
        return
    expected = SIGNATURE_PREFIX + mac.hexdigest()
    # Starlette decodes header values as latin-1: encoding back is lossless.
    given = (signature or "").strip().encode("latin-1")
    if not hmac.compare_digest(expected.encode(), given):
        raise ApiError(
            401, "webhook.invalid_signature", f"{SIGNATURE_HEADER} is missing or does not match"
        )


def _header(request: Request, name: str, code: str) -> str:
    value = request.headers.get(name, "").strip()
    if not value or len(value) > MAX_HEADER_VALUE_LENGTH:
        raise ApiError(400, code, f"Header {name} is missing or invalid")
    return value


async def _record(session: AsyncSession, delivery: Delivery) -> bool:
    """Record the delivery; False when its id or its body was already recorded."""
    connection = await queue.asyncpg_connection(session)
    recorded = await connection.fetchval(
        _RECORD_DELIVERY,
        delivery.id,
        delivery.event,
        event_action(delivery.payload),
        delivery.digest,
    )
    return recorded is not None


async def _apply(services: Services, delivery: Delivery) -> str:
    with queue.enqueued_by(f"webhook:{delivery.id}"):
        return await _apply_or_defer(services, delivery)


async def _apply_or_defer(services: Services, delivery: Delivery) -> str:
    try:
        async with transaction(services.sessions) as session:
            if not await _record(session, delivery):
                return DUPLICATE
            effects = await apply_event(
                session, services.redis, delivery.event, delivery.payload, delivery.id
            )
    except MalformedPayload as exc:
        raise ApiError(422, "webhook.malformed_payload", str(exc)) from None
    except Exception:
        log.warning(
            "webhook handler failed; deferring to a process_webhook job",
            delivery_id=delivery.id,
            github_event=delivery.event,
            exc_info=True,
        )
        return await _defer(services, delivery)
    await effects.after_commit()
    log.info(
        "webhook applied",
        delivery_id=delivery.id,
        github_event=delivery.event,
        handlers=effects.handlers,
    )
    return APPLIED


async def _defer(services: Services, delivery: Delivery) -> str:
    """Record the delivery with a ``process_webhook`` job that applies it with retries."""
    async with transaction(services.sessions) as session:
        if not await _record(session, delivery):
            return DUPLICATE
        await queue.enqueue(
            session,
            "process_webhook",
            delivery_id=delivery.id,
            event=delivery.event,
            payload=delivery.payload,
        )
    return DEFERRED


async def github_events(request: Request) -> Response:
    services: Services = request.app.state.services
    _require_secret(request, services.settings)
    secret = services.settings.github_webhook_secret_key
    mac = hmac.new(secret.encode(), digestmod=hashlib.sha256) if secret else None
    digest = hashlib.sha256()
    observers = (digest, mac) if mac else (digest,)
    async with spool_body(request, MAX_WEBHOOK_BYTES, observers=observers) as body:
        verify_signature(mac, request.headers.get(SIGNATURE_HEADER))
        event = _header(request, EVENT_HEADER, "webhook.missing_event")
        delivery_id = _header(request, DELIVERY_HEADER, "webhook.missing_delivery")
        payload = parse_json_object(body.read())
    delivery = Delivery(delivery_id, event, payload, digest.hexdigest())
    outcome = await _apply(services, delivery)
    return JSONResponse(
        {"delivery_id": delivery_id, "outcome": outcome},
        status_code=200 if outcome == DUPLICATE else 202,
    )


routes = [Route("/v1/github/events", github_events, methods=["POST"])]
