"""Asyncio subprocesses that never outlive their caller.

Each child runs in its own session; if the awaiting task is cancelled (e.g. by a timeout) or
fails, the whole process group is killed with SIGKILL and reaped before the exception
propagates, so helpers such as ``git-remote-http`` die too.
"""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Mapping, Sequence
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from subprocess import DEVNULL, PIPE


@dataclass(frozen=True)
class Completed:
    """Exit status and captured output of one finished process."""

    returncode: int
    stdout: bytes
    stderr: bytes


async def run(argv: Sequence[str], *, cwd: Path, env: Mapping[str, str]) -> Completed:
    """Run ``argv`` in ``cwd`` with exactly ``env``; capture stdout and stderr."""
    proc = await _spawn(argv, cwd=cwd, env=env, stdin=DEVNULL, stdout=PIPE)
    try:
        out, err = await proc.communicate()
    finally:
        await _reap(proc)
    return _completed(proc, out, err)


async def run_pipeline(
    producer: Sequence[str], consumer: Sequence[str], *, cwd: Path, env: Mapping[str, str]
) -> tuple[Completed, Completed]:
    """Run ``producer | consumer`` in ``cwd``; the consumer's stdout is discarded."""
    read_fd, write_fd = os.pipe()
    procs: list[asyncio.subprocess.Process] = []
    try:
        try:
            procs.append(await _spawn(producer, cwd=cwd, env=env, stdin=DEVNULL, stdout=write_fd))
            procs.append(await _spawn(consumer, cwd=cwd, env=env, stdin=read_fd, stdout=DEVNULL))
        finally:
            os.close(read_fd)
            os.close(write_fd)
        outputs = await asyncio.gather(*(proc.communicate() for proc in procs))
    finally:
        for proc in procs:
            await _reap(proc)
    first, second = (_completed(p, out, err) for p, (out, err) in zip(procs, outputs, strict=True))
    return first, second


async def _spawn(
    argv: Sequence[str], *, cwd: Path, env: Mapping[str, str], stdin: int, stdout: int
) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        *argv,
        cwd=cwd,
        env=dict(env),
        stdin=stdin,
        stdout=stdout,
        stderr=PIPE,
        start_new_session=True,
    )


async def _reap(proc: asyncio.subprocess.Process) -> None:
    if proc.returncode is None:
        with suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        await proc.wait()


def _completed(proc: asyncio.subprocess.Process, out: bytes | None, err: bytes | None) -> Completed:
    assert proc.returncode is not None
    return Completed(proc.returncode, out or b"", err or b"")
