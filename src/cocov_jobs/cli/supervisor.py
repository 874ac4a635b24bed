"""``cocov-jobs worker --processes N`` and ``web --workers N``: N processes under one supervisor.

One Python process runs on one core. For ``worker`` the supervisor starts ``N`` worker
processes (``cocov-jobs worker --child``, which run jobs only) and itself serves the Sidekiq
probe server and runs the periodic scheduler, so there is one of each however many children
run. For ``web`` it opens the listening socket and starts ``N`` web processes
(``cocov-jobs web --child-fd FD``) that inherit it and accept from it, the kernel handing each
connection to one of them.

* ``SIGTERM`` / ``SIGINT`` (and, for workers, ``SIGTSTP``) are forwarded to every child (each
  then behaves as a single process does: a worker drains within ``COCOV_SHUTDOWN_TIMEOUT`` or
  goes quiet, a web process finishes its requests); the supervisor exits once every child has,
  with status 0 when every child exited 0 (or was ended by that signal while still starting,
  before it could handle it: it had nothing to finish).
* A child that exits while the supervisor is not stopping (crash, SIGKILL, out of memory) is
  started again after :data:`RESTART_DELAY` seconds, doubling up to :data:`RESTART_MAX_DELAY`
  while children keep dying within :data:`STABLE_SECONDS` of their start. Its jobs are picked
  again by heartbeat, as for any killed worker.
* In ``--burst`` mode children are not restarted: the supervisor exits when all have, with
  status 1 if any failed.
* A child dies with the supervisor (Linux ``PR_SET_PDEATHSIG``): a supervisor killed with
  SIGKILL leaves no worker running, and its children's jobs are picked again by heartbeat.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import signal
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import structlog

from cocov_jobs.parent_death import die_with_parent

log = structlog.get_logger(__name__)

#: Seconds before a crashed child is started again (doubled while children keep crashing).
RESTART_DELAY = 1.0
RESTART_MAX_DELAY = 30.0
#: A child that ran this long before dying resets the restart delay.
STABLE_SECONDS = 60.0
#: Signals forwarded to every worker child.
FORWARDED = (signal.SIGTERM, signal.SIGINT, signal.SIGTSTP)
#: Signals forwarded to every web child (SIGTSTP would suspend a web server).
WEB_FORWARDED = (signal.SIGTERM, signal.SIGINT)


@dataclass
class Child:
    """One child process and the delay before it is started again."""

    index: int
    process: asyncio.subprocess.Process | None = None
    started: float = 0.0
    restart_delay: float = RESTART_DELAY
    exit_codes: list[int] = field(default_factory=list)


class Supervisor:
    """Starts ``processes`` children running ``argv`` with ``env`` and keeps them running.

    ``kind`` names them in log lines; ``pass_fds`` are inherited by every child; ``forwarded``
    are the signals passed on to them.
    """

    def __init__(
        self,
        argv: Sequence[str],
        env: dict[str, str],
        processes: int,
        *,
        burst: bool,
        kind: str = "worker",
        pass_fds: Sequence[int] = (),
        forwarded: Sequence[signal.Signals] = FORWARDED,
    ) -> None:
        self.argv = list(argv)
        self.env = env
        self.burst = burst
        self.kind = kind
        self.pass_fds = tuple(pass_fds)
        self.forwarded = tuple(forwarded)
        self.children = [Child(i) for i in range(processes)]
        self._stopping = False
        self._stop_signal: int | None = None

    def install_signal_handlers(self) -> None:
        loop = asyncio.get_running_loop()
        for signum in self.forwarded:
            loop.add_signal_handler(signum, self.forward, signum)

    def forward(self, signum: int) -> None:
        """Send ``signum`` to every child; SIGTERM and SIGINT also stop restarting them."""
        if signum in (signal.SIGTERM, signal.SIGINT):
            self._stopping = True
            self._stop_signal = signum
        for child in self.children:
            if child.process is not None and child.process.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    child.process.send_signal(signum)

    async def run(self) -> int:
        """Run until every child has exited for good; the exit status (see the module)."""
        results = await asyncio.gather(*(self._keep(child) for child in self.children))
        return 0 if all(code == 0 for code in results) else 1

    async def _start(self, child: Child) -> asyncio.subprocess.Process:
        child.started = time.monotonic()
        child.process = await asyncio.create_subprocess_exec(
            *self.argv,
            env=self.env,
            preexec_fn=functools.partial(die_with_parent, os.getpid()),
            pass_fds=self.pass_fds,
        )
        log.info(f"{self.kind} process started", child=child.index, pid=child.process.pid)
        return child.process

    async def _keep(self, child: Child) -> int:
        while True:
            process = await self._start(child)
            code = await process.wait()
            child.exit_codes.append(code)
            if self._stopping and self._stop_signal is not None and code == -self._stop_signal:
                # Still starting when the signal came (no handler yet): nothing to finish.
                return 0
            if self._stopping or self.burst:
                return code
            ran = time.monotonic() - child.started
            child.restart_delay = (
                RESTART_DELAY
                if ran >= STABLE_SECONDS
                else min(child.restart_delay * 2, RESTART_MAX_DELAY)
            )
            log.warning(
                f"{self.kind} process exited; starting it again",
                child=child.index,
                pid=process.pid,
                exit_code=code,
                delay=child.restart_delay,
            )
            await asyncio.sleep(child.restart_delay)
            if self._stopping:
                return code


def child_argv(concurrency: int | None, burst: bool) -> list[str]:
    """The command line of one child: this program's ``worker --child``."""
    argv = [sys.executable, "-m", "cocov_jobs", "worker", "--child"]
    if concurrency is not None:
        argv += ["--concurrency", str(concurrency)]
    if burst:
        argv.append("--burst")
    return argv


def web_child_argv(fd: int) -> list[str]:
    """The command line of one web child: this program's ``web --child-fd FD``."""
    return [sys.executable, "-m", "cocov_jobs", "web", "--child-fd", str(fd)]


def child_env(database_url: str, redis_url: str, redis_cache_url: str) -> dict[str, str]:
    """The supervisor's environment, pointed at the stores it found (embedded ones included)."""
    return {
        **os.environ,
        "COCOV_DATABASE_URL": database_url,
        "COCOV_REDIS_URL": redis_url,
        "COCOV_REDIS_CACHE_URL": redis_cache_url,
    }
