"""Asyncio subprocesses that never outlive their caller.

Each child runs in its own session; if the awaiting task is cancelled (e.g. by a timeout) or
fails, the whole process group is killed with SIGKILL and reaped before the exception
propagates, so helpers such as ``git-remote-http`` die too.
"""

from __future__ import annotations

import asyncio
import fcntl
import os
import signal
from collections.abc import Callable, Mapping, Sequence
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from subprocess import DEVNULL, PIPE

#: Most bytes :func:`run_pipeline` moves from one process to the other in one system call.
RELAY_CHUNK_SIZE = 1 << 20


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


@dataclass(frozen=True)
class Piped:
    """Both processes of a pipeline and the bytes that went from one to the other."""

    producer: Completed
    consumer: Completed
    #: Bytes the producer wrote to its stdout.
    relayed: int


async def run_pipeline(
    producer: Sequence[str], consumer: Sequence[str], *, cwd: Path, env: Mapping[str, str]
) -> Piped:
    """Run ``producer | consumer`` in ``cwd``, counting the bytes in between.

    Each process gets its own pipe and this process moves the bytes from one to the other with
    ``splice(2)`` (kernel to kernel, never copied here), so they are counted as they stream and
    never stored. The consumer's stdout is discarded.
    """
    produced_read, produced_write = _pipe()
    consumed_read, consumed_write = _pipe()
    open_ends = {produced_read, consumed_write}

    def close(fd: int) -> None:  # each end once: the number may be reused right after
        if fd in open_ends:
            open_ends.remove(fd)
            os.close(fd)

    procs: list[asyncio.subprocess.Process] = []
    try:
        try:
            procs.append(
                await _spawn(producer, cwd=cwd, env=env, stdin=DEVNULL, stdout=produced_write)
            )
            procs.append(
                await _spawn(consumer, cwd=cwd, env=env, stdin=consumed_read, stdout=DEVNULL)
            )
        finally:
            os.close(produced_write)
            os.close(consumed_read)
        relay = _relay(produced_read, consumed_write, end_input=lambda: close(consumed_write))
        relayed, (_, producer_err), (_, consumer_err) = await asyncio.gather(
            relay, procs[0].communicate(), procs[1].communicate()
        )
    finally:
        for proc in procs:
            await _reap(proc)
        for fd in list(open_ends):
            close(fd)
    first, second = procs
    return Piped(
        _completed(first, b"", producer_err), _completed(second, b"", consumer_err), relayed
    )


def _pipe() -> tuple[int, int]:
    """A pipe holding up to :data:`RELAY_CHUNK_SIZE` bytes where the system allows it (fewer
    wake-ups of the relay than the default 64 KiB)."""
    read_end, write_end = os.pipe()
    with suppress(OSError):  # above /proc/sys/fs/pipe-max-size: keep the default
        fcntl.fcntl(write_end, fcntl.F_SETPIPE_SZ, RELAY_CHUNK_SIZE)
    return read_end, write_end


async def _relay(source: int, sink: int, *, end_input: Callable[[], None]) -> int:
    """Move everything from the pipe ``source`` to the pipe ``sink``, then call ``end_input``
    (closing ``sink``: the consumer's end of file); return the byte count.

    Ends at end of file on ``source``: the producer has exited (or been killed). When the
    consumer dies early the rest is read and dropped, so the producer still finishes and both
    exit statuses are reported.
    """
    os.set_blocking(source, False)
    os.set_blocking(sink, False)
    relayed = 0
    try:
        while moved := await _splice(source, sink):
            relayed += moved
    except BrokenPipeError:  # the consumer is gone
        end_input()
        while dropped := await _read(source):
            relayed += dropped
    end_input()
    return relayed


async def _splice(source: int, sink: int) -> int:
    """Bytes moved by one ``splice`` once ``source`` has some (0 at its end), waiting while
    ``sink`` is full. Readiness is reliable: this process is the pipes' only reader/writer."""
    await _ready(source, writable=False)
    while True:
        try:
            return os.splice(source, sink, RELAY_CHUNK_SIZE, flags=os.SPLICE_F_NONBLOCK)
        except BlockingIOError:
            await _ready(sink, writable=True)


async def _read(source: int) -> int:
    """Bytes read and dropped from ``source`` once it has some (0 at its end)."""
    await _ready(source, writable=False)
    return len(os.read(source, RELAY_CHUNK_SIZE))


async def _ready(fd: int, *, writable: bool) -> None:
    """Wait until ``fd`` can be read (or written) without blocking."""
    loop = asyncio.get_running_loop()
    ready: asyncio.Future[None] = loop.create_future()

    def wake() -> None:
        if not ready.done():
            ready.set_result(None)

    if writable:
        loop.add_writer(fd, wake)
    else:
        loop.add_reader(fd, wake)
    try:
        await ready
    finally:
        if writable:
            loop.remove_writer(fd)
        else:
            loop.remove_reader(fd)


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
