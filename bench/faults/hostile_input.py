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

Issue 13 (items 2–7), against the same process unless said otherwise:

* **unsigned webhooks** (item 2): a second ``cocov-jobs web`` without a webhook secret answers a
  ``repository deleted`` delivery 503 and writes nothing;
* **metrics cardinality** (item 3): :data:`INVENTED_METHODS` requests with invented methods and
  paths leave ``/metrics`` within :data:`MAX_METRICS_GROWTH_BYTES` of its size before;
* **a huge upload** (item 4): :data:`HUGE_FILES` files in about 56 MiB, for an unknown commit,
  while ``/system/ping`` is asked every :data:`PING_INTERVAL` s: its p99 must stay under
  :data:`MAX_PING_P99_MS`; then uploads for invented commits until the per-repository bound
  answers 429;
* **sessions** (item 5): a dashboard session stops working once its service token is deleted,
  and a logged-out cookie stays dead;
* **slow senders** (item 6): :data:`SLOW_SENDERS` connections trickle webhook bodies and
  :data:`STALLED_HEADERS` never finish their headers; the server's RSS may grow at most
  :data:`MAX_SLOW_RSS_GROWTH_MIB`, every stalled connection is closed within its deadline and a
  signed delivery is still accepted afterwards;
* **replays** (item 7): a recorded body under a new delivery id is a duplicate; an older push
  (its ``before`` is not the head) leaves the branch head where it is.

Usage: ``python bench/faults/hostile_input.py`` (about 90 s).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import json
import re
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
from cocov_jobs.crypto import new_service_token, service_token_digest
from cocov_jobs.db.session import asyncpg_dsn
from cocov_jobs.manifest import InvalidManifestError, parse_manifest
from cocov_jobs.testing import FakeGitHub
from cocov_jobs.web.sessions import SUBJECT_CHECK_SECONDS

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
#: Requests with invented methods (item 3), and how much ``/metrics`` may grow meanwhile.
INVENTED_METHODS = 2000
MAX_METRICS_GROWTH_BYTES = 4096
#: The huge upload (item 4): files, and the ping it must not stall.
HUGE_FILES = 4_000_000
PING_INTERVAL = 0.01
MAX_PING_P99_MS = 50.0
#: Slow senders (item 6): how many, what each sends, and the memory they may cost.
SLOW_SENDERS = 12
STALLED_HEADERS = 12
SLOW_CHUNK_BYTES = 64 * 1024
SLOW_CHUNK_INTERVAL = 0.02
MAX_SLOW_RSS_GROWTH_MIB = 30
#: Header and body deadlines of the web process (short, so stalled senders end quickly).
HEADER_TIMEOUT, BODY_TIMEOUT = 2, 5
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
    return report_for(data, SHA)


def report_for(data: object, sha: str) -> bytes:
    return json.dumps({"data": data, "commit_sha": sha}).encode()


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

    async def head(self, branch: str) -> str:
        """The sha of ``branch``'s head in :data:`REPO`."""
        conn = await asyncpg.connect(asyncpg_dsn(self.database_url))
        try:
            return str(
                await conn.fetchval(
                    "SELECT c.sha FROM branches b JOIN commits c ON c.id = b.head_id"
                    " JOIN repositories r ON r.id = b.repository_id"
                    " WHERE r.name = $1 AND b.name = $2",
                    REPO,
                    branch,
                )
            )
        finally:
            await conn.close()

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


# Issue 13 ---------------------------------------------------------------------------------------


async def unsigned_without_secret(env: dict[str, str], log: Path, database_url: str) -> Result:
    """Item 2: no webhook secret, so no webhook (503), however well-formed."""
    body = json.dumps({"action": "deleted", "repository": {"id": REPO_GITHUB_ID}}).encode()
    headers = {"X-GitHub-Event": "repository", "X-GitHub-Delivery": str(uuid.uuid4())}
    async with (
        web_process(env | {"COCOV_GITHUB_WEBHOOK_SECRET_KEY": ""}, log=log) as url,
        httpx.AsyncClient(base_url=url) as client,
    ):
        answer = await client.post("/v1/github/events", content=body, headers=headers)
    result = Result("unsigned_webhook_without_secret", answer.status_code)
    if answer.status_code != 503:
        result.problems.append(f"answered {answer.status_code}, expected 503")
    conn = await asyncpg.connect(asyncpg_dsn(database_url))
    try:
        if await conn.fetchval(
            "SELECT count(*) FROM pgqueuer WHERE entrypoint = $1", "destroy_repository"
        ):
            result.problems.append("a destroy_repository job was enqueued")
    finally:
        await conn.close()
    return result


async def invented_methods(target: Target) -> Result:
    """Item 3: client-chosen methods and paths never become new label values."""
    before = len((await target.client.get("/metrics")).content)
    for n in range(INVENTED_METHODS):
        await target.client.request(f"X{n}", f"/invented/{n}")
    after = len((await target.client.get("/metrics")).content)
    result = Result("invented_methods", f"+{after - before} B")
    if after - before > MAX_METRICS_GROWTH_BYTES:
        result.problems.append(f"/metrics grew from {before} to {after} bytes")
    return result


def huge_report() -> bytes:
    """About 57 MiB: :data:`HUGE_FILES` files named in base 36, five characters each."""
    encoded = b64(b"1")
    files = ",".join(f'"{base36(n)}":"{encoded}"' for n in range(HUGE_FILES))
    return f'{{"commit_sha":"{"b" * 40}","data":{{{files}}}}}'.encode()


def base36(n: int, width: int = 5) -> str:
    digits = "0123456789abcdefghijklmnopqrstuvwxyz"
    return "".join(digits[n // 36**i % 36] for i in reversed(range(width)))


async def huge_upload(target: Target) -> tuple[Result, dict[str, float]]:
    """Item 4: parsing 4,000,000 files must not stall other requests."""
    body = huge_report()
    upload = asyncio.create_task(
        target.client.post("/v1/reports", content=body, headers=UPLOAD_AUTH)
    )
    latencies: list[float] = []
    while not upload.done():
        started = time.perf_counter()
        await target.client.get("/system/ping")
        latencies.append((time.perf_counter() - started) * 1000)
        await asyncio.sleep(PING_INTERVAL)
    answer = await upload
    latencies.sort()
    p99 = latencies[int(len(latencies) * 0.99)] if latencies else 0.0
    figures = {
        "huge_upload_mib": round(len(body) / 2**20, 1),
        "ping_p99_ms": round(p99, 1),
        "ping_max_ms": round(latencies[-1] if latencies else 0.0, 1),
        "pings": len(latencies),
    }
    result = Result("huge_upload_ping", f"{answer.status_code}, p99 {p99:.1f} ms")
    if answer.status_code != 204:
        result.problems.append(f"answered {answer.status_code}, expected 204")
    if p99 > MAX_PING_P99_MS:
        result.problems.append(f"ping p99 {p99:.1f} ms during the upload")
    return result, figures


async def held_uploads_bounded(target: Target) -> Result:
    """Item 4: uploads for invented commits stop being held at the repository's bound."""
    statuses = []
    for n in range(20):
        answer = await target.client.post(
            "/v1/reports", content=report_for({"a.rb": b64(b"1")}, f"{n:040x}"), headers=UPLOAD_AUTH
        )
        statuses.append(answer.status_code)
        if answer.status_code == 429:
            break
    result = Result("held_uploads_bounded", f"{statuses.count(204)} held, then {statuses[-1]}")
    if statuses[-1] != 429:
        result.problems.append("no bound on held uploads")
    return result


async def sessions_revoked(target: Target, database_url: str) -> Result:
    """Item 5: a session ends with its token, and at logout."""
    token = new_service_token()
    conn = await asyncpg.connect(asyncpg_dsn(database_url))
    try:
        owner = await conn.fetchval(
            "INSERT INTO users (login, github_id, github_token, admin, created_at, updated_at)"
            " VALUES ('ops', 987654, 'x', true, now(), now()) RETURNING id"
        )
        token_id = await conn.fetchval(
            "INSERT INTO service_tokens (token_hash, description, owner_id, created_at,"
            " updated_at) VALUES ($1, 'hostile', $2, now(), now()) RETURNING id",
            service_token_digest(token),
            owner,
        )
        base = str(target.client.base_url)
        statuses = []
        async with httpx.AsyncClient(base_url=base) as browser:
            csrf = await dashboard_login(browser, token)
            statuses.append((await browser.get("/dashboard")).status_code)
            await browser.post("/dashboard/logout", data={"csrf_token": csrf})
            statuses.append((await browser.get("/dashboard")).status_code)
        async with httpx.AsyncClient(base_url=base) as browser:
            await dashboard_login(browser, token)
            await conn.execute("DELETE FROM service_tokens WHERE id = $1", token_id)
            # Sessions are checked again within SUBJECT_CHECK_SECONDS of a change.
            deadline = time.monotonic() + SUBJECT_CHECK_SECONDS + 5
            while (status := (await browser.get("/dashboard")).status_code) == 200:
                if time.monotonic() > deadline:
                    break
                await asyncio.sleep(0.2)
            statuses.append(status)
    finally:
        await conn.close()
    result = Result("dashboard_sessions", "/".join(map(str, statuses)))
    if statuses != [200, 303, 303]:
        result.problems.append(f"pages answered {statuses}, expected 200, then 303 twice")
    return result


async def dashboard_login(browser: httpx.AsyncClient, token: str) -> str:
    """Log in with the form; return the session's CSRF token."""
    form = await browser.get("/dashboard/login")
    await browser.post("/dashboard/login", data={"token": token, "csrf_token": csrf_of(form)})
    return csrf_of(await browser.get("/dashboard"))


def csrf_of(page: httpx.Response) -> str:
    found = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
    return found.group(1) if found else ""


async def slow_senders(target: Target, pid: int) -> tuple[Result, dict[str, float]]:
    """Item 6: trickled bodies and stalled headers cost bounded memory and end in time."""
    url = httpx.URL(str(target.client.base_url))
    before = rss_mib(pid)
    peak = before

    async def trickle() -> bytes:
        reader, writer = await asyncio.open_connection(url.host, url.port)
        head = ["POST /v1/github/events HTTP/1.1", f"Host: {url.host}", "Content-Length: 26000000"]
        head += [f"{k}: {v}" for k, v in signed(b"").items()]
        writer.write(("\r\n".join(head) + "\r\n\r\n").encode())
        answer = asyncio.create_task(reader.readline())
        with contextlib.suppress(OSError):
            while not answer.done():  # until the server answers (body deadline) or closes
                writer.write(b" " * SLOW_CHUNK_BYTES)
                await writer.drain()
                await asyncio.sleep(SLOW_CHUNK_INTERVAL)
        try:
            status = await answer
        except OSError:  # closed before its answer could be read
            status = b""
        writer.close()
        return status

    async def stall_headers() -> bytes:
        reader, writer = await asyncio.open_connection(url.host, url.port)
        writer.write(b"POST /v1/github/events HTTP/1.1\r\nHost: x\r\n")
        await writer.drain()
        answer = await reader.read()  # b"" once the server closes the connection
        writer.close()
        return answer

    async def watch() -> None:
        nonlocal peak
        while True:
            peak = max(peak, rss_mib(pid))
            await asyncio.sleep(0.05)

    watcher = asyncio.create_task(watch())
    started = time.monotonic()
    async with asyncio.timeout(BODY_TIMEOUT * 6):
        trickled, stalled = await asyncio.gather(
            asyncio.gather(*(trickle() for _ in range(SLOW_SENDERS))),
            asyncio.gather(*(stall_headers() for _ in range(STALLED_HEADERS))),
        )
    seconds = time.monotonic() - started
    watcher.cancel()
    raw = json.dumps(payload_ping()).encode()
    after = await target.client.post("/v1/github/events", content=raw, headers=signed(raw, "ping"))
    growth = peak - before
    figures = {
        "slow_senders_rss_growth_mib": round(growth, 1),
        "slow_senders_seconds": round(seconds, 1),
    }
    answers = sorted({line.split(b" ")[1].decode() if line else "closed" for line in trickled})
    result = Result("slow_senders", f"+{growth:.0f} MiB, answers {answers}")
    if growth > MAX_SLOW_RSS_GROWTH_MIB:
        result.problems.append(f"RSS grew {growth:.0f} MiB")
    if any(answer for answer in stalled):
        result.problems.append("a stalled header was answered instead of closed")
    if not set(answers) <= {"408", "503"}:
        result.problems.append(f"trickled bodies were answered {answers}")
    if after.status_code != 202:
        result.problems.append(f"a delivery afterwards got {after.status_code}")
    return result, figures


def payload_ping() -> dict[str, object]:
    return {"zen": f"hostile {uuid.uuid4()}", "hook_id": 1}


async def replays(target: Target) -> list[Result]:
    """Item 7: a recorded body under a new delivery id, and an older push."""
    results = []
    before = await target.state()
    again = await target.client.post(
        "/v1/github/events", content=PUSH, headers=signed(PUSH, delivery=str(uuid.uuid4()))
    )
    result = Result("replay_under_new_delivery_id", again.status_code)
    if again.status_code != 200 or await target.state() != before:
        result.problems.append(f"answered {again.status_code} or wrote something")
    results.append(result)
    older = push_body(REPO_GITHUB_ID, REPO, "c" * 40) | {"before": "d" * 40}
    raw = json.dumps(older).encode()
    answer = await target.client.post("/v1/github/events", content=raw, headers=signed(raw))
    head = await target.head("main")
    result = Result("older_push_keeps_the_head", f"{answer.status_code}, head {head[:7]}")
    if answer.status_code != 202 or head != SHA:
        result.problems.append(f"answered {answer.status_code}, head now {head}")
    results.append(result)
    return results


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
            env = process_env(
                bench_settings(fake, scratch / "storage"),
                database_url,
                rd.url(0),
                COCOV_WEB_HEADER_TIMEOUT=str(HEADER_TIMEOUT),
                COCOV_WEB_BODY_TIMEOUT=str(BODY_TIMEOUT),
            )
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
                results.extend(await replays(target))
                results.append(await invented_methods(target))
                result, figures = await huge_upload(target)
                results.append(result)
                rss.update(figures)
                results.append(await held_uploads_bounded(target))
                results.append(await sessions_revoked(target, database_url))
                result, figures = await slow_senders(target, pid)
                results.append(result)
                rss.update(figures)
            results.append(
                await unsigned_without_secret(env, scratch / "web-unsigned.log", database_url)
            )
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
        web_rss_before_100mb_mib=round(rss.pop("before_mib"), 1),
        web_rss_after_100mb_mib=round(rss.pop("after_mib"), 1),
        **rss,
    )


if __name__ == "__main__":
    sys.exit(main())
