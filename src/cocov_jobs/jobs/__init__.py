"""The jobs, one module each; importing this package registers them all (queue.REGISTRY)."""

from __future__ import annotations

from cocov_jobs.jobs import (  # noqa: F401
    compute_repository_commits_size,
    destroy_repository,
    initialize_repository,
    move_repository_storage,
    post_coverage_status,
    process_commit,
    process_coverage,
    process_webhook,
    prune_history,
    purge_repository_cache,
    reconcile_stuck_work,
    remove_repository_leftovers,
    request_cache_eviction,
    update_commits_author,
    update_organization_repos,
    update_repo_permissions,
    update_user_permissions,
)
