"""Start-up failures say one line, exit 1 and show no secret (issue 13, items 1 and 11).

Each command runs as a separate process with every secret setting planted
(:mod:`cocov_jobs.testing.planted`), in both log formats; everything it writes is searched.
"""

from __future__ import annotations

import json
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from cocov_jobs.testing.planted import leaks, planted_env, secret_database_url
from cocov_jobs.testing.processes import CLI, cli_env

FORMATS = ["console", "json"]
#: Longest a failing start-up may take (the store checks give up after 5 s).
STARTUP_SECONDS = 30
#: Redis URL nobody answers, with a password.
DEAD_REDIS = "redis://:redis-secret-pw@127.0.0.1:1/0"


@pytest.fixture
def taken_port() -> Iterator[int]:
    """A 127.0.0.1 port another process listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


def start(
    args: list[str], fmt: str, tmp_path: Path, **env: str
) -> subprocess.CompletedProcess[str]:
    """Run ``cocov-jobs ARGS`` configured as an installation would be (both Redis URLs set)."""
    env.setdefault("COCOV_REDIS_CACHE_URL", env.get("COCOV_REDIS_URL", ""))
    started = time.monotonic()
    result = subprocess.run(
        [*CLI, *args],
        env=cli_env(
            **planted_env(
                **{
                    "COCOV_LOG_FORMAT": fmt,
                    "COCOV_DATA_DIR": str(tmp_path / "data"),
                    "COCOV_SIDEKIQ_PROBE_PORT": "0",
                    **env,
                }
            )
        ),
        capture_output=True,
        text=True,
        timeout=STARTUP_SECONDS * 2,
        check=False,
    )
    assert time.monotonic() - started < STARTUP_SECONDS
    assert leaks(result.stdout + result.stderr) == []
    assert "redis-secret-pw" not in result.stdout + result.stderr
    return result


def one_line(result: subprocess.CompletedProcess[str]) -> str:
    """The single line a failed start-up writes (and nothing else), with status 1."""
    assert result.returncode == 1, result.stderr[-3000:]
    lines = (result.stdout + result.stderr).strip().splitlines()
    assert len(lines) == 1, lines[:20]
    return lines[0]


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize(
    "args", [["run"], ["web"], ["worker"], ["jobs", "list"]], ids=lambda a: "-".join(a)
)
def test_unreachable_postgresql_is_one_line(
    args: list[str], fmt: str, tmp_path: Path, redis_url: str
) -> None:
    result = start(
        args, fmt, tmp_path, COCOV_DATABASE_URL=secret_database_url(), COCOV_REDIS_URL=redis_url
    )
    assert one_line(result) == (
        "cocov-jobs: cannot reach PostgreSQL at 127.0.0.1:1 (COCOV_DATABASE_URL):"
        " connection refused"
    )


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("command", ["run", "web"])
def test_a_taken_web_port_is_one_line(
    command: str, fmt: str, tmp_path: Path, database_url: str, redis_url: str, taken_port: int
) -> None:
    result = start(
        [command],
        fmt,
        tmp_path,
        COCOV_DATABASE_URL=database_url,
        COCOV_REDIS_URL=redis_url,
        COCOV_WEB_PORT=str(taken_port),
    )
    assert one_line(result) == (
        f"cocov-jobs: cannot listen on 127.0.0.1:{taken_port} (COCOV_WEB_HOST, COCOV_WEB_PORT):"
        " address already in use"
    )


def test_a_taken_probe_port_is_one_line(
    tmp_path: Path, database_url: str, redis_url: str, taken_port: int
) -> None:
    result = start(
        ["worker"],
        "json",
        tmp_path,
        COCOV_DATABASE_URL=database_url,
        COCOV_REDIS_URL=redis_url,
        COCOV_SIDEKIQ_PROBE_ADDRESS="127.0.0.1",
        COCOV_SIDEKIQ_PROBE_PORT=str(taken_port),
    )
    assert one_line(result) == (
        f"cocov-jobs: cannot listen on 127.0.0.1:{taken_port}"
        " (COCOV_SIDEKIQ_PROBE_ADDRESS, COCOV_SIDEKIQ_PROBE_PORT): address already in use"
    )


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("command", ["run", "web"])
def test_unreachable_redis_is_one_line(
    command: str, fmt: str, tmp_path: Path, database_url: str
) -> None:
    result = start(
        [command], fmt, tmp_path, COCOV_DATABASE_URL=database_url, COCOV_REDIS_URL=DEAD_REDIS
    )
    assert one_line(result) == (
        "cocov-jobs: cannot reach Redis at 127.0.0.1:1 (COCOV_REDIS_URL): connection refused"
    )


def test_a_worker_without_redis_says_so_at_once_and_keeps_running(
    tmp_path: Path, database_url: str
) -> None:
    """Jobs that need only PostgreSQL go on; readiness names the Redis it cannot reach."""
    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]
    worker = subprocess.Popen(
        [*CLI, "worker"],
        env=cli_env(
            **planted_env(
                COCOV_LOG_FORMAT="json",
                COCOV_DATABASE_URL=database_url,
                COCOV_REDIS_URL=DEAD_REDIS,
                COCOV_REDIS_CACHE_URL=DEAD_REDIS,
                COCOV_SIDEKIQ_PROBE_ADDRESS="127.0.0.1",
                COCOV_SIDEKIQ_PROBE_PORT=str(port),
            )
        ),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        readiness = _readiness(port, worker)
    finally:
        worker.terminate()
        out, err = worker.communicate(timeout=STARTUP_SECONDS)
    assert worker.returncode == 0, err[-3000:]
    expected = "cannot reach Redis at 127.0.0.1:1 (COCOV_REDIS_URL): connection refused"
    warnings = [
        line["event"]
        for line in map(json.loads, (text for text in err.splitlines() if text.startswith("{")))
        if line["level"] == "warning"
    ]
    assert warnings[0] == expected
    assert readiness["checks"]["redis"] is False
    assert readiness["checks"]["redis_error"] == expected
    assert leaks(out + err) == [] and "redis-secret-pw" not in out + err


def _readiness(port: int, worker: subprocess.Popen[str]) -> Any:
    """The worker's readiness answer, once it serves probes."""
    deadline = time.monotonic() + STARTUP_SECONDS
    while time.monotonic() < deadline:
        assert worker.poll() is None, "the worker exited"
        try:
            answer = httpx.get(f"http://127.0.0.1:{port}/system/probes/readiness")
        except httpx.TransportError:
            time.sleep(0.1)
            continue
        assert answer.status_code == 503
        return answer.json()
    raise AssertionError("the worker never served its probes")
