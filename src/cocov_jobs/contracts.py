"""Redis keys and payloads shared with Cocov's API, Worker and Cache service.

The contract is docs/architecture.md §6.2; section numbers below are that document's.

One place for every key name: change nothing here without changing the other side.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

#: List the Go Worker BLPOPs check-run descriptors from (§6.3).
CHECKS_QUEUE = "cocov:checks"
#: List the Cache service's leader BLPOPs housekeeping tasks from (§6.4).
HOUSEKEEPING_QUEUE = "cocov:cached:housekeeping_tasks"
#: Installation token cache, JSON ``{"token", "expires_at"}`` (§7.12).
INSTALLATION_TOKEN = "github:installation:token"
#: TTL of deferred coverage (two hours, §7.1).
DEFERRED_COVERAGE_TTL = 7200
#: TTL of ``cocov:cached:client:<job_id>`` (three hours).
CACHE_CLIENT_TTL = 10800
#: TTL of a secret authorization (seven days).
SECRET_AUTH_TTL = 604800

#: Organization repositories cache, in the *cache* Redis (db1, §5.8).
ORG_REPOS_STATUS = "cocov:github_org_repos:status"
ORG_REPOS_ETAG = "cocov:github_org_repos:etag"
ORG_REPOS_UPDATED_AT = "cocov:github_org_repos:updated_at"
ORG_REPOS_ITEMS = "cocov:github_org_repos:items"


def deferred_coverage_key(repository_id: int, sha: str) -> str:
    return f"commit:coverage:{repository_id}:{sha}"


def cache_client_key(job_id: str) -> str:
    return f"cocov:cached:client:{job_id}"


def secret_auth_key(token_digest: str) -> str:
    return f"cocov:secret_auth:{token_digest}"


def sidekiq_auth_key(token_digest: str) -> str:
    """Cocov's Sidekiq panel exchange token (60 s): ``encode64(encrypt(user id))`` (§6.12)."""
    return f"cocov:sidekiq_auth:{token_digest}"


def _task(task: str, **fields: Any) -> str:
    return json.dumps({"task": task, "task_id": str(uuid.uuid4()), **fields})


def evict_artifact_task(repository_id: int, name_hashes: list[str]) -> str:
    """``evict-artifact`` with ``name_hash`` strings: what the Cache janitor reads (§7.3)."""
    return _task("evict-artifact", repository=repository_id, objects=name_hashes)


def purge_repository_task(repository_id: int) -> str:
    return _task("purge-repository", repository=repository_id)


def eviction_in_flight_key(repository_id: int) -> str:
    """Our own key: the ``name_hash`` list of the eviction request in flight for a repository."""
    return f"cocov:jobs:eviction_in_flight:{repository_id}"
