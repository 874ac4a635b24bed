"""Settings errors name the variable and never echo a password; the secrets redaction masks."""

from __future__ import annotations

import pytest

from cocov_jobs.config import SettingsError, load_settings
from cocov_jobs.logs import REDACTED, Redactor
from cocov_jobs.testing.planted import PEM, TOKENS, planted_settings


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("COCOV_DATABASE_URL", "mysql://cocov:hunter2-secret@db.example/cocov"),
        ("COCOV_REDIS_URL", "http://:hunter2-secret@cache.example:6379/0"),
    ],
)
def test_a_url_error_names_the_variable_and_masks_the_password(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(SettingsError) as caught:
        load_settings()
    assert variable in str(caught.value)
    assert "hunter2-secret" not in str(caught.value)
    assert ":***@" in str(caught.value)


def test_every_secret_setting_and_credential_shape_is_masked() -> None:
    settings = planted_settings(
        database_url="postgresql://cocov:db%2Fpass@db.example/cocov",
        redis_url="redis://:redis-pass@cache.example/0",
    )
    redact = Redactor(settings.secret_values())
    values = [
        *(str(getattr(settings, name)) for name in ("cryptographic_key", "secret_key_base")),
        settings.github_webhook_secret_key,
        settings.github_oauth_client_secret,
        settings.github_app_private_key,
        "db/pass",
        "db%2Fpass",
        "redis-pass",
        *TOKENS.values(),
        "Authorization: Basic eC1hY2Nlc3MtdG9rZW46Z2hzX3h4eA==",
    ]
    text = " | ".join(values) + "\n" + PEM
    masked = redact(text)
    assert [value for value in values if value in masked] == []
    assert PEM.splitlines()[1] not in masked
    assert masked.count(REDACTED) >= len(values)
    assert redact("job 42 of repository cocov-ci/api failed") == (
        "job 42 of repository cocov-ci/api failed"
    )
