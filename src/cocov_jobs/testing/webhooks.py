"""GitHub webhook deliveries as GitHub signs and sends them (tests and fault scenarios)."""

from __future__ import annotations

import hashlib
import hmac
import uuid

#: ``COCOV_GITHUB_WEBHOOK_SECRET_KEY`` of the tests and fault scenarios.
SECRET = "s3cr3t-webhook-key"


def signature(body: bytes, secret: str = SECRET) -> str:
    """The ``X-Hub-Signature-256`` of ``body``."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def webhook_headers(event: str, body: bytes, delivery: str | None = None) -> dict[str, str]:
    """What GitHub sends with a delivery of ``body``, signed with :data:`SECRET`."""
    return {
        "Content-Type": "application/json",
        "User-Agent": "GitHub-Hookshot/1f2a3b4",
        "X-GitHub-Event": event,
        "X-GitHub-Delivery": delivery or str(uuid.uuid4()),
        "X-GitHub-Hook-ID": "401366862",
        "X-Hub-Signature-256": signature(body),
    }
