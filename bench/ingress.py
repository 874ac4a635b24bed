"""Benchmark: GitHub push webhooks through ``POST /v1/github/events``, end to end over HTTP.

``--requests`` (5,000) signed push deliveries, each with its own delivery id and its own head
commit, spread over ``--repositories`` (5) repositories and ``--branches`` (4) branches each,
are sent by ``--clients`` (20) concurrent clients (one ``httpx.AsyncClient`` and keep-alive
connection each, all in this process). The payloads are GitHub's push payload
(``tests/data/github/push.json``) with the repository, ref, sha, message and author varied;
bodies and signatures are prepared before the clock starts.

The server is the product's own command, ``python -m cocov_jobs web``, in a separate process
(one uvicorn process, production settings: INFO JSON logs to /dev/null), with
``COCOV_GITHUB_WEBHOOK_SECRET_KEY`` set, so every request is verified, recorded and applied in
one transaction (commit upsert, branch head, ``process_commit`` enqueue) before its 202.

Measured: requests/s = requests / wall time from the first send to the last answer; p50 and
p99 of the per-request latency (send → answer read); the CPU seconds the server process and
this client process used during the sends (``/proc/<pid>/stat``, ``getrusage``), which shows
how the machine's cores were shared (PostgreSQL and Redis use the rest).

Checked afterwards, exit status 1 on any difference: every answer is 202 ``applied``; the
database holds exactly ``--requests`` recorded deliveries, ``--requests`` commits and
``--requests`` ``process_commit`` jobs; every branch head is a commit of its own repository.

Stores: ``--database-url``, else ``COCOV_TEST_DATABASE_URL``, else an embedded PostgreSQL in a
temporary directory (same for Redis: ``--redis-url``, ``COCOV_TEST_REDIS_URL``, embedded). A
fresh database ``cocov_bench_ingress_<random>`` is created, migrated and dropped at the end.
Figures go to stdout and ``bench/results/ingress.json``.

Usage: ``python bench/ingress.py [--requests 5000] [--clients 20] [--database-url URL]``
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import hmac
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import httpx
from machine import machine

from cocov_jobs.db.session import asyncpg_dsn
from cocov_jobs.embedded import stores
from cocov_jobs.testing.databases import scratch_database
from cocov_jobs.testing.processes import CLI, cli_env, free_port

ROOT = Path(__file__).resolve().parent.parent
PUSH_TEMPLATE = ROOT / "tests" / "data" / "github" / "push.json"
RESULTS_PATH = ROOT / "bench" / "results" / "ingress.json"
#: Webhook secret the server is started with.
SECRET = "bench-webhook-secret"
#: Seconds to wait for the server to become ready, and for any single request.
TIMEOUT = 60.0
#: First GitHub id of the seeded repositories.
GITHUB_ID_BASE = 700_000_000


class BenchError(Exception):
    """The run lost or mangled something."""


@dataclass(frozen=True)
class Delivery:
    body: bytes
    headers: dict[str, str]


# Stores and server -----------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def bench_database(server_url: str, repositories: int) -> AsyncIterator[str]:
    """A fresh migrated database with ``repositories`` repositories; dropped afterwards."""
    async with scratch_database(server_url, prefix="cocov_bench_ingress") as url:
        conn = await asyncpg.connect(asyncpg_dsn(url))
        try:
            await conn.execute(
                "INSERT INTO repositories (name, default_branch, token, github_id,"
                " created_at, updated_at)"
                " SELECT 'service-' || g, 'main', 'crt_bench_' || g, $1::int + g, now(), now()"
                " FROM generate_series(1, $2::int) AS g",
                GITHUB_ID_BASE,
                repositories,
            )
        finally:
            await conn.close()
        yield url


@contextlib.contextmanager
def web_server(database_url: str, redis_url: str, port: int) -> Iterator[subprocess.Popen[bytes]]:
    """``python -m cocov_jobs web`` on 127.0.0.1:``port``; stopped (SIGTERM) on exit."""
    env = cli_env(
        COCOV_DATABASE_URL=database_url,
        COCOV_REDIS_URL=redis_url,
        COCOV_REDIS_CACHE_URL=redis_url,
        COCOV_GITHUB_WEBHOOK_SECRET_KEY=SECRET,
        COCOV_LOG_FORMAT="json",
    )
    process = subprocess.Popen(
        [*CLI, "web", "--host", "127.0.0.1", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        yield process
    finally:
        process.terminate()
        try:
            process.wait(timeout=TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()


async def wait_ready(base_url: str, process: subprocess.Popen[bytes]) -> None:
    async with httpx.AsyncClient(base_url=base_url) as client, asyncio.timeout(TIMEOUT):
        while True:
            if process.poll() is not None:
                raise BenchError(f"the web server exited with status {process.returncode}")
            with contextlib.suppress(httpx.TransportError):
                if (await client.get("/system/probes/readiness")).status_code == 200:
                    return
            await asyncio.sleep(0.1)


# Payloads and clients --------------------------------------------------------------------------


def deliveries(count: int, repositories: int, branches: int) -> list[Delivery]:
    """``count`` signed push deliveries, round-robin over repositories and branches."""
    template = json.loads(PUSH_TEMPLATE.read_text())
    prepared = []
    for i in range(count):
        repo = i % repositories + 1
        body = dict(template)
        sha = hashlib.sha1(f"bench-commit-{i}".encode()).hexdigest()
        name = f"service-{repo}"
        body["repository"] = template["repository"] | {
            "id": GITHUB_ID_BASE + repo,
            "name": name,
            "full_name": f"acme/{name}",
        }
        body["ref"] = f"refs/heads/{'main' if i % branches == 0 else f'feature-{i % branches}'}"
        body["after"] = sha
        body["head_commit"] = template["head_commit"] | {
            "id": sha,
            "message": f"Change {i}\n\nA realistic multi-line commit message body.",
            "author": {"name": f"Dev {i % 17}", "email": f"dev{i % 17}@acme.example"},
        }
        raw = json.dumps(body).encode()
        prepared.append(
            Delivery(
                raw,
                {
                    "Content-Type": "application/json",
                    "User-Agent": "GitHub-Hookshot/bench",
                    "X-GitHub-Event": "push",
                    "X-GitHub-Delivery": str(uuid.uuid4()),
                    "X-Hub-Signature-256": "sha256="
                    + hmac.new(SECRET.encode(), raw, hashlib.sha256).hexdigest(),
                },
            )
        )
    return prepared


async def send_all(
    base_url: str, work: list[Delivery], clients: int
) -> tuple[float, list[float], dict[str, int]]:
    """Send every delivery from ``clients`` concurrent clients: (wall s, latencies, outcomes)."""
    pending = iter(work)
    latencies: list[float] = []
    outcomes: dict[str, int] = {}

    async def client_loop() -> None:
        async with httpx.AsyncClient(
            base_url=base_url, timeout=TIMEOUT, limits=httpx.Limits(max_connections=1)
        ) as client:
            for delivery in pending:
                started = time.perf_counter()
                response = await client.post(
                    "/v1/github/events", content=delivery.body, headers=delivery.headers
                )
                latencies.append(time.perf_counter() - started)
                key = f"{response.status_code} {response.json().get('outcome', '')}".strip()
                outcomes[key] = outcomes.get(key, 0) + 1

    started = time.perf_counter()
    await asyncio.gather(*(client_loop() for _ in range(clients)))
    return time.perf_counter() - started, latencies, outcomes


# Checks and report -----------------------------------------------------------------------------


async def recorded(database_url: str) -> dict[str, int]:
    conn = await asyncpg.connect(asyncpg_dsn(database_url))
    try:
        row = await conn.fetchrow(
            """
            SELECT (SELECT count(*) FROM cocov_jobs_webhook_deliveries) AS deliveries,
                   (SELECT count(*) FROM commits) AS commits,
                   (SELECT count(*) FROM pgqueuer WHERE entrypoint = 'process_commit')
                     AS process_commit_jobs,
                   (SELECT count(*) FROM pgqueuer WHERE entrypoint = 'process_webhook')
                     AS process_webhook_jobs,
                   (SELECT count(*) FROM branches b JOIN commits c ON c.id = b.head_id
                     WHERE c.repository_id <> b.repository_id) AS foreign_heads,
                   (SELECT count(*) FROM branches) AS branches
            """
        )
    finally:
        await conn.close()
    assert row is not None
    return {key: int(value) for key, value in row.items()}


def check(requests: int, outcomes: dict[str, int], counts: dict[str, int]) -> None:
    problems = []
    if outcomes != {"202 applied": requests}:
        problems.append(f"answers {outcomes}, expected {requests} × '202 applied'")
    for key in ("deliveries", "commits", "process_commit_jobs"):
        if counts[key] != requests:
            problems.append(f"{counts[key]} {key}, expected {requests}")
    if counts["foreign_heads"] or counts["process_webhook_jobs"]:
        problems.append(f"unexpected rows: {counts}")
    if problems:
        raise BenchError("; ".join(problems))


def server_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` so far (Linux ``/proc``)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def client_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


async def bench(args: argparse.Namespace, server_url: str, redis_url: str) -> dict[str, Any]:
    work = deliveries(args.requests, args.repositories, args.branches)
    async with bench_database(server_url, args.repositories) as database_url:
        port = free_port()
        base_url = f"http://127.0.0.1:{port}"
        with web_server(database_url, redis_url, port) as process:
            await wait_ready(base_url, process)
            cpu_before = server_cpu_seconds(process.pid), client_cpu_seconds()
            wall, latencies, outcomes = await send_all(base_url, work, args.clients)
            cpu = (
                server_cpu_seconds(process.pid) - cpu_before[0],
                client_cpu_seconds() - cpu_before[1],
            )
        counts = await recorded(database_url)
    check(args.requests, outcomes, counts)
    return {
        "requests": args.requests,
        "clients": args.clients,
        "repositories": args.repositories,
        "branches_per_repository": args.branches,
        "mean_body_bytes": round(statistics.mean(len(d.body) for d in work)),
        "seconds": round(wall, 3),
        "requests_per_second": round(args.requests / wall, 1),
        "latency_ms": {
            "p50": round(percentile(latencies, 0.50) * 1000, 2),
            "p99": round(percentile(latencies, 0.99) * 1000, 2),
            "max": round(max(latencies) * 1000, 2),
        },
        "cpu_seconds": {"server": round(cpu[0], 2), "client": round(cpu[1], 2)},
        "server_cpu_ms_per_request": round(cpu[0] / args.requests * 1000, 2),
        "answers": outcomes,
        "recorded": counts,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--requests", type=int, default=5000)
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--repositories", type=int, default=5)
    parser.add_argument("--branches", type=int, default=4)
    parser.add_argument("--database-url", default=os.environ.get("COCOV_TEST_DATABASE_URL"))
    parser.add_argument("--redis-url", default=os.environ.get("COCOV_TEST_REDIS_URL", ""))
    parser.add_argument("--results", type=Path, default=RESULTS_PATH)
    args = parser.parse_args(argv)
    info = machine()
    print("Machine: " + ", ".join(f"{k}={v}" for k, v in info.items()), flush=True)
    with (
        tempfile.TemporaryDirectory(prefix="cocov-bench-ingress-") as tmp,
        stores(
            database_url=args.database_url or None,
            redis_url=args.redis_url,
            redis_cache_url="",
            data_dir=Path(tmp),
        ) as found,
    ):
        print(f"Stores: embedded {found.embedded or 'none'}", flush=True)
        try:
            result = asyncio.run(bench(args, found.database_url, found.redis_url))
        except BenchError as exc:
            print(f"FAILED: {exc}", file=sys.stderr)
            return 1
    latency = result["latency_ms"]
    print(
        f"{result['requests']} push webhooks from {result['clients']} clients in"
        f" {result['seconds']} s: {result['requests_per_second']} requests/s,"
        f" p50 {latency['p50']} ms, p99 {latency['p99']} ms (max {latency['max']} ms)"
    )
    print(
        f"CPU during the sends: server {result['cpu_seconds']['server']} s"
        f" ({result['server_cpu_ms_per_request']} ms/request),"
        f" clients {result['cpu_seconds']['client']} s, wall {result['seconds']} s"
        f" on {info['nproc']} cores"
    )
    print(f"Recorded: {result['recorded']} — none lost")
    document = {
        "timestamp": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": " ".join(["python", "bench/ingress.py", *(argv or sys.argv[1:])]),
        "machine": info,
        "stores": found.embedded or "configured",
        **result,
    }
    args.results.parent.mkdir(parents=True, exist_ok=True)
    args.results.write_text(json.dumps(document, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
