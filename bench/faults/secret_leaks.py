"""Scenario 7 (secrets): known credentials never leave the places they are meant to be.

The whole pipeline runs with credentials this script knows, as separate ``cocov-jobs web`` (JSON
logs) and ``cocov-jobs worker`` (console logs) processes, at DEBUG level, captured to files,
against a private PostgreSQL and Redis and the GitHub fake:

signed push webhook → ``process_commit`` (clone with the installation token, its first git
request answered 500 so the job retries, the next ones held :data:`SLOW_GIT_SECONDS` so the
clone is slow) → checks for the Worker (a check mounting a repository secret) → coverage upload
with the repository token → ``process_coverage`` and the ``cocov/coverage`` status (installation
tokens expired first, so one is refreshed mid-flow) → ``user-logged-in`` events with the
service token → ``update_user_permissions`` with a user's OAuth token, and once more for a
user whose token was revoked (a permanent failure with its reason recorded) →
``update_commits_author``.

Then start-up failures, in both log formats (at the default level, INFO): a second ``web`` on
the running one's port, and ``jobs list`` and ``worker`` with a database URL (holding a
password) nobody answers; each must exit 1 with one line.

Known secrets: every installation token and App JWT the fake received (taken from its request
log), both users' OAuth tokens, the webhook secret, the service token, the repository token,
``COCOV_CRYPTOGRAPHIC_KEY``, ``COCOV_SECRET_KEY_BASE``, ``COCOV_GITHUB_OAUTH_CLIENT_SECRET``, the
database password, the App private key (its base64 setting and every line of the PEM), and the
mounted secret's plaintext. Also each token's ``x-access-token:`` Basic form.

Places searched (a finding for any secret in any of them is a failure):

* every log line of the web and worker processes, and everything the failed start-ups wrote;
* ``pgqueuer_log.traceback`` (exception text and tracebacks) and ``pgqueuer.payload`` (job
  arguments) of every job; the job history's runs (``cocov_jobs_runs``: arguments, error);
* ``/proc/<pid>/cmdline`` of every git process, sampled every :data:`SAMPLE_INTERVAL` seconds
  during the flow (at least one git process must have been seen, else the check proved nothing);
* the stored clones: no ``.git`` anywhere (files or archive members), no secret in any file or
  in the decompressed ``.tar.zst`` archives.

Usage: ``python bench/faults/secret_leaks.py [--results-dir DIR]`` (about 20 s; the JSON result
goes to ``bench/results/faults/`` unless ``DIR`` is given, as the test does). Named
``secret_leaks`` because a ``secrets.py`` next to the other scenarios would shadow Python's own
``secrets`` module.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import subprocess
import sys
import tarfile
import threading
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from io import BytesIO
from pathlib import Path

import asyncpg
import httpx
import redis.asyncio as aioredis
from common import (
    CLI,
    CRYPTO_KEY,
    RESULTS_DIR,
    SECRET,
    bench_settings,
    migrated_database,
    private_postgres,
    private_redis,
    process_env,
    scratch_dir,
    signed_push,
    start_worker,
    stop_process,
    summary,
    until,
    web_process,
)

from cocov_jobs import contracts
from cocov_jobs.checks import COVERAGE_CONTEXT
from cocov_jobs.coverage import encode_lines
from cocov_jobs.crypto import encrypt, new_service_token, service_token_digest
from cocov_jobs.db.session import asyncpg_dsn
from cocov_jobs.testing import FakeGitHub, planted
from cocov_jobs.testing.fake_git import DEFAULT_AUTHOR

SCENARIO = "secrets"
#: Seconds the fake holds each slow git request (long enough to sample the git processes).
SLOW_GIT_SECONDS = 1.5
#: Git requests held (discovery and the fetch of the retried clone).
SLOW_GIT_REQUESTS = 2
#: Seconds between two samples of ``/proc/*/cmdline``.
SAMPLE_INTERVAL = 0.01
#: Longest wait for the whole flow, seconds.
FLOW_TIMEOUT = 90.0
#: Plain text of the repository secret the manifest mounts.
SECRET_PLAINTEXT = "s3cr3t-plaintext-" + uuid.uuid4().hex
#: ``repositories.token`` (coverage uploads).
REPOSITORY_TOKEN = "crt_" + uuid.uuid4().hex + uuid.uuid4().hex[:8]
MANIFEST = """version: "0.1.alpha"
coverage:
  min_percent: 50
checks:
  - plugin: cocov/rubocop:v1
    mounts:
      - source: secrets:DEPLOY_KEY
        destination: ~/.deploy_key
"""
REPO = "web"
#: ``COCOV_GITHUB_OAUTH_CLIENT_SECRET`` of the run.
OAUTH_SECRET = planted.SETTINGS["COCOV_GITHUB_OAUTH_CLIENT_SECRET"]


@dataclass
class Evidence:
    """What was searched, and every (place, secret) found."""

    log_lines: int = 0
    tracebacks: int = 0
    payloads: dict[int, bytes] = field(default_factory=dict)
    git_cmdlines: set[str] = field(default_factory=set)
    clone_files: int = 0
    archive_members: int = 0
    startup_failures: int = 0
    secrets: int = 0
    leaks: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    def search(self, place: str, data: bytes, secrets: dict[str, bytes]) -> None:
        self.leaks.extend(f"{name} in {place}" for name, value in secrets.items() if value in data)


class CmdlineSampler:
    """A thread reading ``/proc/*/cmdline`` of git processes until stopped."""

    def __init__(self) -> None:
        self.cmdlines: set[str] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> CmdlineSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(SAMPLE_INTERVAL):
            for proc in Path("/proc").iterdir():
                if not proc.name.isdigit():
                    continue
                try:
                    raw = (proc / "cmdline").read_bytes()
                except OSError:  # the process ended meanwhile
                    continue
                argv0 = raw.split(b"\0", 1)[0]
                if b"git" in Path(argv0.decode(errors="replace")).name.encode():
                    self.cmdlines.add(raw.replace(b"\0", b" ").decode(errors="replace"))


# Set-up ----------------------------------------------------------------------------------------


@dataclass
class World:
    fake: FakeGitHub
    database_url: str
    sha: str
    repository_id: int
    user_id: int
    revoked_user_id: int
    service_token: str
    oauth_tokens: list[str]


async def seed(fake: FakeGitHub, database_url: str) -> World:
    """The repository, two users (one whose OAuth token is then revoked), a service token and
    a repository secret, as Cocov's API would have stored them."""
    repo = fake.add_repo(REPO, files={".cocov.yaml": MANIFEST, "lib/a.rb": "1\n2\n3\n4\n"})
    good_token = fake.add_user("author")
    revoked_token = fake.add_user("leaver")
    fake.add_collaborator(REPO, fake.user("author").id, "author")
    fake.revoke_user_token(revoked_token)
    service_token = new_service_token()
    conn = await asyncpg.connect(asyncpg_dsn(database_url))
    try:
        repository_id = await conn.fetchval(
            "INSERT INTO repositories (name, default_branch, token, github_id, created_at,"
            " updated_at) VALUES ($1, 'main', $2, $3, now(), now()) RETURNING id",
            REPO,
            REPOSITORY_TOKEN,
            repo.id,
        )
        user_ids = []
        for login, token in (("author", good_token), ("leaver", revoked_token)):
            user_ids.append(
                await conn.fetchval(
                    "INSERT INTO users (login, github_id, github_token, admin, created_at,"
                    " updated_at) VALUES ($1, $2, $3, true, now(), now()) RETURNING id",
                    login,
                    fake.user(login).id,
                    token,
                )
            )
        await conn.execute(
            "INSERT INTO user_emails (user_id, email, created_at, updated_at)"
            " VALUES ($1, $2, now(), now())",
            user_ids[0],
            DEFAULT_AUTHOR[1],
        )
        await conn.execute(
            "INSERT INTO service_tokens (token_hash, description, owner_id, created_at,"
            " updated_at) VALUES ($1, 'secrets scenario', $2, now(), now())",
            service_token_digest(service_token),
            user_ids[0],
        )
        await conn.execute(
            "INSERT INTO secrets (scope, name, repository_id, secure_data, owner_id, created_at,"
            " updated_at) VALUES (1, 'DEPLOY_KEY', $1, $2, $3, now(), now())",
            repository_id,
            encrypt(CRYPTO_KEY.encode(), SECRET_PLAINTEXT.encode()),
            user_ids[0],
        )
    finally:
        await conn.close()
    return World(
        fake,
        database_url,
        fake.head(REPO),
        repository_id,
        user_ids[0],
        user_ids[1],
        service_token,
        [good_token, revoked_token],
    )


# The flow --------------------------------------------------------------------------------------


async def fetch(database_url: str, sql: str, *args: object) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(asyncpg_dsn(database_url))
    try:
        return list(await conn.fetch(sql, *args))
    finally:
        await conn.close()


async def job_finished(world: World, entrypoint: str, status: str) -> bool:
    rows = await fetch(
        world.database_url,
        "SELECT 1 FROM pgqueuer_log WHERE entrypoint = $1 AND status = $2",
        entrypoint,
        status,
    )
    return bool(rows)


async def run_flow(world: World, web_url: str, payloads: dict[int, bytes]) -> None:
    """Push, coverage upload, logins; return once every job of the flow has finished.

    Job arguments are collected into ``payloads`` while jobs wait (a finished job's row goes)."""
    fake = world.fake

    async def finished(entrypoint: str, status: str = "successful") -> bool:
        for row in await fetch(world.database_url, "SELECT id, payload FROM pgqueuer"):
            payloads[row["id"]] = bytes(row["payload"] or b"")
        return await job_finished(world, entrypoint, status)

    # The clone's first git request fails (a retried job, with git's stderr in its error);
    # the next ones are slow enough to sample git's command line.
    fake.fail_next(None, r"\.git/info/refs", status=500)
    fake.delay_next(r"\.git/", SLOW_GIT_SECONDS, times=SLOW_GIT_REQUESTS)
    async with httpx.AsyncClient(base_url=web_url, timeout=FLOW_TIMEOUT) as client:
        pushed = await signed_push(client, fake.repo(REPO).id, REPO, world.sha)
        pushed.raise_for_status()
        await until(lambda: finished("process_commit"), FLOW_TIMEOUT)
        # Every installation token expires: the coverage status needs a refreshed one.
        fake.expire_all_tokens()
        coverage = {"lib/a.rb": base64.b64encode(encode_lines([1, 1, 1, 0])).decode()}
        uploaded = await client.post(
            "/v1/reports",
            json={"data": coverage, "commit_sha": world.sha},
            headers={"Authorization": f"token {REPOSITORY_TOKEN}"},
        )
        uploaded.raise_for_status()
        for user_id in (world.user_id, world.revoked_user_id):
            logged_in = await client.post(
                "/v1/events/user-logged-in",
                json={"user_id": user_id},
                headers={"Authorization": f"bearer {world.service_token}"},
            )
            logged_in.raise_for_status()

    async def done() -> bool:
        statuses = {s["context"] for s in fake.statuses(REPO, world.sha)}
        rows = await fetch(
            world.database_url,
            "SELECT count(*) FILTER (WHERE status IN ('queued', 'picked')) AS busy,"
            " count(*) FILTER (WHERE status = 'failed') AS failed FROM pgqueuer",
        )
        return (
            COVERAGE_CONTEXT in statuses
            and rows[0]["busy"] == 0
            and rows[0]["failed"] == 1
            and await finished("update_user_permissions")
            and await finished("update_commits_author")
        )

    await until(done, FLOW_TIMEOUT)


# The search ------------------------------------------------------------------------------------


def known_secrets(world: World, private_key_b64: str, private_key_pem: bytes) -> dict[str, bytes]:
    """Every credential of the run, by a name for the report."""
    secrets: dict[str, bytes] = {
        "webhook secret": SECRET.encode(),
        "service token": world.service_token.encode(),
        "repository token": REPOSITORY_TOKEN.encode(),
        "COCOV_CRYPTOGRAPHIC_KEY": CRYPTO_KEY.encode(),
        "secret plaintext": SECRET_PLAINTEXT.encode(),
        "App private key (setting)": private_key_b64.encode(),
        "COCOV_SECRET_KEY_BASE": planted.SETTINGS["COCOV_SECRET_KEY_BASE"].encode(),
        "COCOV_GITHUB_OAUTH_CLIENT_SECRET": OAUTH_SECRET.encode(),
        "database password": planted.DATABASE_PASSWORD.encode(),
    }
    for n, token in enumerate(world.oauth_tokens):
        secrets[f"user OAuth token {n}"] = token.encode()
    for n, line in enumerate(private_key_pem.splitlines()):
        if b"PRIVATE KEY" not in line:
            secrets[f"App private key line {n}"] = line
    for header in world.fake.authorization_headers:
        scheme, _, credential = header.partition(" ")
        if scheme.lower() == "basic":
            secrets[f"git Basic credential {credential[:8]}…"] = credential.encode()
            credential = base64.b64decode(credential).decode().partition(":")[2]
        secrets[f"credential {credential[:8]}…"] = credential.encode()
        basic = base64.b64encode(f"x-access-token:{credential}".encode())
        secrets[f"Basic form of {credential[:8]}…"] = basic
    return secrets


async def search_database(world: World, secrets: dict[str, bytes], evidence: Evidence) -> None:
    for row in await fetch(world.database_url, "SELECT id, traceback FROM pgqueuer_log"):
        if row["traceback"] is not None:
            evidence.tracebacks += 1
            evidence.search(f"pgqueuer_log {row['id']}", row["traceback"].encode(), secrets)
    for job_id, payload in evidence.payloads.items():
        evidence.search(f"pgqueuer payload {job_id}", payload, secrets)
    runs = await fetch(
        world.database_url,
        "SELECT id, arguments::text || coalesce(error, '') AS text FROM cocov_jobs_runs",
    )
    for row in runs:
        evidence.search(f"cocov_jobs_runs {row['id']}", row["text"].encode(), secrets)
    if not runs:
        evidence.problems.append("no run in the job history: its check proved nothing")
    logged = await fetch(
        world.database_url, "SELECT count(*) AS n FROM pgqueuer_log WHERE traceback IS NOT NULL"
    )
    if logged[0]["n"] == 0:
        evidence.problems.append("no job recorded an error: the traceback check proved nothing")


def search_logs(logs: list[Path], secrets: dict[str, bytes], evidence: Evidence) -> None:
    for path in logs:
        for number, line in enumerate(path.read_bytes().splitlines(), 1):
            evidence.log_lines += 1
            evidence.search(f"{path.name}:{number}", line, secrets)


def search_storage(storage: Path, secrets: dict[str, bytes], evidence: Evidence) -> None:
    for path in sorted(storage.rglob("*")):
        if ".git" in path.relative_to(storage).parts:
            evidence.leaks.append(f"a .git entry is stored: {path}")
        if not path.is_file():
            continue
        evidence.clone_files += 1
        evidence.search(str(path.relative_to(storage)), path.read_bytes(), secrets)
        if path.name.endswith(".tar.zst"):
            search_archive(path, secrets, evidence)
    if evidence.clone_files == 0:
        evidence.problems.append("no stored clone: the storage check proved nothing")


def search_archive(path: Path, secrets: dict[str, bytes], evidence: Evidence) -> None:
    raw = subprocess.run(["zstd", "-dc", str(path)], capture_output=True, check=True).stdout
    evidence.search(f"{path.name} (decompressed)", raw, secrets)
    with tarfile.open(fileobj=BytesIO(raw)) as archive:
        for member in archive.getmembers():
            evidence.archive_members += 1
            if ".git" in Path(member.name).parts:
                evidence.leaks.append(f"{path.name} holds {member.name}")


def search_cmdlines(cmdlines: set[str], secrets: dict[str, bytes], evidence: Evidence) -> None:
    evidence.git_cmdlines = cmdlines
    if not any(" fetch" in line or " clone" in line for line in cmdlines):
        evidence.problems.append(f"no git fetch was sampled (saw {sorted(cmdlines)})")
    for line in cmdlines:
        evidence.search(f"git command line {line[:60]!r}", line.encode(), secrets)


async def positive_control(redis_url: str, secrets: dict[str, bytes], evidence: Evidence) -> None:
    """The search must find the installation token where it belongs (Cocov's Redis cache),
    or the list of known secrets is wrong and every other check proves nothing."""
    client = aioredis.Redis.from_url(redis_url)
    try:
        cached = await client.get(contracts.INSTALLATION_TOKEN)
    finally:
        await client.aclose()
    control = Evidence()
    control.search("the token cache", cached if isinstance(cached, bytes) else b"", secrets)
    if not control.leaks:
        evidence.problems.append("the cached installation token is not among the known secrets")


# Main ------------------------------------------------------------------------------------------


@dataclass
class Running:
    database_url: str
    redis_url: str
    web_url: str
    logs: list[Path]
    storage: Path
    env: dict[str, str]


@asynccontextmanager
async def running_services(fake: FakeGitHub, scratch: Path) -> AsyncIterator[Running]:
    """Stores, a migrated database, ``cocov-jobs web`` (JSON logs) and one worker (console
    logs), at DEBUG, every secret setting set."""
    storage = scratch / "storage"
    settings = bench_settings(fake, storage)
    with private_postgres(scratch / "pg") as pg, private_redis(scratch / "redis") as rd:
        async with migrated_database(pg.url) as database_url:
            env = process_env(
                settings,
                database_url,
                rd.url(0),
                COCOV_LOG_LEVEL="DEBUG",
                COCOV_SECRET_KEY_BASE=planted.SETTINGS["COCOV_SECRET_KEY_BASE"],
                COCOV_GITHUB_OAUTH_CLIENT_SECRET=OAUTH_SECRET,
            )
            logs = [scratch / "web.log", scratch / "worker.log"]
            worker = start_worker(env | {"COCOV_LOG_FORMAT": "console"}, log=logs[1])
            try:
                async with web_process(env, log=logs[0]) as web_url:
                    yield Running(database_url, rd.url(0), web_url, logs, storage, env)
            finally:
                stop_process(worker)


def startup_failures(running: Running, secrets: dict[str, bytes], evidence: Evidence) -> None:
    """A taken port and an unreachable database, in both formats: one line each, no secret."""
    port = running.web_url.rsplit(":", 1)[1]
    dead_database = planted.secret_database_url()
    attempts = [
        (["web", "--host", "127.0.0.1", "--port", port], {}),
        (["jobs", "list"], {"COCOV_DATABASE_URL": dead_database}),
        (["worker"], {"COCOV_DATABASE_URL": dead_database}),
    ]
    for fmt in ("console", "json"):
        for argv, env in attempts:
            result = subprocess.run(
                [*CLI, *argv],
                env=running.env | env | {"COCOV_LOG_FORMAT": fmt, "COCOV_LOG_LEVEL": "INFO"},
                capture_output=True,
                timeout=FLOW_TIMEOUT,
                check=False,
            )
            output = result.stdout + result.stderr
            name = f"{' '.join(argv[:2])} ({fmt})"
            evidence.startup_failures += 1
            evidence.search(f"output of {name}", output, secrets)
            if result.returncode != 1 or len(output.strip().splitlines()) != 1:
                evidence.problems.append(f"{name}: status {result.returncode}, {output[:300]!r}")


async def scenario(scratch: Path) -> Evidence:
    evidence = Evidence()
    with FakeGitHub(org="acme", tmp_dir=scratch / "fake") as fake:
        async with running_services(fake, scratch) as running:
            world = await seed(fake, running.database_url)
            with CmdlineSampler() as sampler:
                await run_flow(world, running.web_url, evidence.payloads)
            secrets = known_secrets(world, fake.private_key_b64, fake.private_key_pem)
            await search_database(world, secrets, evidence)
            await positive_control(running.redis_url, secrets, evidence)
            startup_failures(running, secrets, evidence)
        # After the processes stopped, so their last lines are in the files.
        search_logs(running.logs, secrets, evidence)
        search_storage(running.storage, secrets, evidence)
        search_cmdlines(sampler.cmdlines, secrets, evidence)
        if fake.tokens_minted < 2:
            evidence.problems.append("no installation token was refreshed mid-flow")
        evidence.secrets = len(secrets)
    return evidence


def main(results_dir: Path) -> int:
    with scratch_dir(SCENARIO) as scratch:
        evidence = asyncio.run(scenario(scratch))
    for finding in evidence.leaks + evidence.problems:
        print(f"FAILED: {finding}", file=sys.stderr)
    checked = (
        evidence.log_lines
        + evidence.tracebacks
        + len(evidence.payloads)
        + len(evidence.git_cmdlines)
        + evidence.clone_files
        + evidence.archive_members
        + evidence.startup_failures
    )
    return summary(
        SCENARIO,
        results_dir=results_dir,
        trials=checked,
        failures=len(evidence.leaks) + len(evidence.problems),
        secrets=evidence.secrets,
        log_lines=evidence.log_lines,
        tracebacks=evidence.tracebacks,
        job_payloads=len(evidence.payloads),
        git_cmdlines=len(evidence.git_cmdlines),
        clone_files=evidence.clone_files,
        archive_members=evidence.archive_members,
        startup_failures=evidence.startup_failures,
        leaks=len(evidence.leaks),
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument(
        "--results-dir", type=Path, default=RESULTS_DIR, help="where secrets.json is written"
    )
    sys.exit(main(parser.parse_args().results_dir))
