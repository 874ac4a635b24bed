"""Fetch exactly one commit with git, authenticated by an installation token.

The token reaches git only through its environment, as an ``http.extraHeader`` given by
``GIT_CONFIG_COUNT``/``GIT_CONFIG_KEY_0``/``GIT_CONFIG_VALUE_0``: never in the remote URL, a
command line or ``.git/config`` (and ``.git`` is removed after checkout anyway). Git runs with
a minimal environment: ``PATH``, a private ``HOME``, no system config, no terminal prompt,
``LC_ALL=C``.
"""

from __future__ import annotations

import asyncio
import base64
import os
import re
import shutil
from collections.abc import Iterable
from pathlib import Path
from urllib.parse import quote

from cocov_jobs.gitstore.process import run

#: ``PATH`` given to git, tar and zstd when the process has none.
DEFAULT_PATH = "/usr/local/bin:/usr/bin:/bin"
#: ``checkout.workers``: files are written by this many processes, 0 meaning one per CPU
#: (git's parallel checkout; it pays off where creating a file is slow, e.g. network disks).
CHECKOUT_WORKERS = 0
#: Replacement text for anything secret in an error message.
REDACTED = "***"

#: Fragments of git's stderr (lower-cased) meaning that retrying cannot help: the token is
#: refused, the repository is unknown, or the server does not have the commit.
PERMANENT_FAILURE_MARKERS = (
    "returned error: 401",
    "returned error: 403",
    "returned error: 404",
    "authentication failed",
    "could not read username",
    "could not read password",
    "repository not found",
    "not our ref",
    "couldn't find remote ref",
    "unadvertised object",
)
#: Git's own wording of an HTTP 404 when the server sends no ``remote:`` message
#: (``fatal: repository '<url>/' not found``): the repository does not exist there.
_GIT_NOT_FOUND_RE = re.compile(r"repository '[^'\n]*' not found")

#: Fragments meaning the server did not accept the token (expired or revoked): HTTP 401.
TOKEN_REJECTED_MARKERS = (
    "returned error: 401",
    "authentication failed",
    "could not read username",
)

_HEADER_RE = re.compile(r"(?i)(authorization:[ \t]*)[^\r\n]*")
_URL_USERINFO_RE = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)[^/\s@]+@")


class CloneError(Exception):
    """Cloning failed; ``transient`` tells whether a retry may succeed.

    Transient: network failures, HTTP 5xx, timeouts, local failures. Not transient: the
    server refuses the token (401/403), the repository or the commit does not exist. The
    message holds git's stderr with every credential removed (:func:`scrub`).
    """

    def __init__(self, message: str, transient: bool) -> None:
        super().__init__(message)
        self.transient = transient

    @property
    def token_rejected(self) -> bool:
        """True when git was answered 401: a fresh token may succeed."""
        lowered = str(self).lower()
        return any(marker in lowered for marker in TOKEN_REJECTED_MARKERS)


def scrub(text: str, secrets: Iterable[str] = ()) -> str:
    """Return ``text`` with credentials replaced by ``***``.

    Removed: every occurrence of each non-empty string of ``secrets`` (longest first), the
    value of any ``Authorization:`` header, and the user-info part of any URL.
    """
    for secret in sorted((s for s in secrets if s), key=len, reverse=True):
        text = text.replace(secret, REDACTED)
    text = _HEADER_RE.sub(lambda m: m.group(1) + REDACTED, text)
    return _URL_USERINFO_RE.sub(lambda m: m.group(1) + REDACTED + "@", text)


def remote_url(github_url: str, org: str, repo_name: str) -> str:
    """``<github_url>/<org>/<repo_name>.git`` with both names percent-encoded; no credentials."""
    return f"{github_url.rstrip('/')}/{quote(org, safe='')}/{quote(repo_name, safe='')}.git"


def basic_credentials(token: str) -> str:
    """``base64("x-access-token:" + token)``, the Basic credentials of an installation token."""
    return base64.b64encode(f"x-access-token:{token}".encode()).decode()


def auth_header(token: str) -> str:
    """HTTP header GitHub accepts for an installation token on git's smart-HTTP endpoints."""
    return f"Authorization: Basic {basic_credentials(token)}"


def base_env(home: Path) -> dict[str, str]:
    """The whole environment of git, tar and zstd: nothing is inherited except ``PATH``."""
    return {
        "PATH": os.environ.get("PATH") or DEFAULT_PATH,
        "HOME": str(home),
        "GIT_TERMINAL_PROMPT": "0",
        "GIT_CONFIG_NOSYSTEM": "1",
        "LC_ALL": "C",
    }


def git_auth_env(home: Path, token: str) -> dict[str, str]:
    """:func:`base_env` plus the token as git's ``http.extraHeader``."""
    return {
        **base_env(home),
        "GIT_CONFIG_COUNT": "1",
        "GIT_CONFIG_KEY_0": "http.extraHeader",
        "GIT_CONFIG_VALUE_0": auth_header(token),
    }


def is_permanent_failure(stderr: str) -> bool:
    """True when git's stderr says the token, the repository or the commit is refused."""
    lowered = stderr.lower()
    return any(marker in lowered for marker in PERMANENT_FAILURE_MARKERS) or bool(
        _GIT_NOT_FOUND_RE.search(lowered)
    )


async def fetch_commit(dest: Path, *, remote: str, sha: str, token: str, home: Path) -> int:
    """Check out commit ``sha`` of ``remote`` into the new directory ``dest``, without ``.git``.

    Runs ``git init``, ``git fetch --depth 1 --no-tags <remote> <sha>``, ``git checkout
    FETCH_HEAD`` (parallel, :data:`CHECKOUT_WORKERS`), then removes ``.git``. Return the
    commit time (Unix seconds). Raise :class:`CloneError` when a git command fails.
    """
    await asyncio.to_thread(dest.mkdir)
    env = base_env(home)
    await _git(dest, env, ("init", "-q"))
    fetch = ("fetch", "--depth", "1", "--no-tags", "--quiet", remote, sha)
    secrets = (token, basic_credentials(token))
    await _git(dest, git_auth_env(home, token), fetch, secrets=secrets)
    workers = f"checkout.workers={CHECKOUT_WORKERS}"
    await _git(dest, env, ("checkout", "-q", "FETCH_HEAD"), config=(workers,))
    commit_time = int(await _git(dest, env, ("show", "-s", "--format=%ct")))
    await asyncio.to_thread(shutil.rmtree, dest / ".git")
    return commit_time


async def _git(
    cwd: Path,
    env: dict[str, str],
    args: tuple[str, ...],
    *,
    secrets: Iterable[str] = (),
    config: Iterable[str] = (),
) -> str:
    """Run ``git [-c <config>…] <args>``; return stdout or raise a scrubbed :class:`CloneError`."""
    options = [item for setting in config for item in ("-c", setting)]
    result = await run(("git", *options, *args), cwd=cwd, env=env)
    if result.returncode != 0:
        stderr = scrub(result.stderr.decode(errors="replace").strip(), secrets)
        raise CloneError(
            f"git {args[0]} failed with exit status {result.returncode}: {stderr}",
            transient=not is_permanent_failure(stderr),
        )
    return result.stdout.decode(errors="replace")
