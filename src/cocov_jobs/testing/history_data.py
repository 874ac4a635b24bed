"""A busy installation's job history, made with ``generate_series`` in a few seconds: for the
dashboard's benchmark (``bench/dashboard.py``) and its browser tests (nothing in the product
uses it).

:func:`fill_history` adds :data:`REPOSITORIES` repositories (``repo-1`` …), their commits, and
``runs`` finished runs spread evenly over the last :data:`SPAN_DAYS` days, newest last: the jobs
of :data:`JOBS` with realistic arguments (a repository, one of its commits, a user), about 1 in
25 retried, 1 in 50 failed and 1 in 50 deferred, durations from milliseconds to seconds, queue
waits up to a few seconds. Then it runs ``VACUUM ANALYZE``, as autovacuum would have.
"""

from __future__ import annotations

from typing import Any

#: Repositories created, and commits per repository.
REPOSITORIES = 50
COMMITS_PER_REPOSITORY = 400
#: The runs are spread over this many days (the metrics' longest window).
SPAN_DAYS = 7
#: (job, arguments as SQL over g = the run's number, r = its repository, c = its commit).
JOBS = (
    ("process_commit", "jsonb_build_object('commit_id', c)"),
    (
        "process_coverage",
        "jsonb_build_object('repository_id', r, 'sha', md5(c::text), 'upload_id', g)",
    ),
    ("post_coverage_status", "jsonb_build_object('commit_id', c)"),
    ("compute_repository_commits_size", "jsonb_build_object('repository_id', r)"),
    ("update_repo_permissions", "jsonb_build_object('repository_id', r)"),
    ("update_commits_author", "jsonb_build_object('user_id', g % 300 + 1)"),
    ("request_cache_eviction", "jsonb_build_object('repository_id', r)"),
    ("update_organization_repos", "'{}'::jsonb"),
)

_REPOSITORIES = """
INSERT INTO repositories (name, default_branch, token, github_id, created_at, updated_at)
SELECT 'repo-' || n, 'main', 'crt_bench_' || n, 100000 + n, now(), now()
FROM generate_series(1, $1::int) AS n
"""

_COMMITS = """
INSERT INTO commits (repository_id, sha, author_name, author_email, message, clone_status,
                     created_at, updated_at)
SELECT r.id, md5(r.id || ':' || n) || substr(md5(n::text), 1, 8), 'Ada', 'ada@example.com',
       'Commit ' || n, 2, now(), now()
FROM repositories r CROSS JOIN generate_series(1, $1::int) AS n
WHERE r.name LIKE 'repo-%'
"""

_RUNS = """
WITH commits AS (
    SELECT array_agg(id ORDER BY id) AS ids, array_agg(repository_id ORDER BY id) AS repos
    FROM commits
),
numbered AS (
    SELECT g, c.ids[1 + (g::bigint * 7919) % cardinality(c.ids)] AS c,
           c.repos[1 + (g::bigint * 7919) % cardinality(c.ids)] AS r,
           now() - make_interval(secs => ($2::float8 * 86400) * ($1 - g) / $1) AS finished_at,
           (g % 97) / 9.7 * CASE WHEN g % 10 = 0 THEN 10 ELSE 0.01 END AS took,
           (g % 13) / 4.0 AS waited
    FROM generate_series(1, $1::int) AS g CROSS JOIN commits c
)
INSERT INTO cocov_jobs_runs (job_id, job, arguments, attempt, worker, enqueued_at, due_at,
    started_at, finished_at, outcome, error)
SELECT 1000000 + g, job, arguments, attempt, 'worker-' || g % 4 || ':4242',
       started - make_interval(secs => waited), started - make_interval(secs => waited),
       started, finished_at, outcome,
       CASE outcome WHEN 'failed' THEN 'PermanentError: GitHub answered 404 for the repository'
                    WHEN 'retried' THEN 'TransientError: GitHub 502'
                    WHEN 'deferred' THEN 'rate limited until the reset' END
FROM (
    SELECT n.*, n.finished_at - make_interval(secs => took) AS started,
           CASE WHEN g / 8 % 25 = 3 THEN 'retried' WHEN g / 8 % 50 = 7 THEN 'failed'
                WHEN g / 8 % 50 = 11 THEN 'deferred' ELSE 'succeeded' END AS outcome,
           CASE WHEN g / 8 % 25 = 3 THEN 2 ELSE 1 END AS attempt,
           jobs.job, jobs.arguments
    FROM numbered n
    CROSS JOIN LATERAL (VALUES {jobs}) AS jobs(i, job, arguments)
    WHERE jobs.i = g % {count}
) runs
"""


def runs_statement() -> str:
    """The INSERT of the runs ($1: how many, $2: over how many days)."""
    values = ", ".join(f"({i}, '{job}', {arguments})" for i, (job, arguments) in enumerate(JOBS))
    return _RUNS.format(jobs=values, count=len(JOBS))


#: What enqueued each run's job (a webhook, a parent job, the service API, the schedule).
_ORIGINS = """
INSERT INTO cocov_jobs_job_origins (job_id, enqueued_by)
SELECT job_id, CASE job_id % 4 WHEN 0 THEN 'webhook:delivery-' || job_id
                               WHEN 1 THEN 'job:' || (job_id - 1) WHEN 2 THEN 'token:1'
                               ELSE 'schedule' END
FROM cocov_jobs_runs WHERE job_id >= 1000000
ON CONFLICT (job_id) DO NOTHING
"""


async def fill_history(conn: Any, runs: int) -> None:
    """Add the repositories, their commits and ``runs`` runs (with what enqueued their jobs) on
    asyncpg connection ``conn``."""
    await conn.execute(_REPOSITORIES, REPOSITORIES)
    await conn.execute(_COMMITS, COMMITS_PER_REPOSITORY)
    await conn.execute(runs_statement(), runs, float(SPAN_DAYS))
    await conn.execute(_ORIGINS)
    await conn.execute("VACUUM ANALYZE cocov_jobs_runs")
    await conn.execute("VACUUM ANALYZE cocov_jobs_job_origins")
    await conn.execute("ANALYZE")
