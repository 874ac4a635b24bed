"""The jobs, one module each, and :func:`registry`: the one place that loads them all.

The commands that run jobs (``run``, ``worker``, ``web``, ``enqueue``, …) build the registry
here when they assemble the program (:mod:`cocov_jobs.cli.common`); nothing else imports
this package's modules to find jobs.
"""

from __future__ import annotations

from cocov_jobs.engine.registry import Registry
from cocov_jobs.jobs import (
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
    sidekiq_payload,
    update_commits_author,
    update_organization_repos,
    update_repo_permissions,
    update_user_permissions,
)

#: Every module holding jobs.
MODULES = (
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
    sidekiq_payload,
    update_commits_author,
    update_organization_repos,
    update_repo_permissions,
    update_user_permissions,
)


def registry() -> Registry:
    """The registry of every job cocov-jobs runs."""
    return Registry.from_modules(MODULES)
