"""Real bare git repositories for the GitHub fake, written without a work tree.

Rules:

* Commits are written with ``git fast-import``. The n-th commit of a repository (n counted
  from 0 across all its branches) is dated ``BASE_EPOCH + n * COMMIT_INTERVAL`` (author and
  committer alike, UTC), so the same sequence of calls always produces the same shas.
* Every bare repository allows fetching any reachable sha (``uploadpack.allowAnySHA1InWant``,
  ``uploadpack.allowReachableSHA1InWant``), as a shallow ``git fetch --depth 1 <sha>`` needs.
* Git never reads the machine's or the user's configuration (``GIT_CONFIG_NOSYSTEM``,
  ``GIT_CONFIG_GLOBAL=/dev/null``).
* Smart HTTP is served by ``git http-backend`` run as a CGI program per request.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

#: Date of every repository's first commit: 2024-01-01T00:00:00Z.
BASE_EPOCH = 1_704_067_200
#: Seconds between two consecutive commits of one repository.
COMMIT_INTERVAL = 60
#: Author and committer of commits written without an explicit author.
DEFAULT_AUTHOR = ("Cocov Fake", "fake@cocov.test")
#: Files modified by each commit after the first in :meth:`BareRepos.write_big_history`.
BIG_REPO_CHANGES_PER_COMMIT = 5
#: Directories the files of a big repository are spread over.
BIG_REPO_DIRECTORIES = 100

#: What a commit does to one path: new content, or ``None`` to delete it.
FileChange = bytes | str | None

_LOG_FORMAT = "%H%x00%T%x00%P%x00%an%x00%ae%x00%at%x00%cn%x00%ce%x00%ct%x00%B%x1e"
_UPLOADPACK_CONFIG = (
    "[uploadpack]\n\tallowAnySHA1InWant = true\n\tallowReachableSHA1InWant = true\n"
)


@dataclass(frozen=True)
class GitCommit:
    """One commit as ``git log`` reports it (times are Unix seconds)."""

    sha: str
    tree: str
    parents: tuple[str, ...]
    author_name: str
    author_email: str
    author_time: int
    committer_name: str
    committer_email: str
    committer_time: int
    message: str


@dataclass(frozen=True)
class CgiResponse:
    """What ``git http-backend`` answered: status, headers and body."""

    status: int
    headers: list[tuple[str, str]]
    body: bytes


class BareRepos:
    """Bare repositories under ``root`` (``root/<owner>/<name>.git``), the CGI project root."""

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self.env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(root),
            "GIT_CONFIG_NOSYSTEM": "1",
            "GIT_CONFIG_GLOBAL": os.devnull,
            "LC_ALL": "C",
        }

    def path(self, relative: str) -> Path:
        return self.root / relative

    def _git(self, relative: str, *args: str, stdin: bytes = b"") -> str:
        done = subprocess.run(
            ["git", *args],
            cwd=self.path(relative),
            env=self.env,
            input=stdin,
            capture_output=True,
            check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(f"git {args[0]} failed: {done.stderr.decode(errors='replace')}")
        return done.stdout.decode()

    # Writing ---------------------------------------------------------------------------------

    def init(self, relative: str, default_branch: str) -> None:
        """Create an empty bare repository whose HEAD names ``default_branch``."""
        target = self.path(relative)
        target.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            ["git", "init", "--quiet", "--bare", f"--initial-branch={default_branch}", str(target)],
            env=self.env,
            check=True,
            capture_output=True,
        )
        with (target / "config").open("a") as config:
            config.write(_UPLOADPACK_CONFIG)

    def head(self, relative: str, branch: str) -> str | None:
        """The sha ``refs/heads/<branch>`` points to, or None when the branch does not exist."""
        try:
            out = self._git(relative, "rev-parse", "--verify", "--quiet", f"refs/heads/{branch}")
        except RuntimeError:
            return None
        return out.strip()

    def commit(
        self,
        relative: str,
        *,
        branch: str,
        parent: str | None,
        files: Mapping[str, FileChange],
        message: str,
        author: tuple[str, str],
        epoch: int,
    ) -> str:
        """Write one commit on ``branch`` (child of ``parent``) and return its sha."""
        stream = _commit_command(branch, parent, files, message, author, epoch)
        self._git(relative, "fast-import", "--quiet", stdin=stream)
        sha = self.head(relative, branch)
        assert sha is not None
        return sha

    def write_big_history(self, relative: str, *, branch: str, files: int, commits: int) -> str:
        """Write ``commits`` commits in one ``fast-import`` run; return the branch head.

        The first commit adds ``files`` files spread over :data:`BIG_REPO_DIRECTORIES`
        directories; each later commit rewrites :data:`BIG_REPO_CHANGES_PER_COMMIT` of them.
        """
        paths = [f"src/dir{i % BIG_REPO_DIRECTORIES}/file{i}.py" for i in range(files)]
        stream = bytearray()
        first = {path: _big_file(i, 0) for i, path in enumerate(paths)}
        stream += _commit_command(branch, None, first, "Initial commit", DEFAULT_AUTHOR, BASE_EPOCH)
        for n in range(1, commits):
            changed = {
                paths[(n * BIG_REPO_CHANGES_PER_COMMIT + k) % files]: _big_file(n, k)
                for k in range(BIG_REPO_CHANGES_PER_COMMIT)
            }
            epoch = BASE_EPOCH + n * COMMIT_INTERVAL
            stream += _commit_command(branch, None, changed, f"Commit {n}", DEFAULT_AUTHOR, epoch)
        self._git(relative, "fast-import", "--quiet", stdin=bytes(stream))
        sha = self.head(relative, branch)
        assert sha is not None
        return sha

    # Reading (from the server's event loop) --------------------------------------------------

    async def _agit(self, relative: str, *args: str) -> str | None:
        proc = await asyncio.create_subprocess_exec(
            "git",
            *args,
            cwd=self.path(relative),
            env=self.env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL,
        )
        out, _ = await proc.communicate()
        return out.decode() if proc.returncode == 0 else None

    async def resolve(self, relative: str, ref: str) -> str | None:
        """The commit sha ``ref`` (branch or sha) names, or None. Refs starting with ``-`` fail."""
        if not ref or ref.startswith("-"):
            return None
        out = await self._agit(relative, "rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}")
        return out.strip() if out else None

    async def count(self, relative: str, sha: str) -> int:
        """Number of commits reachable from ``sha``."""
        out = await self._agit(relative, "rev-list", "--count", sha)
        return int(out or 0)

    async def log(self, relative: str, sha: str, *, skip: int, limit: int) -> list[GitCommit]:
        """Commits reachable from ``sha``, newest first, ``limit`` of them after ``skip``."""
        args = ["log", f"--format={_LOG_FORMAT}", f"--skip={skip}", f"--max-count={limit}", sha]
        out = await self._agit(relative, *args)
        return [_parse_commit(record) for record in (out or "").split("\x1e") if record.strip()]

    async def http_backend(
        self,
        *,
        path_info: str,
        method: str,
        query: str,
        content_type: str,
        git_protocol: str | None,
        body: bytes,
    ) -> CgiResponse:
        """Run ``git http-backend`` for one smart-HTTP request."""
        env = {
            **self.env,
            "GIT_PROJECT_ROOT": str(self.root),
            "GIT_HTTP_EXPORT_ALL": "1",
            "PATH_INFO": path_info,
            "QUERY_STRING": query,
            "REQUEST_METHOD": method,
            "CONTENT_TYPE": content_type,
            "CONTENT_LENGTH": str(len(body)),
            "REMOTE_ADDR": "127.0.0.1",
        }
        if git_protocol:
            env["GIT_PROTOCOL"] = git_protocol
        proc = await asyncio.create_subprocess_exec(
            "git",
            "http-backend",
            env=env,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL,
        )
        out, _ = await proc.communicate(body)
        return parse_cgi(out)


def parse_cgi(output: bytes) -> CgiResponse:
    """Split a CGI program's output into status (``Status:`` header, default 200), headers, body."""
    cut = min((i for i in (output.find(b"\r\n\r\n"), output.find(b"\n\n")) if i >= 0), default=-1)
    if cut < 0:
        return CgiResponse(500, [], b"git http-backend produced no headers\n")
    head, body = output[:cut], output[cut:].lstrip(b"\r\n")
    status, headers = 200, []
    for line in head.decode("latin-1").splitlines():
        name, _, value = line.partition(":")
        if name.lower() == "status":
            status = int(value.split()[0])
        elif name:
            headers.append((name.strip(), value.strip()))
    return CgiResponse(status, headers, body)


def _data(payload: bytes) -> bytes:
    return b"data %d\n%s\n" % (len(payload), payload)


def _commit_command(
    branch: str,
    parent: str | None,
    files: Mapping[str, FileChange],
    message: str,
    author: tuple[str, str],
    epoch: int,
) -> bytes:
    name, email = author
    ident = f"{name} <{email}> {epoch} +0000"
    if not message.endswith("\n"):
        message += "\n"
    parts = [
        f"commit refs/heads/{branch}\nauthor {ident}\ncommitter {ident}\n".encode(),
        _data(message.encode()),
    ]
    if parent:
        parts.append(f"from {parent}\n".encode())
    for path, content in files.items():
        if content is None:
            parts.append(f"D {path}\n".encode())
        else:
            raw = content.encode() if isinstance(content, str) else content
            parts.append(f"M 100644 inline {path}\n".encode() + _data(raw))
    parts.append(b"\n")
    return b"".join(parts)


def _big_file(seed: int, variant: int) -> bytes:
    return f"# generated file {seed}.{variant}\n".encode() + b"value = %d\n" % seed * 20


def _parse_commit(record: str) -> GitCommit:
    fields = record.lstrip("\n").split("\x00")
    sha, tree, parents, an, ae, at, cn, ce, ct, message = fields
    return GitCommit(
        sha=sha,
        tree=tree,
        parents=tuple(parents.split()),
        author_name=an,
        author_email=ae,
        author_time=int(at),
        committer_name=cn,
        committer_email=ce,
        committer_time=int(ct),
        message=message.rstrip("\n"),
    )
