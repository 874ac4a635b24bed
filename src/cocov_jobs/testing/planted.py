"""Known secrets to plant in a configuration, and a search for them in whatever was written.

Every configured secret setting gets a distinctive random value, and tokens shaped like
GitHub's and Cocov's are provided for job errors and requests. :func:`leaks` names each
planted value (and each line of the App's PEM key) found in a text. Tests and the secrets
fault scenario use them to check logs, stored errors and command output.
"""

from __future__ import annotations

import base64
import secrets
from typing import Any

from cocov_jobs.config import Settings

#: The App's private key, as a PEM block (not a usable key: only its secrecy matters here).
PEM = (
    "-----BEGIN RSA PRIVATE KEY-----\n"
    + "\n".join(secrets.token_urlsafe(48) for _ in range(4))
    + "\n-----END RSA PRIVATE KEY-----\n"
)
#: Password of the database URL tests plant (``postgresql://cocov:<it>@…``).
DATABASE_PASSWORD = "dbpass-" + secrets.token_hex(12)

#: ``COCOV_*`` variable → planted value.
SETTINGS = {
    "COCOV_CRYPTOGRAPHIC_KEY": secrets.token_hex(16),  # 32 bytes, as the setting requires
    "COCOV_GITHUB_WEBHOOK_SECRET_KEY": "whsec-" + secrets.token_hex(16),
    "COCOV_SECRET_KEY_BASE": "skb-" + secrets.token_hex(24),
    "COCOV_GITHUB_OAUTH_CLIENT_SECRET": "oauth-" + secrets.token_hex(16),
    "COCOV_GITHUB_APP_PRIVATE_KEY": base64.b64encode(PEM.encode()).decode(),
    "COCOV_DATABASE_PASSWORD": DATABASE_PASSWORD,
}

#: Tokens as GitHub and Cocov issue them, by a name for reports.
TOKENS = {
    "installation token": "ghs_" + secrets.token_hex(18),
    "user OAuth token": "gho_" + secrets.token_hex(18),
    "personal access token": "github_pat_" + secrets.token_hex(30),
    "service token": "cos_" + secrets.token_hex(32),
    "repository token": "crt_" + secrets.token_hex(20),
}


def planted_env(**extra: str) -> dict[str, str]:
    """The planted secret settings as ``COCOV_*`` variables, plus ``extra``."""
    return {**SETTINGS, **extra}


def planted_fields() -> dict[str, Any]:
    """The planted secret settings as ``Settings`` keyword arguments."""
    return {name.removeprefix("COCOV_").lower(): value for name, value in SETTINGS.items()}


def planted_settings(**overrides: Any) -> Settings:
    """Settings holding every planted secret, plus ``overrides``."""
    return Settings(**(planted_fields() | overrides))


def secret_database_url(host: str = "127.0.0.1", port: int = 1) -> str:
    """A PostgreSQL URL whose password is :data:`DATABASE_PASSWORD`."""
    return f"postgresql://cocov:{DATABASE_PASSWORD}@{host}:{port}/cocov"


def known() -> dict[str, str]:
    """Every planted value, by name: settings, tokens, and each line inside the PEM block."""
    found = {name: value for name, value in SETTINGS.items()} | TOKENS
    for number, line in enumerate(PEM.splitlines()):
        if "PRIVATE KEY" not in line:
            found[f"PEM line {number}"] = line
    return found


def leaks(text: str) -> list[str]:
    """Names of the planted values found in ``text``."""
    return [name for name, value in known().items() if value in text]
