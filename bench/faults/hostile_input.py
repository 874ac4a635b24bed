"""Scenario 6 (hostile input): every hostile request gets a clear 4xx, writes nothing, and the
server keeps serving; hostile manifests are rejected with a recorded error, quickly.

Against ``cocov-jobs web`` (a separate process, with a webhook secret) on a private PostgreSQL
and Redis, each case sends one request and checks its status, then that
``/system/probes/liveness`` still answers 200 and that no row was written (webhook deliveries,
commits, branches, coverage uploads, jobs) and no coverage is held in Redis — except for the
valid delivery that the replay case sends first, and the upload whose base64 decodes to bytes
outside the wire format: accepted and held (the file is rejected, with its reason recorded, when
the upload is processed, as in Cocov). The 100 MB upload is streamed (chunked, no
``Content-Length``) and the server's RSS is read before and after it: growth beyond
:data:`MAX_RSS_GROWTH_MIB` is a failure.

Manifests (what ``process_commit`` reads from a clone): billion laughs (anchors and aliases),
nesting deeper than the limit, 10,000 checks and a 2 MB file must each raise
:class:`~cocov_jobs.manifest.InvalidManifestError` (the check set's recorded ``error_kind``)
within :data:`MANIFEST_SECONDS`.

Usage: ``python bench/faults/hostile_input.py`` (about 15 s).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg
import httpx
import redis.asyncio as aioredis
from common import (
    SECRET,
    bench_settings,
    migrated_database,
    private_postgres,
    private_redis,
    process_env,
    push_body,
    scratch_dir,
    summary,
    web_process,
    web_server_pid,
)

from cocov_jobs.coverage import encode_lines
from cocov_jobs.db.session import asyncpg_dsn
from cocov_jobs.manifest import InvalidManifestError, parse_manifest
from cocov_jobs.testing import FakeGitHub

SCENARIO = "hostile_input"
#: The repository the uploads and pushes name, and its upload token.
REPO, REPO_GITHUB_ID, REPO_TOKEN = "web", 555_001, "crt_hostile_" + uuid.uuid4().hex
SHA = "a" * 40
#: Size and chunk of the streamed upload.
HUGE_UPLOAD_BYTES = 100 * 1024 * 1024
HUGE_CHUNK_BYTES = 1024 * 1024
#: Largest RSS growth of the web process the 100 MB upload may cause, MiB.
MAX_RSS_GROWTH_MIB = 50
#: Longest time one hostile manifest may take to be rejected, seconds.
MANIFEST_SECONDS = 2.0
#: Depth of the nested JSON and YAML documents (beyond every parser's recursion limit).
DEPTH = 100_000
#: Body size declared by the oversized webhook (above the 25 MiB limit), never sent.
DECLARED_BYTES = 26 * 1024 * 1024
#: Longest wait for an answer to the declared-oversized request, seconds.
REQUEST_SECONDS = 10.0
#: Tables that must not change when a request is refused.
TABLES = (
    "cocov_jobs_webhook_deliveries",
    "commits",
    "branches",
    "cocov_jobs_coverage_uploads",
    "pgqueuer",
)


def signed(raw: bytes, event: str = "push", delivery: str | None = None) -> dict[str, str]:
    return {
        "Content-Type": "application/json",
        "X-GitHub-Event": event,
        "X-GitHub-Delivery": delivery or str(uuid.uuid4()),
        "X-Hub-Signature-256": "sha256="
        + hmac.new(SECRET.encode(), raw, hashlib.sha256).hexdigest(),
    }


def report(data: object) -> bytes:
    return json.dumps({"data": data, "commit_sha": SHA}).encode()


def b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


PUSH = json.dumps(push_body(REPO_GITHUB_ID, REPO, SHA)).encode()
UPLOAD_AUTH = {"Authorization": f"token {REPO_TOKEN}", "Content-Type": "application/json"}


async def huge_body() -> AsyncIterator[bytes]:
    chunk = b" " * HUGE_CHUNK_BYTES
    for _ in range(HUGE_UPLOAD_BYTES // HUGE_CHUNK_BYTES):
        yield chunk


@dataclass(frozen=True)
class Request:
    """One hostile request and the status it must get."""

    name: str
    path: str
    expected: int
    body: bytes | Callable[[], AsyncIterator[bytes]]
    headers: dict[str, str] = field(default_factory=dict)
    #: Uploads it may hold in Redis: base64 that decodes is accepted; the wire bytes are checked
    #: when the upload is processed (the file is rejected with its reason, recorded).
    held: int = 0


REQUESTS = [
    Request("forged_signature", "/v1/github/events", 401, PUSH,
            signed(PUSH) | {"X-Hub-Signature-256": "sha256=" + "0" * 64}),
    Request("unsigned_webhook", "/v1/github/events", 401, PUSH,
            {k: v for k, v in signed(PUSH).items() if k != "X-Hub-Signature-256"}),
    Request("signature_of_another_body", "/v1/github/events", 401, PUSH + b" ",
            signed(PUSH)),
    Request("malformed_json_webhook", "/v1/github/events", 400, b"{not json", signed(b"{not json")),
    Request("deeply_nested_json_webhook", "/v1/github/events", 400,
            b"[" * DEPTH + b"]" * DEPTH, signed(b"[" * DEPTH + b"]" * DEPTH)),
    Request("oversized_webhook_streamed", "/v1/github/events", 413, huge_body, signed(b"")),
    Request("upload_without_token", "/v1/reports", 401, report({"a.rb": b64(b"1")})),
    Request("upload_with_unknown_token", "/v1/reports", 403, report({"a.rb": b64(b"1")}),
            {"Authorization": "token crt_nobody"}),
    Request("malformed_json_upload", "/v1/reports", 400, b"{\"data\": ", UPLOAD_AUTH),
    Request("deeply_nested_json_upload", "/v1/reports", 400,
            b'{"data": ' + b"[" * DEPTH + b"]" * DEPTH + b"}", UPLOAD_AUTH),
    Request("invalid_base64", "/v1/reports", 422, report({"a.rb": "!!not base64!!"}), UPLOAD_AUTH),
    Request("bytes_outside_wire_format", "/v1/reports", 204,
            report({"a.rb": b64(b"1\x1e2\x01\xff")}), UPLOAD_AUTH, held=1),
    Request("traversal_path", "/v1/reports", 422,
            report({"../../etc/passwd": b64(encode_lines([1]))}), UPLOAD_AUTH),
    Request("absolute_path", "/v1/reports", 422,
            report({"/etc/passwd": b64(encode_lines([1]))}), UPLOAD_AUTH),
    Request("nul_in_path", "/v1/reports", 422,
            report({"a\u0000.rb": b64(encode_lines([1]))}), UPLOAD_AUTH),
    Request("invalid_commit_sha", "/v1/reports", 422,
            json.dumps({"data": {"a.rb": b64(b"1")}, "commit_sha": "../../x"}).encode(),
            UPLOAD_AUTH),
    Request("upload_100_mb_streamed", "/v1/reports", 413, huge_body, UPLOAD_AUTH),
]  # fmt: skip
#: Hostile manifests, by name; each must raise InvalidManifestError.
MANIFESTS = {
    "billion_laughs": b'version: "0.1.alpha"\na: &a ["lol","lol","lol","lol","lol","lol","lol"]\n'
    + b"".join(
        f"{chr(98 + n)}: &{chr(98 + n)} [{', '.join([f'*{chr(97 + n)}'] * 9)}]\n".encode()
        for n in range(8)
    ),
    "deeply_nested": b'version: "0.1.alpha"\nchecks: ' + b"[" * DEPTH + b"]" * DEPTH + b"\n",
    "ten_thousand_checks": b'version: "0.1.alpha"\nchecks:\n'
    + b"".join(f"  - plugin: cocov/check{n}:v1\n".encode() for n in range(10_000)),
    "two_megabytes": b'version: "0.1.alpha"\n# ' + b"x" * (2 * 1024 * 1024) + b"\n",
}


@dataclass
class Result:
    name: str
    status: int | str
    problems: list[str] = field(default_factory=list)


class Target:
    """The web process, and what the stores hold."""

    def __init__(self, client: httpx.AsyncClient, database_url: str, redis_url: str) -> None:
        self.client = client
        self.database_url = database_url
        self.redis_url = redis_url

    async def state(self) -> dict[str, int]:
        conn = await asyncpg.connect(asyncpg_dsn(self.database_url))
        try:
            counts = {t: int(await conn.fetchval(f"SELECT count(*) FROM {t}")) for t in TABLES}
        finally:
            await conn.close()
        redis = aioredis.Redis.from_url(self.redis_url)
        try:
            counts["held coverage"] = len(await redis.keys("commit:coverage:*"))
        finally:
            await redis.aclose()
        return counts

    async def alive(self) -> bool:
        try:
            return (await self.client.get("/system/probes/liveness")).status_code == 200
        except httpx.TransportError:
            return False

    async def send(self, request: Request) -> Result:
        before = await self.state()
        content = request.body if isinstance(request.body, bytes) else request.body()
        try:
            response = await self.client.post(
                request.path, content=content, headers=request.headers
            )
            status: int | str = response.status_code
        except httpx.TransportError as exc:  # the server cut the upload short: fine if 413
            status = type(exc).__name__
        result = Result(request.name, status)
        if status != request.expected:
            result.problems.append(f"answered {status}, expected {request.expected}")
        if not await self.alive():
            result.problems.append("the server stopped serving")
        after = await self.state()
        before["held coverage"] += request.held
        if after != before:
            result.problems.append(f"wrote something: {before} → {after}")
        return result

    async def declared_oversized(self) -> Result:
        """Headers declaring a 26 MiB webhook, then silence: refused before any body arrives."""
        before = await self.state()
        url = httpx.URL(str(self.client.base_url))
        reader, writer = await asyncio.open_connection(url.host, url.port)
        head = ["POST /v1/github/events HTTP/1.1", f"Host: {url.host}"]
        head += [f"{k}: {v}" for k, v in signed(PUSH).items()]
        head.append(f"Content-Length: {DECLARED_BYTES}")
        writer.write(("\r\n".join(head) + "\r\n\r\n").encode())
        await writer.drain()
        status_line = await asyncio.wait_for(reader.readline(), REQUEST_SECONDS)
        writer.close()
        status: int | str = int(status_line.split()[1]) if status_line else "no answer"
        result = Result("oversized_webhook_declared", status)
        if status != 413:
            result.problems.append(f"answered {status}, expected 413")
        if await self.state() != before or not await self.alive():
            result.problems.append("wrote something or stopped serving")
        return result

    async def replay(self) -> Result:
        """A valid delivery applied once, then the same delivery again: a no-op."""
        delivery = str(uuid.uuid4())
        first = await self.client.post(
            "/v1/github/events", content=PUSH, headers=signed(PUSH, delivery=delivery)
        )
        before = await self.state()
        again = await self.client.post(
            "/v1/github/events", content=PUSH, headers=signed(PUSH, delivery=delivery)
        )
        result = Result("replayed_delivery", f"{first.status_code}/{again.status_code}")
        if first.status_code != 202 or again.status_code // 100 != 2:
            result.problems.append(f"answers {first.status_code} then {again.status_code}")
        if await self.state() != before:
            result.problems.append("the replay wrote something")
        if not await self.alive():
            result.problems.append("the server stopped serving")
        return result


def hostile_manifests() -> list[Result]:
    results = []
    for name, text in MANIFESTS.items():
        started = time.monotonic()
        try:
            parse_manifest(text)
            outcome = "accepted"
        except InvalidManifestError as exc:
            outcome = exc.code
        seconds = time.monotonic() - started
        result = Result(f"manifest_{name}", outcome)
        if outcome == "accepted":
            result.problems.append("accepted")
        if seconds > MANIFEST_SECONDS:
            result.problems.append(f"took {seconds:.1f} s")
        results.append(result)
    return results


async def scenario(scratch: Path) -> tuple[list[Result], dict[str, float]]:
    with (
        FakeGitHub(org="acme", tmp_dir=scratch / "fake") as fake,
        private_postgres(scratch / "pg") as pg,
        private_redis(scratch / "redis") as rd,
    ):
        async with migrated_database(pg.url) as database_url:
            conn = await asyncpg.connect(asyncpg_dsn(database_url))
            try:
                await conn.execute(
                    "INSERT INTO repositories (name, default_branch, token, github_id,"
                    " created_at, updated_at) VALUES ($1, 'main', $2, $3, now(), now())",
                    REPO,
                    REPO_TOKEN,
                    REPO_GITHUB_ID,
                )
            finally:
                await conn.close()
            env = process_env(bench_settings(fake, scratch / "storage"), database_url, rd.url(0))
            async with (
                web_process(env, log=scratch / "web.log") as url,
                httpx.AsyncClient(base_url=url, timeout=120) as client,
            ):
                target = Target(client, database_url, rd.url(0))
                pid = web_server_pid(url)
                rss: dict[str, float] = {}
                results = []
                for request in REQUESTS:
                    if request.body is huge_body:
                        rss["before_mib"] = rss_mib(pid)
                    results.append(await target.send(request))
                    if request.body is huge_body:
                        rss["after_mib"] = rss_mib(pid)
                results.append(await target.declared_oversized())
                results.append(await target.replay())
    growth = rss["after_mib"] - rss["before_mib"]
    if growth > MAX_RSS_GROWTH_MIB:
        results.append(Result("bounded_memory", f"+{growth:.0f} MiB", ["RSS grew too much"]))
    return results + hostile_manifests(), rss


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def main() -> int:
    with scratch_dir(SCENARIO) as scratch:
        results, rss = asyncio.run(scenario(scratch))
    for result in results:
        verdict = "; ".join(result.problems) or "ok"
        print(f"{result.name}: {result.status} {verdict}", flush=True)
    return summary(
        SCENARIO,
        trials=len(results),
        failures=sum(1 for result in results if result.problems),
        web_rss_before_100mb_mib=round(rss["before_mib"], 1),
        web_rss_after_100mb_mib=round(rss["after_mib"], 1),
    )


if __name__ == "__main__":
    sys.exit(main())
