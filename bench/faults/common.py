"""Shared set-up of the fault scenarios in ``bench/faults/`` (issue 7).

Every scenario runs against real servers on loopback that it owns, so it can kill or restart
them without touching the machine's own PostgreSQL (5432) or Redis (6379):

* :func:`private_postgres` / :func:`private_redis` — a private cluster / ``redis-server`` on
  Unix sockets in a scratch directory (:class:`~cocov_jobs.embedded.EmbeddedPostgres`,
  :class:`~cocov_jobs.embedded.EmbeddedRedis`), stopped at exit; :func:`restart_postgres`
  (``pg_ctl restart -m fast``) and the ``stop()`` / ``start()`` of the Redis object are the
  faults;
* :func:`migrated_database` — a fresh database on a server, migrated to head, dropped at exit;
* :func:`bench_settings` / :func:`process_env` — settings pointing at the stores and a
  :class:`~cocov_jobs.testing.FakeGitHub`, as ``Settings`` (in-process services) or as
  ``COCOV_*`` variables (``cocov-jobs worker`` / ``web`` subprocesses);
* :func:`start_worker`, :func:`stop_process`, :func:`web_process` — the product's own commands
  as subprocesses; :func:`serve_app` — the web app in this process (uvicorn, ephemeral port);
* :func:`push_body` / :func:`signed_push` — GitHub push deliveries signed with :data:`SECRET`;
* :func:`until` — poll a condition with a deadline (pass :data:`WAIT` or a scenario's own);
  :func:`summary` — the one final line ``SCENARIO <name> trials=<n> failures=<n> key=value…``,
  also written to ``bench/results/faults/<name>.json`` or another ``results_dir``
  (:func:`write_result` writes any record there); returns the exit status.

Run a scenario as ``python bench/faults/<name>.py`` from the repository root, in the venv.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from cocov_jobs.config import Settings
from cocov_jobs.embedded import EmbeddedPostgres, EmbeddedRedis, _service_user
from cocov_jobs.testing import FakeGitHub
from cocov_jobs.testing.databases import scratch_database
from cocov_jobs.testing.processes import CLI, cli_env, free_port, settings_env, until
from cocov_jobs.testing.servers import http_client
from cocov_jobs.testing.webhooks import SECRET, webhook_headers

__all__ = [
    "CLI",
    "RESULTS_DIR",
    "ROOT",
    "SECRET",
    "WAIT",
    "bench_settings",
    "http_client",
    "migrated_database",
    "private_postgres",
    "private_redis",
    "process_env",
    "push_body",
    "restart_postgres",
    "scratch_dir",
    "serve_app",
    "signed_push",
    "start_worker",
    "stop_process",
    "summary",
    "until",
    "web_process",
    "web_server_pid",
    "write_result",
]

ROOT = Path(__file__).resolve().parents[2]
#: Where each scenario writes its JSON result.
RESULTS_DIR = ROOT / "bench" / "results" / "faults"
#: GitHub's push payload (the tests' fixture).
PUSH_PAYLOAD = ROOT / "tests" / "data" / "github" / "push.json"
#: Upper bound for any single wait on a condition (server start, a drain step).
WAIT = 120.0
#: ``COCOV_CRYPTOGRAPHIC_KEY`` of the scenarios (32 bytes).
CRYPTO_KEY = "0123456789abcdef0123456789abcdef"


# Scratch space and stores ----------------------------------------------------------------------


@contextlib.contextmanager
def scratch_dir(name: str) -> Iterator[Path]:
    """A temporary directory for one scenario's servers and files, removed at exit."""
    path = Path(tempfile.mkdtemp(prefix=f"cocov-faults-{name}-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@contextlib.contextmanager
def private_postgres(data_dir: Path) -> Iterator[EmbeddedPostgres]:
    """A private PostgreSQL cluster under ``data_dir`` (Unix socket only); stopped at exit.

    ``.url`` is the URL of its ``cocov`` database; pass it to :func:`migrated_database`.
    """
    pg = EmbeddedPostgres(data_dir)
    pg.start()
    try:
        yield pg
    finally:
        pg.stop()


def restart_postgres(pg: EmbeddedPostgres) -> float:
    """``pg_ctl restart -m fast`` (every connection is cut); return the seconds it took."""
    user = _service_user()
    started = time.monotonic()
    subprocess.run(
        [
            *(str(pg.bin_dir / "pg_ctl"), "-D", str(pg.cluster_dir), "-m", "fast", "-w"),
            *("-l", str(pg.cluster_dir / "server.log"), "restart"),
        ],
        user=user.pw_uid if user else None,
        group=user.pw_gid if user else None,
        extra_groups=[] if user else None,
        # The new postmaster inherits our descriptors: a pipe here would never reach EOF.
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        cwd="/",
        check=True,
    )
    return time.monotonic() - started


@contextlib.contextmanager
def private_redis(data_dir: Path) -> Iterator[EmbeddedRedis]:
    """A private ``redis-server`` under ``data_dir`` (append-only, Unix socket); stopped at exit.

    ``.url(db)`` is its URL; ``.stop()`` then ``.start()`` is an outage (data kept).
    """
    rd = EmbeddedRedis(data_dir)
    rd.start()
    try:
        yield rd
    finally:
        rd.stop()


def migrated_database(server_url: str) -> contextlib.AbstractAsyncContextManager[str]:
    """URL of a fresh database on ``server_url``'s server, migrated to head; dropped at exit."""
    return scratch_database(server_url, prefix="cocov_faults")


# Settings and processes ------------------------------------------------------------------------


def bench_settings(fake: FakeGitHub, storage: Path, **overrides: Any) -> Settings:
    """Settings for the fake GitHub, local storage at ``storage``, :data:`SECRET`, fast retries."""
    values: dict[str, Any] = {
        **fake.settings_fields(),
        "github_webhook_secret_key": SECRET,
        "git_service_local_storage_path": storage,
        "cryptographic_key": CRYPTO_KEY,
        "max_attempts": 25,
        "retry_base_seconds": 0.2,
        "retry_max_seconds": 2.0,
    }
    values.update(overrides)
    return Settings(**values)


def process_env(
    settings: Settings, database_url: str, redis_url: str, **extra: str
) -> dict[str, str]:
    """The ``COCOV_*`` environment reproducing ``settings`` in a ``cocov-jobs`` subprocess."""
    return cli_env(
        **settings_env(settings),
        COCOV_DATABASE_URL=database_url,
        COCOV_REDIS_URL=redis_url,
        COCOV_REDIS_CACHE_URL=redis_url,
        COCOV_GITHUB_WEBHOOK_SECRET_KEY=settings.github_webhook_secret_key,
        COCOV_REPOSITORY_CACHE_MAX_SIZE=str(settings.repository_cache_max_size),
        COCOV_SIDEKIQ_PROBE_PORT="0",
        COCOV_LOG_FORMAT="json",
        **extra,
    )


def _spawn(argv: list[str], env: dict[str, str], log: Path | None) -> subprocess.Popen[bytes]:
    """Start ``cocov-jobs ARGV``; its stderr appended to ``log`` (else dropped)."""
    if log is None:
        return subprocess.Popen(
            [*CLI, *argv], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
    with log.open("ab") as stderr:
        return subprocess.Popen([*CLI, *argv], env=env, stdout=subprocess.DEVNULL, stderr=stderr)


def start_worker(
    env: dict[str, str], *args: str, log: Path | None = None
) -> subprocess.Popen[bytes]:
    """``cocov-jobs worker ARGS`` with ``env``; its stderr appended to ``log`` (else dropped)."""
    return _spawn(["worker", *args], env, log)


def stop_process(process: subprocess.Popen[bytes], timeout: float = WAIT) -> int:
    """SIGTERM, wait up to ``timeout``, then SIGKILL; return the exit status."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
    return process.wait()


@contextlib.asynccontextmanager
async def web_process(env: dict[str, str], log: Path | None = None) -> AsyncIterator[str]:
    """``cocov-jobs web`` on a free 127.0.0.1 port; yield its base URL once it answers."""
    port = free_port()
    process = _spawn(["web", "--host", "127.0.0.1", "--port", str(port)], env, log)
    url = f"http://127.0.0.1:{port}"
    try:
        async with httpx.AsyncClient(base_url=url) as client:

            async def live() -> bool:
                if process.poll() is not None:
                    raise RuntimeError(f"cocov-jobs web exited with {process.returncode}")
                try:
                    return (await client.get("/system/probes/liveness")).status_code == 200
                except httpx.TransportError:
                    return False

            await until(live, WAIT)
        yield url
    finally:
        stop_process(process)


def web_server_pid(url: str) -> int:
    """The pid of the :func:`web_process` serving ``url`` (found by its command line)."""
    argv = ["web", "--host", "127.0.0.1", "--port", url.rsplit(":", 1)[1]]
    wanted = "\x00".join(argv).encode() + b"\x00"
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                if wanted in (proc / "cmdline").read_bytes():
                    return int(proc.name)
            except OSError:  # ended meanwhile
                continue
    raise RuntimeError(f"no web server process for {url}")


#: The web app in this process: ``async with serve_app(services) as client`` (an httpx client).
serve_app = http_client


# Webhooks --------------------------------------------------------------------------------------


def push_body(github_id: int, name: str, sha: str, branch: str = "main") -> dict[str, Any]:
    """GitHub's push payload (``tests/data/github/push.json``) for ``sha`` on ``branch``.

    Each call's body is unique, as GitHub's are (the same body again is taken for a replay).
    """
    body: dict[str, Any] = json.loads(PUSH_PAYLOAD.read_text())
    body["compare"] = f"{body['compare']}?push={uuid.uuid4()}"
    body["ref"] = f"refs/heads/{branch}"
    body["after"] = sha
    body["repository"] = body["repository"] | {"id": github_id, "name": name}
    body["head_commit"] = body["head_commit"] | {"id": sha}
    return body


async def signed_push(
    client: httpx.AsyncClient,
    github_id: int,
    name: str,
    sha: str,
    *,
    branch: str = "main",
    delivery: str | None = None,
) -> httpx.Response:
    """POST a push delivery signed with :data:`SECRET` to ``/v1/github/events``."""
    raw = json.dumps(push_body(github_id, name, sha, branch)).encode()
    return await client.post(
        "/v1/github/events", content=raw, headers=webhook_headers("push", raw, delivery)
    )


# Polling and reporting -------------------------------------------------------------------------


def write_result(name: str, record: dict[str, Any], results_dir: Path = RESULTS_DIR) -> Path:
    """Write ``record`` (plus the time) to ``<results_dir>/<name>.json``; return the path."""
    results_dir.mkdir(parents=True, exist_ok=True)
    path = results_dir / f"{name}.json"
    stamped = {**record, "finished_at": datetime.now(UTC).isoformat(timespec="seconds")}
    path.write_text(json.dumps(stamped, indent=2) + "\n")
    return path


def summary(
    name: str, trials: int, failures: int, results_dir: Path = RESULTS_DIR, **figures: object
) -> int:
    """Print ``SCENARIO name trials=… failures=… k=v…``, write the JSON into ``results_dir``;
    return the exit status."""
    record = {"scenario": name, "trials": trials, "failures": failures, **figures}
    write_result(name, record, results_dir)
    shown = " ".join(f"{key}={value}" for key, value in figures.items())
    print(f"SCENARIO {name} trials={trials} failures={failures} {shown}".rstrip(), flush=True)
    return 1 if failures else 0
