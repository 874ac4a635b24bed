"""Benchmark: GitHub push webhooks through ``POST /v1/github/events``, driven by ``wrk``.

The load generator is ``wrk`` (Debian's package; C, so it is not what limits the figure) with
``bench/ingress.lua``: ``--connections`` (20) keep-alive connections from ``--threads`` (1)
wrk threads for ``--duration`` (10) seconds, each request a signed push delivery of its own —
its own delivery id, head commit sha, message and author; repository and branch round-robin
over ``--repositories`` (5) × ``--branches`` (4). The payloads are GitHub's push payload
(``tests/data/github/push.json``, about 16 KB) with those fields varied. wrk's Lua has no HMAC,
so this script prepares ``--requests`` (30,000) deliveries before the clock starts: the body's
JSON text cut at its variable fields, and one line per delivery (id, ``X-Hub-Signature-256``,
field values) that the Lua script assembles.

The server is the product's own command, ``python -m cocov_jobs web [--workers N]``, once per
value of ``--workers`` (default ``1,2``: one process, then two sharing the port; a fresh
database each; ``1,2,1,2`` interleaves repetitions), production settings (INFO JSON logs to
/dev/null), with ``COCOV_GITHUB_WEBHOOK_SECRET_KEY`` set: every request is verified, recorded
and applied in one transaction (commit upsert, branch head, ``process_commit`` enqueue) before
its 202.

Measured: requests/s (wrk's completed requests / its duration), wrk's latency percentiles, the
server's CPU per request (user + system CPU of the server's process tree from ``/proc``, over
wrk's run, divided by the requests), the same for the embedded PostgreSQL (its postmaster's
tree) and for wrk, the machine's busy cores (``/proc/stat``) and how many of them were busy
with anything else (other processes, the kernel's own work), the connections opened to the
database during the run (``pg_stat_database.sessions``), the load average, the machine.

Checked afterwards, exit status 1 on any difference: wrk saw no socket error and no non-2xx
answer and did not run out of prepared deliveries; every answer is 202 ``applied``; every
answered delivery is recorded, and every recorded one was sent (a few sent just before wrk
stopped may be recorded without their answer having been read); exactly one commit and one
``process_commit`` job per recorded delivery, no ``process_webhook`` job; every branch head is
a commit of its own repository.

Stores: ``--database-url``, else ``COCOV_TEST_DATABASE_URL``, else an embedded PostgreSQL in a
temporary directory (same for Redis: ``--redis-url``, ``COCOV_TEST_REDIS_URL``, embedded). A
fresh database ``cocov_bench_ingress_<random>`` is created, migrated and dropped at the end.
Figures go to stdout and ``bench/results/ingress.json`` (``--results``).

``--profile FILE`` also records the server with py-spy (``pip install py-spy``) during the run
(speedscope JSON when FILE ends in ``.json``, collapsed stacks when ``.txt``, else a flame
graph SVG); the figures of such a
run include the sampling's cost.

Usage: ``python bench/ingress.py [--duration 10] [--connections 20] [--workers 1,2]``
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import hmac
import json
import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import httpx
from machine import CLOCK_TICKS, machine, tree_cpu

from cocov_jobs.db.session import asyncpg_dsn
from cocov_jobs.embedded import stores
from cocov_jobs.testing.databases import scratch_database
from cocov_jobs.testing.processes import CLI, cli_env, free_port

ROOT = Path(__file__).resolve().parent.parent
PUSH_TEMPLATE = ROOT / "tests" / "data" / "github" / "push.json"
LUA_SCRIPT = ROOT / "bench" / "ingress.lua"
RESULTS_PATH = ROOT / "bench" / "results" / "ingress.json"
#: Webhook secret the server is started with.
SECRET = "bench-webhook-secret"
#: Seconds to wait for the server to become ready, or to stop.
TIMEOUT = 60.0
#: First GitHub id of the seeded repositories.
GITHUB_ID_BASE = 700_000_000
#: The variable fields of a delivery's body, in the order of a request line's values.
FIELDS = ("repository_id", "repository", "ref", "sha", "message", "author")
#: Goal 3 of issue 12.
GOAL_REQUESTS_PER_SECOND = 1000
GOAL_P99_MS = 50


class BenchError(Exception):
    """The run lost or mangled something."""


# Deliveries ------------------------------------------------------------------------------------


def _marker(field: str) -> str:
    return f"@@{field}@@"


def body_template() -> tuple[list[str], list[int]]:
    """GitHub's push payload as JSON text cut at the variable fields: (pieces, field order)."""
    body = json.loads(PUSH_TEMPLATE.read_text())
    sha, repository = _marker("sha"), _marker("repository")
    body["repository"] = body["repository"] | {
        "id": 0,  # replaced below: an integer in the JSON text
        "name": repository,
        "full_name": f"acme/{repository}",
    }
    body["ref"] = _marker("ref")
    body["after"] = sha
    body["head_commit"] = body["head_commit"] | {
        "id": sha,
        "message": _marker("message"),
        "author": {"name": _marker("author"), "email": f"{_marker('author')}@acme.example"},
    }
    text = json.dumps(body).replace('"id": 0,', f'"id": {_marker("repository_id")},', 1)
    parts = re.split("@@(" + "|".join(FIELDS) + ")@@", text)
    pieces, names = parts[0::2], parts[1::2]
    if any("\1" in piece for piece in pieces):
        raise BenchError("the push template contains byte 0x01")
    return pieces, [FIELDS.index(name) for name in names]


def field_values(i: int, repositories: int, branches: int) -> list[str]:
    """Delivery ``i``'s field values (JSON text fragments), in :data:`FIELDS` order."""
    repo = i % repositories + 1
    branch = "main" if i % branches == 0 else f"feature-{i % branches}"
    return [
        str(GITHUB_ID_BASE + repo),
        f"service-{repo}",
        f"refs/heads/{branch}",
        hashlib.sha1(f"bench-commit-{i}".encode()).hexdigest(),
        f"Change {i}\\n\\nA realistic multi-line commit message body.",
        f"dev{i % 17}",
    ]


def render(pieces: list[str], order: list[int], values: list[str]) -> bytes:
    """The body the Lua script assembles from ``values``."""
    parts = [pieces[0]]
    for field, piece in zip(order, pieces[1:], strict=True):
        parts += [values[field], piece]
    return "".join(parts).encode()


def prepare(directory: Path, count: int, repositories: int, branches: int) -> int:
    """Write the Lua script's data files for ``count`` deliveries; their mean body size."""
    pieces, order = body_template()
    (directory / "template").write_bytes(
        (",".join(str(i) for i in order) + "\n" + "\1".join(pieces)).encode()
    )
    total = 0
    key = SECRET.encode()
    with (directory / "requests").open("w") as out:
        for i in range(count):
            values = field_values(i, repositories, branches)
            body = render(pieces, order, values)
            if i == 0:
                json.loads(body)  # the server must be able to parse what the script sends
            total += len(body)
            signature = "sha256=" + hmac.new(key, body, hashlib.sha256).hexdigest()
            out.write("\t".join([str(uuid.uuid4()), signature, *values]) + "\n")
    return total // count


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
def web_server(
    database_url: str, redis_url: str, port: int, workers: int
) -> Iterator[subprocess.Popen[bytes]]:
    """``python -m cocov_jobs web`` on 127.0.0.1:``port``; stopped (SIGTERM) on exit."""
    env = cli_env(
        COCOV_DATABASE_URL=database_url,
        COCOV_REDIS_URL=redis_url,
        COCOV_REDIS_CACHE_URL=redis_url,
        COCOV_GITHUB_WEBHOOK_SECRET_KEY=SECRET,
        COCOV_LOG_FORMAT="json",
    )
    argv = [*CLI, "web", "--host", "127.0.0.1", "--port", str(port)]
    if workers != 1:
        argv += ["--workers", str(workers)]
    process = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        yield process
    finally:
        process.terminate()
        try:
            process.wait(timeout=TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()


async def wait_ready(base_url: str, process: subprocess.Popen[bytes], workers: int) -> None:
    """Until the readiness probe answers 200 (from every worker: ``workers`` answers in a row
    on fresh connections, which the kernel spreads over the listening processes)."""
    async with asyncio.timeout(TIMEOUT):
        ready = 0
        while ready < 4 * workers:
            if process.poll() is not None:
                raise BenchError(f"the web server exited with status {process.returncode}")
            async with httpx.AsyncClient(base_url=base_url) as client:
                try:
                    ok = (await client.get("/system/probes/readiness")).status_code == 200
                except httpx.TransportError:
                    ok = False
            ready = ready + 1 if ok else 0
            if not ok:
                await asyncio.sleep(0.1)


# The run ---------------------------------------------------------------------------------------


def run_wrk(args: argparse.Namespace, url: str, data: Path) -> dict[str, Any]:
    """Run wrk with the Lua script; its ``WRK_RESULT`` figures."""
    command = [
        "wrk",
        f"--threads={args.threads}",
        f"--connections={args.connections}",
        f"--duration={args.duration}s",
        f"--timeout={int(TIMEOUT)}s",
        f"--script={LUA_SCRIPT}",
        url,
        "--",
        str(data),
        str(args.threads),
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=args.duration + TIMEOUT)
    if done.returncode != 0:
        raise BenchError(f"wrk exited with status {done.returncode}: {done.stderr.strip()}")
    for line in done.stdout.splitlines():
        if line.startswith("WRK_RESULT "):
            return dict(json.loads(line.removeprefix("WRK_RESULT ")))
    raise BenchError(f"wrk printed no result: {done.stdout} {done.stderr}")


def answers(data: Path, threads: int) -> list[tuple[int, dict[str, Any]]]:
    """Every answer wrk read: (status, JSON body)."""
    read = []
    for k in range(threads):
        for line in (data / f"answers-{k}").read_text().splitlines():
            status, _, body = line.partition("\t")
            read.append((int(status), json.loads(body)))
    return read


async def recorded(database_url: str) -> tuple[dict[str, int], set[str]]:
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
        ids = {
            r[0] for r in await conn.fetch("SELECT delivery_id FROM cocov_jobs_webhook_deliveries")
        }
    finally:
        await conn.close()
    assert row is not None
    return {key: int(value) for key, value in row.items()}, ids


def check(
    figures: dict[str, Any],
    read: list[tuple[int, dict[str, Any]]],
    counts: dict[str, int],
    ids: set[str],
    sent: list[str],
) -> None:
    problems = []
    errors = {k: v for k, v in figures["errors"].items() if v}
    if errors:
        problems.append(f"wrk errors (socket errors, non-2xx answers): {errors}")
    if figures["exhausted"]:
        problems.append(f"wrk ran out of prepared deliveries ({figures['exhausted']} more asked)")
    outcomes: dict[str, int] = {}
    for status, body in read:
        key = f"{status} {body.get('outcome', body.get('code', ''))}"
        outcomes[key] = outcomes.get(key, 0) + 1
    if set(outcomes) != {"202 applied"}:
        problems.append(f"answers {outcomes}, expected only '202 applied'")
    answered = {str(body.get("delivery_id")) for _, body in read}
    if len(answered) != len(read):
        problems.append(f"{len(read) - len(answered)} deliveries answered twice")
    if missing := answered - ids:
        problems.append(f"{len(missing)} answered deliveries not recorded (lost)")
    if unknown := ids - set(sent):
        problems.append(f"{len(unknown)} recorded deliveries were never prepared")
    if len(ids) > len(read) + figures["connections"]:
        problems.append(f"{len(ids) - len(read)} recorded deliveries without an answer")
    for key in ("commits", "process_commit_jobs"):
        if counts[key] != counts["deliveries"]:
            problems.append(f"{counts[key]} {key}, expected {counts['deliveries']}")
    if counts["foreign_heads"] or counts["process_webhook_jobs"]:
        problems.append(f"unexpected rows: {counts}")
    if problems:
        raise BenchError("; ".join(problems))


@contextlib.contextmanager
def profiled(pid: int, path: Path | None, duration: int) -> Iterator[None]:
    """py-spy recording ``pid`` (and its children) into ``path`` while the block runs."""
    if path is None:
        yield
        return
    spy_bin = shutil.which("py-spy", path=f"{Path(sys.executable).parent}:{os.environ['PATH']}")
    if spy_bin is None:
        raise BenchError("--profile needs py-spy (pip install py-spy)")
    fmt = {".json": "speedscope", ".txt": "raw"}.get(path.suffix, "flamegraph")
    spy = subprocess.Popen(
        [spy_bin, "record", "--pid", str(pid), "--subprocesses", "--rate", "200",
         "--duration", str(duration), "--format", fmt, "--output", str(path), "--nonblocking"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        yield
    finally:
        spy.wait(timeout=TIMEOUT)


def machine_busy_seconds() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine so far, from ``/proc/stat``."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle, iowait
    total = sum(fields[:8])
    return (total - idle) / CLOCK_TICKS, total / CLOCK_TICKS


def postmaster(data_dir: Path) -> list[int]:
    """The embedded PostgreSQL's postmaster pid (its backends descend from it), if any."""
    pid_file = data_dir / "postgres" / "postmaster.pid"
    return [int(pid_file.read_text().split()[0])] if pid_file.exists() else []


async def sessions_opened(database_url: str) -> int:
    """Connections opened to the database so far (``pg_stat_database.sessions``), this one
    included."""
    conn = await asyncpg.connect(asyncpg_dsn(database_url))
    try:
        return int(
            await conn.fetchval(
                "SELECT sessions FROM pg_stat_database WHERE datname = current_database()"
            )
        )
    finally:
        await conn.close()


def wrk_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


async def bench(
    args: argparse.Namespace, workers: int, server_url: str, redis_url: str, data_dir: Path
) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="cocov-bench-ingress-wrk-") as tmp:
        data = Path(tmp)
        mean_body = prepare(data, args.requests, args.repositories, args.branches)
        sent_lines = (data / "requests").read_text().splitlines()
        async with bench_database(server_url, args.repositories) as database_url:
            port = free_port()
            base_url = f"http://127.0.0.1:{port}"
            with web_server(database_url, redis_url, port, workers) as process:
                await wait_ready(base_url, process, workers)
                load_before = os.getloadavg()
                sessions_before = await sessions_opened(database_url)
                postgres = postmaster(data_dir)
                before = (
                    tree_cpu([process.pid]),
                    tree_cpu(postgres),
                    wrk_cpu_seconds(),
                    machine_busy_seconds(),
                    time.monotonic(),
                )
                with profiled(process.pid, args.profile, args.duration):
                    figures = await asyncio.to_thread(run_wrk, args, base_url, data)
                cpu = tree_cpu([process.pid]) - before[0]
                postgres_cpu = tree_cpu(postgres) - before[1] if postgres else None
                wrk_cpu = wrk_cpu_seconds() - before[2]
                busy, _ = machine_busy_seconds()
                wall = time.monotonic() - before[4]
                machine_busy = (busy - before[3][0]) / wall
                load_after = os.getloadavg()
                sessions = await sessions_opened(database_url) - sessions_before - 1
            read = answers(data, args.threads)
            counts, ids = await recorded(database_url)
    figures["connections"] = args.connections
    sent = [line.split("\t", 1)[0] for line in sent_lines]
    check(figures, read, counts, ids, sent)
    seconds = figures["duration_us"] / 1e6
    latency = figures["latency_us"]
    rate = figures["requests"] / seconds
    return {
        "workers": workers,
        "connections": args.connections,
        "wrk_threads": args.threads,
        "repositories": args.repositories,
        "branches_per_repository": args.branches,
        "mean_body_bytes": mean_body,
        "seconds": round(seconds, 3),
        "requests": figures["requests"],
        "requests_per_second": round(rate, 1),
        "latency_ms": {k: round(latency[k] / 1000, 2) for k in ("p50", "p90", "p99", "max")},
        "server_cpu_seconds": round(cpu, 2),
        "server_cpu_ms_per_request": round(cpu / figures["requests"] * 1000, 3),
        "server_cores_busy": round(cpu / wall, 2),
        "postgresql_cpu_ms_per_request": (
            round(postgres_cpu / figures["requests"] * 1000, 3) if postgres_cpu else None
        ),
        "wrk_cpu_ms_per_request": round(wrk_cpu / figures["requests"] * 1000, 3),
        "machine_cores_busy": round(machine_busy, 2),
        # What else kept the machine busy meanwhile (other processes, the kernel's own work).
        "other_cores_busy": round(machine_busy - (cpu + (postgres_cpu or 0.0) + wrk_cpu) / wall, 2),
        "postgresql_connections_opened": sessions,
        "load_average_1m": {"before": round(load_before[0], 2), "after": round(load_after[0], 2)},
        "goal": {
            "requests_per_second": GOAL_REQUESTS_PER_SECOND,
            "p99_ms": GOAL_P99_MS,
            "met": rate >= GOAL_REQUESTS_PER_SECOND and latency["p99"] / 1000 <= GOAL_P99_MS,
        },
        "recorded": counts,
    }


def report(result: dict[str, Any], nproc: int) -> None:
    latency = result["latency_ms"]
    print(
        f"web --workers {result['workers']}: {result['requests']} signed push webhooks from"
        f" {result['connections']} connections in {result['seconds']} s:"
        f" {result['requests_per_second']} requests/s, p50 {latency['p50']} ms,"
        f" p99 {latency['p99']} ms (max {latency['max']} ms)"
    )
    print(
        f"  server CPU {result['server_cpu_seconds']} s: {result['server_cpu_ms_per_request']}"
        f" ms/request ({result['server_cores_busy']} cores busy); PostgreSQL"
        f" {result['postgresql_cpu_ms_per_request']} ms/request, wrk"
        f" {result['wrk_cpu_ms_per_request']} ms/request; machine"
        f" {result['machine_cores_busy']} cores busy ({result['other_cores_busy']} by others);"
        f" {result['postgresql_connections_opened']} connections opened; load average"
        f" {result['load_average_1m']['before']} → {result['load_average_1m']['after']}"
        f" on {nproc} cores"
    )
    goal = result["goal"]
    print(
        f"  goal ≥ {goal['requests_per_second']} requests/s with p99 ≤ {goal['p99_ms']} ms:"
        f" {'MET' if goal['met'] else 'NOT MET'}; recorded {result['recorded']}, none lost"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--duration", type=int, default=10, help="seconds wrk runs")
    parser.add_argument("--connections", type=int, default=20)
    parser.add_argument("--threads", type=int, default=1, help="wrk threads")
    parser.add_argument(
        "--workers", default="1,2", help="web --workers N, one run per comma-separated value"
    )
    parser.add_argument("--requests", type=int, default=30_000, help="deliveries prepared")
    parser.add_argument("--repositories", type=int, default=5)
    parser.add_argument("--branches", type=int, default=4)
    parser.add_argument("--database-url", default=os.environ.get("COCOV_TEST_DATABASE_URL"))
    parser.add_argument("--redis-url", default=os.environ.get("COCOV_TEST_REDIS_URL", ""))
    parser.add_argument("--results", type=Path, default=RESULTS_PATH)
    parser.add_argument("--profile", type=Path, default=None, help="py-spy output file")
    args = parser.parse_args(argv)
    if shutil.which("wrk") is None:
        print("FAILED: wrk is not installed (make bench-packages)", file=sys.stderr)
        return 1
    info = machine()
    print("Machine: " + ", ".join(f"{k}={v}" for k, v in info.items()), flush=True)
    runs = []
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
        for workers in (int(w) for w in args.workers.split(",")):
            try:
                result = asyncio.run(
                    bench(args, workers, found.database_url, found.redis_url, Path(tmp))
                )
            except BenchError as exc:
                print(f"FAILED (web --workers {workers}): {exc}", file=sys.stderr)
                return 1
            report(result, info["nproc"])
            runs.append(result)
    document = {
        "timestamp": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": " ".join(["python", "bench/ingress.py", *(argv or sys.argv[1:])]),
        "machine": info,
        "stores": found.embedded or "configured",
        "load_generator": "wrk " + " ".join(wrk_version().split()[1:2]),
        "runs": runs,
    }
    args.results.parent.mkdir(parents=True, exist_ok=True)
    args.results.write_text(json.dumps(document, indent=2) + "\n")
    return 0


def wrk_version() -> str:
    done = subprocess.run(["wrk", "--version"], capture_output=True, text=True)
    return (done.stdout or done.stderr).splitlines()[0]


if __name__ == "__main__":
    sys.exit(main())
