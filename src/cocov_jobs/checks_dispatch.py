"""Handing a check run to the Go Worker (docs/architecture.md §6.3, §7.7).

Called after the database commit that queued the check set. One Lua script, atomic in Redis:

* for each mounted secret, ``SET cocov:secret_auth:<sha256(token)>
  encode64(encrypt(secret id)) EX 604800`` with a fresh ``csa_`` token;
* ``SET cocov:cached:client:<job_id> {"name":"<repo>","id":<repo id>} EX 10800``;
* ``RPUSH cocov:checks <descriptor>``;
* the dispatch record :func:`dispatch_record_key` := ``{run, descriptor}``, kept
  :data:`DISPATCH_RECORD_TTL` seconds.

The script does nothing when the record already names this ``run`` (the job's id, the same
across its retries): a retried job never pushes twice, while a new job for the commit (a
reconciliation, a manual re-run) pushes again. Secrets are written only together with the
descriptor that carries their tokens, so a failed run leaves none behind.

Descriptor JSON, compact, keys in this order: ``check_set_id``, ``job_id``, ``org``, ``repo``,
``repo_id``, ``sha``, ``checks`` (``plugin``, ``envs``, ``mounts`` — ``kind``,
``authorization``, ``target`` — with null for absent envs or mounts), ``git_storage``
(``mode``, ``path``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

import redis.asyncio as aioredis

from cocov_jobs import contracts, crypto
from cocov_jobs.clones import CommitRef

if TYPE_CHECKING:
    from cocov_jobs.services import Services

#: Seconds a dispatch record is kept (as long as the secret authorizations it hands out).
DISPATCH_RECORD_TTL: Final = contracts.SECRET_AUTH_TTL
#: The only mount kind the Worker knows.
SECRET_MOUNT_KIND: Final = "secret"

_JSON_SEPARATORS: Final = (",", ":")

# KEYS: record, checks queue, cache client, secret authorizations...
# ARGV: run, descriptor, record TTL, cache client value, cache TTL, secret TTL, secret values...
_DISPATCH = """
if redis.call('HGET', KEYS[1], 'run') == ARGV[1] then return 0 end
for i = 4, #KEYS do redis.call('SET', KEYS[i], ARGV[i + 3], 'EX', ARGV[6]) end
redis.call('SET', KEYS[3], ARGV[4], 'EX', ARGV[5])
redis.call('RPUSH', KEYS[2], ARGV[2])
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], 'run', ARGV[1], 'descriptor', ARGV[2])
redis.call('EXPIRE', KEYS[1], ARGV[3])
return 1
"""


@dataclass(frozen=True)
class PlannedMount:
    """A secret (by id) mounted at ``target`` in the check's container."""

    secret_id: int
    target: str


@dataclass(frozen=True)
class PlannedCheck:
    """A check of the run: the image as written, its ``checks.plugin_name``, envs, mounts."""

    plugin: str
    plugin_name: str
    envs: dict[str, str] | None
    mounts: tuple[PlannedMount, ...] | None


@dataclass(frozen=True)
class SecretAuthorization:
    """A single-use authorization the Worker trades for a secret's value."""

    token: str
    redis_key: str
    redis_value: str


def dispatch_record_key(check_set_id: int) -> str:
    """Our own key (no Cocov component reads it): the last descriptor pushed for a check set."""
    return f"cocov:jobs:checks_dispatch:{check_set_id}"


def authorize(key: bytes, secret_id: int) -> SecretAuthorization:
    """A fresh ``csa_`` token for ``secret_id`` and the Redis entry that backs it."""
    token = crypto.new_secret_authorization_token()
    return SecretAuthorization(
        token,
        contracts.secret_auth_key(crypto.token_digest(token)),
        crypto.encrypted_id_value(key, secret_id),
    )


def descriptor_json(
    *,
    check_set_id: int,
    job_id: str,
    org: str,
    commit: CommitRef,
    checks: list[dict[str, Any]],
    storage_mode: str,
    storage_path: str,
) -> str:
    """The ``cocov:checks`` payload (module docstring), as Ruby's ``to_json`` writes it."""
    descriptor = {
        "check_set_id": check_set_id,
        "job_id": job_id,
        "org": org,
        "repo": commit.repo_name,
        "repo_id": commit.repository_id,
        "sha": commit.sha,
        "checks": checks,
        "git_storage": {"mode": storage_mode, "path": storage_path},
    }
    return json.dumps(descriptor, separators=_JSON_SEPARATORS, ensure_ascii=False)


def check_entry(
    check: PlannedCheck, authorizations: list[SecretAuthorization] | None
) -> dict[str, Any]:
    """One element of the descriptor's ``checks``; ``authorizations`` match ``check.mounts``."""
    mounts = None
    if check.mounts is not None and authorizations is not None:
        mounts = [
            {"kind": SECRET_MOUNT_KIND, "authorization": auth.token, "target": mount.target}
            for mount, auth in zip(check.mounts, authorizations, strict=True)
        ]
    return {"plugin": check.plugin, "envs": check.envs, "mounts": mounts}


async def dispatch(
    services: Services,
    commit: CommitRef,
    planned: list[PlannedCheck],
    *,
    check_set_id: int,
    job_id: str,
    run: int,
) -> bool:
    """Push the run's descriptor with its secrets (module docstring); False if already done."""
    key = services.settings.cryptographic_key_bytes
    authorizations: list[SecretAuthorization] = []
    entries = []
    for check in planned:
        granted = None
        if check.mounts is not None:
            if key is None:
                raise ValueError("a cryptographic key is required to mount secrets")
            granted = [authorize(key, mount.secret_id) for mount in check.mounts]
            authorizations += granted
        entries.append(check_entry(check, granted))
    storage = services.storage
    descriptor = descriptor_json(
        check_set_id=check_set_id,
        job_id=job_id,
        org=services.settings.github_org_name,
        commit=commit,
        checks=entries,
        storage_mode=storage.mode,
        storage_path=storage.commit_path(commit.repo_name, commit.sha),
    )
    client = json.dumps(
        {"name": commit.repo_name, "id": commit.repository_id}, separators=_JSON_SEPARATORS
    )
    pushed = await services.redis.eval(
        _DISPATCH,
        3 + len(authorizations),
        dispatch_record_key(check_set_id),
        contracts.CHECKS_QUEUE,
        contracts.cache_client_key(job_id),
        *(auth.redis_key for auth in authorizations),
        str(run),
        descriptor,
        DISPATCH_RECORD_TTL,
        client,
        contracts.CACHE_CLIENT_TTL,
        contracts.SECRET_AUTH_TTL,
        *(auth.redis_value for auth in authorizations),
    )
    return bool(pushed)


async def dispatched_by(redis: aioredis.Redis, check_set_id: int, run: int) -> bool:
    """True when job run ``run`` already pushed the check set's descriptor."""
    recorded = await redis.hget(dispatch_record_key(check_set_id), "run")
    return recorded is not None and int(recorded) == run


async def descriptor_waiting(redis: aioredis.Redis, check_set_id: int) -> bool:
    """True when the check set's last descriptor is still in ``cocov:checks`` (not picked)."""
    descriptor = await redis.hget(dispatch_record_key(check_set_id), "descriptor")
    if descriptor is None:
        return False
    if isinstance(descriptor, bytes):
        descriptor = descriptor.decode()
    position = await redis.lpos(contracts.CHECKS_QUEUE, descriptor)
    return position is not None
