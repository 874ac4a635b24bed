"""Settings, read once from ``COCOV_*`` environment variables.

Every variable of Cocov's API/Sidekiq keeps its name and meaning (docs/architecture.md §6.11). New
ones: ``COCOV_DATABASE_URL``, ``COCOV_GITHUB_API_URL``, ``COCOV_GITHUB_URL``, ``COCOV_DATA_DIR`` and
the operational knobs below. A wrong value stops start-up with one line naming the variable
(:func:`load_settings`).
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import re
from pathlib import Path
from typing import Literal
from urllib.parse import quote, unquote, urlsplit

from pydantic import Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

#: Default seconds a worker waits for running jobs on SIGTERM (Sidekiq's ``-t`` default).
DEFAULT_SHUTDOWN_TIMEOUT = 25.0
#: Default seconds without a heartbeat after which a picked job is considered abandoned.
DEFAULT_HEARTBEAT_TIMEOUT = 30.0
#: Default seconds to wait for each read of a GitHub API answer (``COCOV_GITHUB_TIMEOUT``).
DEFAULT_GITHUB_TIMEOUT = 30.0


class SettingsError(Exception):
    """A configuration value is wrong; the message names the variable."""


#: Settings whose whole value is secret (URL settings: only their password, see
#: :meth:`Settings.secret_values`).
SECRET_FIELDS = (
    "github_app_private_key",
    "github_oauth_client_secret",
    "github_webhook_secret_key",
    "cryptographic_key",
    "secret_key_base",
    "database_password",
)
#: Settings holding URLs that may carry a password.
URL_FIELDS = (
    "database_url",
    "redis_url",
    "redis_cache_url",
    "sidekiq_redis_url",
    "cache_service_url",
)


def mask_password(url: str) -> str:
    """``url`` with the password of its user-info replaced by ``***`` (for messages)."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    userinfo, _, host = parts.netloc.rpartition("@")
    user = userinfo.split(":", 1)[0]
    return parts._replace(netloc=f"{user}:***@{host}").geturl()


def _check_url(value: str, schemes: tuple[str, ...], *, allow_blank: bool = True) -> str:
    if not value and allow_blank:
        return value
    parts = urlsplit(value)
    if parts.scheme not in schemes or not (parts.netloc or parts.path):
        raise ValueError(
            f"must be a URL with scheme {' or '.join(schemes)}, got {mask_password(value)!r}"
        )
    return value


class Settings(BaseSettings):
    """All configuration of cocov-jobs. Field ``x`` is read from ``COCOV_X``."""

    model_config = SettingsConfigDict(env_prefix="COCOV_", extra="ignore", frozen=True)

    # GitHub
    github_org_name: str = ""
    github_app_id: str = ""
    github_app_private_key: str = ""
    github_app_installation_id: str = ""
    github_oauth_client_id: str = ""
    github_oauth_client_secret: str = ""
    github_webhook_secret_key: str = ""
    #: Accept webhooks without a signature when no secret is set (else they are refused).
    github_webhook_allow_unsigned: bool = False
    github_api_url: str = "https://api.github.com"
    github_url: str = "https://github.com"
    #: Read (and write, pool) timeout of GitHub API requests, seconds; connecting has its own.
    github_timeout: float = Field(default=DEFAULT_GITHUB_TIMEOUT, gt=0)

    ui_base_url: str = "http://localhost:4000"
    badges_base_url: str = ""

    # Stores. Unset database/redis URLs select the embedded servers (see embedded.py).
    database_url: str = ""
    database_username: str = ""
    database_password: str = ""
    database_name: str = ""
    database_host: str = ""
    database_port: int = 5432
    redis_url: str = ""
    redis_cache_url: str = ""
    #: Sidekiq's Redis, where Cocov's API enqueues its jobs: set, every worker takes them in.
    sidekiq_redis_url: str = ""
    #: The Sidekiq queues taken in, comma-separated (Cocov enqueues everything on ``default``).
    sidekiq_queues: str = "default"
    data_dir: Path = Path(".cocov")

    allow_outside_collaborators: bool = True

    git_service_storage_mode: Literal["local", "s3"] = "local"
    git_service_local_storage_path: Path = Path(".git_storage")
    git_service_s3_storage_bucket_name: str = ""

    cryptographic_key: str | None = None
    #: Signs dashboard sessions (falls back to the cryptographic key, then a per-process secret).
    secret_key_base: str | None = None
    repository_cache_max_size: int = Field(default=0)
    cache_service_url: str | None = None

    sidekiq_probe_address: str = "0.0.0.0"
    sidekiq_probe_port: int = Field(default=8668, ge=0, le=65535)

    # cocov-jobs operational settings
    web_host: str = "127.0.0.1"
    web_port: int = Field(default=8080, ge=0, le=65535)
    #: Addresses (comma-separated IPs or networks, ``*`` for any) whose ``X-Forwarded-Proto`` /
    #: ``X-Forwarded-For`` are believed.
    web_trusted_proxies: str = "127.0.0.1"
    #: Mark dashboard cookies ``Secure`` even when the request did not say it came over HTTPS.
    web_secure_cookies: bool = False
    #: Seconds a client has to send a request's headers (from connecting or the last answer).
    web_header_timeout: float = Field(default=10.0, gt=0)
    #: Seconds a client has to send a request's whole body.
    web_body_timeout: float = Field(default=60.0, gt=0)
    #: Web server processes ``cocov-jobs web`` runs under one supervisor, sharing its socket.
    web_workers: int = Field(default=1, ge=1, le=256)
    worker_concurrency: int = Field(default=10, ge=1, le=1000)
    #: Worker processes ``cocov-jobs worker`` runs under one supervisor; 0 = one per core.
    worker_processes: int = Field(default=0, ge=0, le=256)
    shutdown_timeout: float = Field(default=DEFAULT_SHUTDOWN_TIMEOUT, ge=0)
    heartbeat_timeout: float = Field(default=DEFAULT_HEARTBEAT_TIMEOUT, gt=0)
    max_attempts: int = Field(default=25, ge=1)
    retry_base_seconds: float = Field(default=15.0, ge=0)
    retry_max_seconds: float = Field(default=3600.0, ge=0)
    org_repos_refresh_minutes: int = Field(default=15, ge=0)
    reconcile_minutes: int = Field(default=5, ge=0)
    prune_minutes: int = Field(default=1440, ge=0)
    history_retention_days: int = Field(default=14, ge=1)
    log_format: Literal["console", "json"] = "console"
    log_level: str = "INFO"

    @field_validator("github_api_url", "github_url", "ui_base_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        return _check_url(value, ("http", "https"), allow_blank=False).rstrip("/")

    @field_validator("badges_base_url")
    @classmethod
    def _optional_http_url(cls, value: str) -> str:
        return _check_url(value, ("http", "https")).rstrip("/")

    @field_validator("cache_service_url")
    @classmethod
    def _cache_url(cls, value: str | None) -> str | None:
        return _check_url(value, ("http", "https")) if value else None

    @field_validator("database_url")
    @classmethod
    def _pg_url(cls, value: str) -> str:
        return _check_url(value, ("postgres", "postgresql", "postgresql+asyncpg"))

    @field_validator("redis_url", "redis_cache_url", "sidekiq_redis_url")
    @classmethod
    def _redis_url(cls, value: str) -> str:
        return _check_url(value, ("redis", "rediss", "unix"))

    @field_validator("sidekiq_queues")
    @classmethod
    def _queue_names(cls, value: str) -> str:
        names = [name.strip() for name in value.split(",")]
        if not all(names) or any(re.search(r"\s", name) for name in names):
            raise ValueError(f"must be comma-separated queue names, got {value!r}")
        return ",".join(names)

    @field_validator("repository_cache_max_size")
    @classmethod
    def _quota(cls, value: int) -> int:
        return max(0, value)

    @field_validator("cryptographic_key")
    @classmethod
    def _key(cls, value: str | None) -> str | None:
        if value is None or value == "":
            return None
        if len(value.encode()) != 32:
            raise ValueError(
                "must be exactly 32 bytes (AES-256 key used as raw bytes), "
                f"got {len(value.encode())}"
            )
        return value

    @field_validator("github_app_private_key")
    @classmethod
    def _private_key(cls, value: str) -> str:
        if not value:
            return value
        try:
            pem = base64.b64decode(value, validate=False)
        except (binascii.Error, ValueError) as exc:
            raise ValueError("must be the base64 of the App's PEM private key") from exc
        if b"PRIVATE KEY" not in pem:
            raise ValueError("must be the base64 of the App's PEM private key")
        return value

    @model_validator(mode="after")
    def _s3_bucket(self) -> Settings:
        if self.git_service_storage_mode == "s3" and not self.git_service_s3_storage_bucket_name:
            raise ValueError(
                "COCOV_GIT_SERVICE_S3_STORAGE_BUCKET_NAME must be set when "
                "COCOV_GIT_SERVICE_STORAGE_MODE is s3"
            )
        return self

    # Derived values -------------------------------------------------------------------------

    @property
    def configured_database_url(self) -> str | None:
        """The PostgreSQL URL from ``COCOV_DATABASE_URL`` or the Rails-style parts, else None."""
        if self.database_url:
            return self.database_url
        if self.database_host:
            auth = quote(self.database_username, safe="")
            if self.database_password:
                auth += ":" + quote(self.database_password, safe="")
            name = self.database_name or "cocov"
            return f"postgresql://{auth}@{self.database_host}:{self.database_port}/{name}"
        return None

    @property
    def sidekiq_queue_names(self) -> tuple[str, ...]:
        """``COCOV_SIDEKIQ_QUEUES`` as a tuple, in the order given (the intake's order)."""
        return tuple(self.sidekiq_queues.split(","))

    @property
    def ui_url(self) -> str:
        """``COCOV_UI_BASE_URL`` with one trailing slash removed."""
        return self.ui_base_url

    @property
    def github_app_private_key_pem(self) -> bytes:
        return base64.b64decode(self.github_app_private_key)

    def secret_values(self) -> list[str]:
        """Every configured secret: the values of :data:`SECRET_FIELDS`, the App key's PEM,
        and the passwords of :data:`URL_FIELDS` (what log and error redaction masks)."""
        values = [str(getattr(self, name) or "") for name in SECRET_FIELDS]
        if self.github_app_private_key:
            values.append(self.github_app_private_key_pem.decode(errors="replace"))
        for name in URL_FIELDS:
            url = getattr(self, name) or ""
            with contextlib.suppress(ValueError):
                password = urlsplit(url).password or ""
                values += [password, unquote(password)]  # as written in the URL, and decoded
        return [value for value in values if value]

    @property
    def cryptographic_key_bytes(self) -> bytes | None:
        return self.cryptographic_key.encode() if self.cryptographic_key else None


def load_settings() -> Settings:
    """Read settings from the environment; raise :class:`SettingsError` naming the variable."""
    try:
        return Settings()
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = [str(part) for part in err["loc"] if part != "__root__"]
        var = "COCOV_" + loc[0].upper() if loc else "configuration"
        msg = err["msg"].removeprefix("Value error, ")
        raise SettingsError(f"invalid {var}: {msg}") from None
