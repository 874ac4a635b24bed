"""Checks of a commit through ``process_commit``: every manifest failure's check set and status
(docs/architecture.md §6.6, §6.8), and the Worker descriptor with its secrets (§6.3, §6.13).

Real git over the GitHub fake, real PostgreSQL and Redis; statuses are read from the fake.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
import redis.asyncio as aioredis
from tests.support.helpers import insert
from tests.support.pipeline import (
    CRYPTO_KEY,
    UI,
    Pushed,
    push_repository,
    row,
    rows,
    run_job,
    settings,
)

from cocov_jobs import contracts, crypto
from cocov_jobs.checks_dispatch import dispatch_record_key
from cocov_jobs.db.models import CheckSetStatus, ErrorKind, SecretScope
from cocov_jobs.services import Services
from cocov_jobs.testing import FakeGitHub

__all__ = ["settings"]

_MOUNTS_TWICE = """\
version: "0.1.alpha"
checks:
  - plugin: cocov/x:v1
    mounts:
      - {source: "secrets:A", destination: "~/a"}
      - {source: "secrets:B", destination: "~/a"}
"""
_FILE_MOUNT = """\
version: "0.1.alpha"
checks:
  - plugin: cocov/x:v1
    mounts:
      - {source: "files:A", destination: "~/a"}
"""
_SAME_PLUGIN_TWICE = """\
version: "0.1.alpha"
checks:
  - plugin: cocov/rubocop:v1
  - plugin: ghcr.io/cocov/rubocop:v2
"""
_UNKNOWN_SECRET = """\
version: "0.1.alpha"
checks:
  - plugin: cocov/x:v1
    mounts:
      - {source: "secrets:NOPE", destination: "~/a"}
"""

#: manifest → (error kind, status description, ``error_extra``)
MANIFEST_FAILURES: dict[str, tuple[str, str, str | None]] = {
    "- a\n": (
        "manifest_root_must_be_mapping",
        "Invalid manifest: Root should be a mapping",
        None,
    ),
    "checks: []\n": ("manifest_missing_version", "Failure: Invalid manifest", None),
    "version: 0.1\n": ("manifest_version_type_mismatch", "Failure: Invalid manifest", None),
    'version: "0.2"\n': (
        "manifest_version_unsupported",
        "Failure: Unsupported manifest version",
        None,
    ),
    'version: "0.1.alpha"\nchecks:\n  - envs: {}\n': (
        "manifest_invalid_or_missing_data",
        "Failure: Invalid or Missing Data in Manifest",
        "checks.0 is missing a required key: plugin",
    ),
    "version: [\n": (
        "manifest_invalid_or_missing_data",
        "Failure: Invalid or Missing Data in Manifest",
        "Invalid YAML at line 2, column 1: did not find expected node content"
        " (while parsing a flow node at line 2, column 1)",
    ),
    _MOUNTS_TWICE: (
        "manifest_duplicated_mount_destination",
        "Failure: Duplicated mount destination",
        "Duplicated mount destination `~/a' in plugin `cocov/x:v1'",
    ),
    _FILE_MOUNT: (
        "manifest_invalid_mount_source",
        "Failure: Invalid mount source",
        "Invalid mount source `files:A' in plugin `cocov/x:v1': Only secrets are mountable.",
    ),
    _UNKNOWN_SECRET: (
        "manifest_unknown_secret",
        "Failure: Unknown secret",
        "Unknown secret `NOPE'",
    ),
    _SAME_PLUGIN_TWICE: (
        "manifest_invalid_or_missing_data",
        "Failure: Invalid or Missing Data in Manifest",
        "Plugins `cocov/rubocop:v1' and `ghcr.io/cocov/rubocop:v2' would both run as"
        " `cocov/rubocop'",
    ),
}

TWO_CHECKS = """\
version: "0.1.alpha"
defaults:
  checks:
    envs: {LEVEL: "1"}
checks:
  - plugin: cocov/rubocop:v0.1
    envs: {TEST: "true"}
  - plugin: ghcr.io/cocov/brakeman:v0.1
    mounts:
      - {source: "secrets:Deploy_Key", destination: "~/.ssh/id"}
"""


def checks_url(pushed: Pushed) -> str:
    return f"{UI}/repos/{pushed.name}/commits/{pushed.sha}/checks"


async def check_set(services: Services, pushed: Pushed) -> dict[str, Any] | None:
    return await row(
        services,
        "SELECT id, status, error_kind, error_extra, job_id FROM check_sets WHERE commit_id = :id",
        id=pushed.commit_id,
    )


async def queued_descriptors(redis: aioredis.Redis) -> list[bytes]:
    return list(await redis.lrange(contracts.CHECKS_QUEUE, 0, -1))


@pytest.mark.parametrize("manifest", list(MANIFEST_FAILURES), ids=lambda m: m[:30])
async def test_manifest_failure_is_reported_on_the_check_set_and_github(
    services: Services, fake_github: FakeGitHub, redis: aioredis.Redis, manifest: str
) -> None:
    kind, description, extra = MANIFEST_FAILURES[manifest]
    pushed = await push_repository(services, fake_github, {".cocov.yaml": manifest})
    await run_job(services, "process_commit", commit_id=pushed.commit_id)

    found = await check_set(services, pushed)
    assert found is not None
    assert (found["status"], found["error_kind"], found["error_extra"]) == (
        CheckSetStatus.failure,
        ErrorKind[kind],
        extra,
    )
    statuses = fake_github.statuses(pushed.name, pushed.sha)
    assert [(s["state"], s["context"], s["description"], s["target_url"]) for s in statuses] == [
        ("error", "cocov", description, checks_url(pushed))
    ]
    assert await queued_descriptors(redis) == []
    assert await redis.keys("cocov:secret_auth:*") == []


async def test_two_checks_with_a_mounted_organization_secret(
    services: Services, fake_github: FakeGitHub, redis: aioredis.Redis
) -> None:
    pushed = await push_repository(services, fake_github, {".cocov.yaml": TWO_CHECKS})
    user_id = await insert(services, "users", login="dev", github_id=7, github_token="gho_x")
    secret_id = await insert(
        services,
        "secrets",
        scope=SecretScope.organization,
        name="DEPLOY_KEY",
        secure_data=b"\x10",
        owner_id=user_id,
    )
    await run_job(services, "process_commit", commit_id=pushed.commit_id)

    found = await check_set(services, pushed)
    assert found is not None and found["status"] == CheckSetStatus.queued
    job_id = found["job_id"]
    checks = await rows(
        services,
        "SELECT plugin_name, status FROM checks WHERE check_set_id = :id ORDER BY id",
        id=found["id"],
    )
    assert checks == [
        {"plugin_name": "cocov/rubocop", "status": 0},
        {"plugin_name": "cocov/brakeman", "status": 0},
    ]
    [raw] = await queued_descriptors(redis)
    token = json.loads(raw)["checks"][1]["mounts"][0]["authorization"]
    storage_path = services.storage.commit_path(pushed.name, pushed.sha)
    assert raw.decode() == (
        f'{{"check_set_id":{found["id"]},"job_id":"{job_id}","org":"acme","repo":"web",'
        f'"repo_id":{pushed.repository_id},"sha":"{pushed.sha}","checks":['
        '{"plugin":"cocov/rubocop:v0.1","envs":{"LEVEL":"1","TEST":"true"},"mounts":null},'
        '{"plugin":"ghcr.io/cocov/brakeman:v0.1","envs":{"LEVEL":"1"},"mounts":'
        f'[{{"kind":"secret","authorization":"{token}","target":"~/.ssh/id"}}]}}],'
        f'"git_storage":{{"mode":"local","path":"{storage_path}"}}}}'
    )
    assert token.startswith("csa_") and len(token) == 52
    value = await redis.get(contracts.secret_auth_key(crypto.token_digest(token)))
    assert value is not None
    assert crypto.id_from_encrypted_value(CRYPTO_KEY.encode(), value.decode()) == (secret_id)
    assert (
        0
        < await redis.ttl(contracts.secret_auth_key(crypto.token_digest(token)))
        <= (contracts.SECRET_AUTH_TTL)
    )
    client = await redis.get(contracts.cache_client_key(job_id))
    assert client == f'{{"name":"web","id":{pushed.repository_id}}}'.encode()
    assert 0 < await redis.ttl(contracts.cache_client_key(job_id)) <= contracts.CACHE_CLIENT_TTL
    statuses = fake_github.statuses(pushed.name, pushed.sha)
    assert [(s["state"], s["description"]) for s in statuses] == [
        ("pending", "Checks are running...")
    ]


async def test_repository_secret_wins_over_the_organization_one(
    services: Services, fake_github: FakeGitHub, redis: aioredis.Redis
) -> None:
    pushed = await push_repository(services, fake_github, {".cocov.yaml": TWO_CHECKS})
    user_id = await insert(services, "users", login="dev", github_id=7, github_token="gho_x")
    common = {"secure_data": b"\x10", "owner_id": user_id}
    await insert(services, "secrets", scope=SecretScope.organization, name="deploy_key", **common)
    own = await insert(
        services,
        "secrets",
        scope=SecretScope.repository,
        repository_id=pushed.repository_id,
        name="Deploy_KEY",
        **common,
    )
    await run_job(services, "process_commit", commit_id=pushed.commit_id)

    [raw] = await queued_descriptors(redis)
    token = json.loads(raw)["checks"][1]["mounts"][0]["authorization"]
    value = await redis.get(contracts.secret_auth_key(crypto.token_digest(token)))
    assert crypto.id_from_encrypted_value(CRYPTO_KEY.encode(), value.decode()) == own


async def test_a_new_run_keeps_the_job_id_and_pushes_again(
    services: Services, fake_github: FakeGitHub, redis: aioredis.Redis
) -> None:
    manifest = 'version: "0.1.alpha"\nchecks:\n  - plugin: cocov/rubocop:v1\n'
    pushed = await push_repository(services, fake_github, {".cocov.yaml": manifest})
    await run_job(services, "process_commit", commit_id=pushed.commit_id)
    first = await check_set(services, pushed)
    [taken] = await queued_descriptors(redis)
    await redis.lpop(contracts.CHECKS_QUEUE)  # the Worker took the first run's descriptor
    second_run = await run_job(services, "process_commit", commit_id=pushed.commit_id)

    again = await check_set(services, pushed)
    assert first is not None and again is not None
    assert again["job_id"] == first["job_id"]
    assert await queued_descriptors(redis) == [taken]
    record = await redis.hgetall(dispatch_record_key(first["id"]))
    assert record == {b"run": str(second_run).encode(), b"descriptor": taken}


async def test_a_new_run_while_the_descriptor_waits_pushes_nothing(
    services: Services, fake_github: FakeGitHub, redis: aioredis.Redis
) -> None:
    """Issue 7 (idempotency): the Worker would run the very same descriptor twice."""
    manifest = 'version: "0.1.alpha"\nchecks:\n  - plugin: cocov/rubocop:v1\n'
    pushed = await push_repository(services, fake_github, {".cocov.yaml": manifest})
    first_run = await run_job(services, "process_commit", commit_id=pushed.commit_id)
    first = await check_set(services, pushed)
    await run_job(services, "process_commit", commit_id=pushed.commit_id)

    assert await check_set(services, pushed) == first
    [descriptor] = await queued_descriptors(redis)
    assert first is not None
    record = await redis.hgetall(dispatch_record_key(first["id"]))
    assert record == {b"run": str(first_run).encode(), b"descriptor": descriptor}
