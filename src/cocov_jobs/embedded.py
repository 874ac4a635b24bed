"""Embedded PostgreSQL and Redis for installs with nothing configured.

When ``COCOV_DATABASE_URL`` (or ``COCOV_DATABASE_HOST``) is unset, a private PostgreSQL cluster
lives in ``<COCOV_DATA_DIR>/postgres``: ``initdb`` once, started with ``pg_ctl`` on a Unix
socket only (no TCP port), stopped on exit. The machine's PostgreSQL binaries are used because
Cocov's schema needs the contrib extensions ``citext`` and ``pg_trgm``. PostgreSQL refuses to
run as root, so when we are root its processes run as the ``postgres`` system user.

When ``COCOV_REDIS_URL`` is unset, a private ``redis-server`` runs the same way in
``<COCOV_DATA_DIR>/redis`` (append-only file, so deferred coverage survives a restart); db 0 is
the primary Redis and db 1 the cache Redis. A second start reuses the same data; a server
already running on the same data directory (another ``cocov-jobs`` process) is shared and left
running when we exit.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import pwd
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import structlog

log = structlog.get_logger(__name__)

#: Database created inside the embedded cluster.
EMBEDDED_DATABASE = "cocov"
#: Seconds to wait for an embedded server to accept connections.
START_TIMEOUT = 60.0
#: Unix socket paths are limited to about 107 bytes; longer ones go under /tmp.
MAX_SOCKET_PATH = 100


class EmbeddedError(RuntimeError):
    """An embedded store could not be started; the message says what to install or fix."""


def _find_pg_bin() -> Path:
    candidates = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), reverse=True)
    if candidates:
        return candidates[0].parent
    initdb = shutil.which("initdb")
    if initdb:
        return Path(initdb).parent
    raise EmbeddedError(
        "PostgreSQL binaries not found: install Debian's 'postgresql' package "
        "(make setup does) or set COCOV_DATABASE_URL"
    )


def _service_user() -> pwd.struct_passwd | None:
    """The unprivileged user to run servers as when we are root, else None (run as ourselves)."""
    if os.geteuid() != 0:
        return None
    try:
        return pwd.getpwnam("postgres")
    except KeyError as exc:
        raise EmbeddedError(
            "running as root needs the 'postgres' system user for the embedded PostgreSQL "
            "(install Debian's 'postgresql' package)"
        ) from exc


def _socket_dir(data_dir: Path, name: str) -> Path:
    path = data_dir / f"{name}-socket"
    if len(str(path)) > MAX_SOCKET_PATH - 20:
        digest = hashlib.sha1(str(data_dir).encode()).hexdigest()[:12]
        path = Path(tempfile.gettempdir()) / f"cocov-{name}-{digest}"
    return path


def _own(path: Path, user: pwd.struct_passwd | None) -> None:
    """Create ``path`` (0700) owned by ``user``; make its parents traversable for that user."""
    path.mkdir(parents=True, exist_ok=True)
    if user is None:
        return
    os.chown(path, user.pw_uid, user.pw_gid)
    os.chmod(path, 0o700)
    for parent in path.parents:
        mode = parent.stat().st_mode
        if not mode & 0o001:
            os.chmod(parent, mode | 0o001)


def _run(argv: list[str], user: pwd.struct_passwd | None, **kwargs: object) -> str:
    result = subprocess.run(
        argv,
        user=user.pw_uid if user else None,
        group=user.pw_gid if user else None,
        extra_groups=[] if user else None,
        capture_output=True,
        text=True,
        cwd="/",
        check=False,
        **kwargs,  # type: ignore[call-overload]
    )
    if result.returncode != 0:
        raise EmbeddedError(f"{Path(argv[0]).name} failed: {result.stderr.strip()[-2000:]}")
    return str(result.stdout)


@dataclass
class EmbeddedPostgres:
    data_dir: Path
    bin_dir: Path = field(default_factory=_find_pg_bin)
    started_here: bool = False

    @property
    def cluster_dir(self) -> Path:
        return self.data_dir / "postgres"

    @property
    def socket_dir(self) -> Path:
        return _socket_dir(self.data_dir, "pg")

    @property
    def url(self) -> str:
        return f"postgresql://postgres@/{EMBEDDED_DATABASE}?host={self.socket_dir}"

    def start(self) -> None:
        user = _service_user()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if not (self.cluster_dir / "PG_VERSION").exists():
            _own(self.cluster_dir, user)
            _run(
                [
                    str(self.bin_dir / "initdb"),
                    "-D",
                    str(self.cluster_dir),
                    "-U",
                    "postgres",
                    "--auth=trust",
                    "--encoding=UTF8",
                    "--locale=C",
                ],
                user,
            )
        _own(self.socket_dir, user)
        if self._running(user):
            log.info("embedded PostgreSQL already running", data_dir=str(self.cluster_dir))
        else:
            options = f"-k {self.socket_dir} -c listen_addresses='' -c max_connections=200"
            _run(
                [
                    str(self.bin_dir / "pg_ctl"),
                    "-D",
                    str(self.cluster_dir),
                    "-l",
                    str(self.cluster_dir / "server.log"),
                    "-o",
                    options,
                    "-w",
                    "-t",
                    str(int(START_TIMEOUT)),
                    "start",
                ],
                user,
            )
            self.started_here = True
        self._create_database(user)

    def _running(self, user: pwd.struct_passwd | None) -> bool:
        result = subprocess.run(
            [str(self.bin_dir / "pg_ctl"), "-D", str(self.cluster_dir), "status"],
            user=user.pw_uid if user else None,
            group=user.pw_gid if user else None,
            extra_groups=[] if user else None,
            capture_output=True,
            cwd="/",
            check=False,
        )
        return result.returncode == 0

    def _create_database(self, user: pwd.struct_passwd | None) -> None:
        psql = [str(self.bin_dir / "psql"), "-h", str(self.socket_dir), "-U", "postgres", "-tA"]
        exists = _run(
            [
                *psql,
                "-c",
                f"SELECT 1 FROM pg_database WHERE datname = '{EMBEDDED_DATABASE}'",
                "postgres",
            ],
            user,
        )
        if exists.strip() != "1":
            _run([*psql, "-c", f'CREATE DATABASE "{EMBEDDED_DATABASE}"', "postgres"], user)

    def stop(self) -> None:
        if not self.started_here:
            return
        with contextlib.suppress(EmbeddedError):
            _run(
                [str(self.bin_dir / "pg_ctl"), "-D", str(self.cluster_dir), "-m", "fast", "stop"],
                _service_user(),
            )
        self.started_here = False


@dataclass
class EmbeddedRedis:
    data_dir: Path
    process: subprocess.Popen[bytes] | None = None

    @property
    def redis_dir(self) -> Path:
        return self.data_dir / "redis"

    @property
    def socket_path(self) -> Path:
        return _socket_dir(self.data_dir, "redis") / "redis.sock"

    def url(self, db: int) -> str:
        return f"unix://{self.socket_path}?db={db}"

    def start(self) -> None:
        server = shutil.which("redis-server")
        if server is None:
            raise EmbeddedError(
                "redis-server not found: install Debian's 'redis-server' package "
                "(make setup does) or set COCOV_REDIS_URL"
            )
        self.redis_dir.mkdir(parents=True, exist_ok=True)
        self.socket_path.parent.mkdir(parents=True, exist_ok=True)
        if self._answers():
            log.info("embedded Redis already running", socket=str(self.socket_path))
            return
        self.process = subprocess.Popen(
            [
                server,
                "--port",
                "0",
                "--unixsocket",
                str(self.socket_path),
                "--unixsocketperm",
                "700",
                "--dir",
                str(self.redis_dir),
                "--appendonly",
                "yes",
                "--save",
                "",
                "--logfile",
                str(self.redis_dir / "redis.log"),
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        deadline = time.monotonic() + START_TIMEOUT
        while not self._answers():
            if self.process.poll() is not None:
                raise EmbeddedError(f"redis-server exited; see {self.redis_dir / 'redis.log'}")
            if time.monotonic() > deadline:
                raise EmbeddedError("redis-server did not start in time")
            time.sleep(0.05)

    def _answers(self) -> bool:
        import socket

        if not self.socket_path.exists():
            return False
        with socket.socket(socket.AF_UNIX) as sock:
            sock.settimeout(1)
            try:
                sock.connect(str(self.socket_path))
                sock.sendall(b"PING\r\n")
                return sock.recv(16).startswith(b"+PONG")
            except OSError:
                return False

    def stop(self) -> None:
        if self.process is None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
        self.process = None


@dataclass
class Stores:
    """The URLs to use, after starting whatever is embedded."""

    database_url: str
    redis_url: str
    redis_cache_url: str
    embedded: list[str]


@contextlib.contextmanager
def stores(
    *, database_url: str | None, redis_url: str, redis_cache_url: str, data_dir: Path
) -> Iterator[Stores]:
    """Start embedded stores for whatever is not configured; stop them on exit."""
    pg = EmbeddedPostgres(data_dir.resolve()) if not database_url else None
    rd = EmbeddedRedis(data_dir.resolve()) if not redis_url else None
    try:
        if pg:
            pg.start()
        if rd:
            rd.start()
        cache_url = redis_cache_url or (rd.url(1) if rd else redis_url)
        yield Stores(
            database_url=database_url or (pg.url if pg else ""),
            redis_url=redis_url or (rd.url(0) if rd else ""),
            redis_cache_url=cache_url,
            embedded=[name for name, s in (("postgresql", pg), ("redis", rd)) if s],
        )
    finally:
        if rd:
            rd.stop()
        if pg:
            pg.stop()
