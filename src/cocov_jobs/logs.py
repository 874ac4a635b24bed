"""Logging: structlog, JSON lines (``COCOV_LOG_FORMAT=json``) or readable console lines, with
every secret masked.

Inside a job every line carries the job name, id and attempt (bound in the worker).

No secret in any output
=======================

Both formats share one processor chain: exceptions are formatted by the standard library,
without local variables (structlog's and rich's pretty tracebacks print every frame's locals:
tokens, keys), then :func:`redact_event` masks secrets in every value of the event, and only
then is the line rendered. Lines of other libraries (uvicorn, PgQueuer, asyncpg) go through the
same chain.

:class:`Redactor` masks, with ``***``:

* every configured secret value (``Settings.secret_values``: keys, the webhook secret, the App
  private key, passwords of the store URLs…), and each long line of a multi-line one;
* anything shaped like a credential: GitHub tokens (``ghp_``, ``gho_``, ``ghu_``, ``ghs_``,
  ``ghr_``, ``github_pat_``), Cocov tokens (``cos_``, ``crt_``, ``csa_``, ``coa_``,
  ``csp_``), JWTs, PEM blocks, ``Authorization`` header values and the Basic form of an
  installation token.

The same redaction applies to the errors stored with jobs (``engine.worker``).
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Iterable
from typing import Any

import structlog

#: What a masked secret is replaced with.
REDACTED = "***"
#: Lines of a multi-line secret at least this long are masked on their own too.
MIN_SECRET_LINE = 16

#: Credential shapes masked wherever they appear.
_PATTERNS = (
    re.compile(r"-----BEGIN [A-Z0-9 ]+-----.*?-----END [A-Z0-9 ]+-----", re.DOTALL),
    re.compile(r"\bgh[pousr]_[A-Za-z0-9]{16,}"),
    re.compile(r"\bgithub_pat_[A-Za-z0-9_]{16,}"),
    re.compile(r"\b(?:cos|crt|csa|coa|csp)_[A-Za-z0-9_-]{8,}"),
    re.compile(r"\beyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}"),
    # base64("x-access-token:…"): the Basic credentials of an installation token.
    re.compile(r"eC1hY2Nlc3MtdG9rZW46[A-Za-z0-9+/=]*"),
)
_AUTHORIZATION = re.compile(r"(?i)(authorization[\"']?\s*[:=]\s*[\"']?\s*\w+\s+)[^\s\"',]+")


class Redactor:
    """Masks the given secret values and every credential shape (module docstring)."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        values = set()
        for secret in secrets:
            if secret:
                values.add(secret)
                values.update(
                    line.strip()
                    for line in secret.splitlines()
                    if len(line.strip()) >= MIN_SECRET_LINE
                )
        self._values = sorted(values, key=len, reverse=True)

    def __call__(self, text: str) -> str:
        """``text`` with every secret masked."""
        for value in self._values:
            if value in text:
                text = text.replace(value, REDACTED)
        for pattern in _PATTERNS:
            text = pattern.sub(REDACTED, text)
        return _AUTHORIZATION.sub(lambda m: m.group(1) + REDACTED, text)


#: The redactor of this process's log lines (set by :func:`configure`).
_redact = Redactor()


def redact(text: str) -> str:
    """``text`` with the secrets this process's log lines mask masked (:func:`configure`)."""
    return _redact(text)


def redact_event(
    logger: object, name: str, event: structlog.types.EventDict
) -> structlog.types.EventDict:
    """structlog processor: every value of the event, masked (objects as their masked repr)."""
    return {key: _masked(value) for key, value in event.items()}


def _masked(value: Any) -> Any:
    if isinstance(value, str):
        return _redact(value)
    if value is None or isinstance(value, bool | int | float):
        return value
    if isinstance(value, list | tuple | set):
        return [_masked(item) for item in value]
    if isinstance(value, dict):
        return {str(key): _masked(item) for key, item in value.items()}
    return _redact(repr(value))


def configure(fmt: str = "console", level: str = "INFO", secrets: Iterable[str] = ()) -> None:
    """Log to standard error in ``fmt`` from ``level`` on, masking ``secrets`` (module
    docstring)."""
    global _redact
    _redact = Redactor(secrets)
    renderer: structlog.types.Processor = (
        structlog.processors.JSONRenderer()
        if fmt == "json"
        else structlog.dev.ConsoleRenderer(
            colors=sys.stderr.isatty(), exception_formatter=structlog.dev.plain_traceback
        )
    )
    shared: list[structlog.types.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=shared,
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                structlog.processors.format_exc_info,
                redact_event,
                renderer,
            ],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for noisy in ("httpx", "httpcore", "uvicorn.access", "botocore", "alembic"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
