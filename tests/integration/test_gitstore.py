"""gitstore against real git over smart HTTP (the GitHub fake), real tar/zstd, and moto's S3.

Every published commit is checked the way Cocov's Go Worker checks it: read the ``.shasum``,
require the ``sha256:`` prefix, compare with ``shasum -a256`` of the ``.tar.zst``, then
``zstd -d`` and ``tar --strip-components=1 -xf`` into an empty directory.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
import random
import re
import subprocess
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from cocov_jobs.config import Settings
from cocov_jobs.gitstore import CloneError, LocalStorage, repo_dir, storage_from_settings
from cocov_jobs.gitstore.clone import fetch_commit
from cocov_jobs.gitstore.local import WORK_DIR_PREFIX
from cocov_jobs.gitstore.s3 import S3Storage
from cocov_jobs.testing.github_fake import FakeGitHub
from cocov_jobs.testing.processes import until

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

ORG = "acme"
REPO = "web"
#: Content of the repository's first commit (hidden files included on purpose).
FILES: dict[str, bytes] = {
    "README.md": b"# web\n",
    ".cocov.yaml": b"version: v0.1.alpha\n",
    ".github/workflows/ci.yml": b"on: push\n",
    "src/app.py": b"print('hello')\n" * 50,
    "src/deep/nested/data.bin": bytes(range(256)) * 4,
    "docs/empty.txt": b"",
}
#: Files changed by the second commit.
SECOND_FILES: dict[str, bytes] = {"src/app.py": b"print('bye')\n", "NEW.md": b"new\n"}
#: Length of ``sha256:<64 hex>``.
SHASUM_SIZE = 71
#: Seconds a test waits for a condition before failing.
WAIT_TIMEOUT = 10.0
#: Seconds the fake holds a request in the slow-fetch tests (cut short when it stops).
HOLD_SECONDS = 120.0


# Fixtures ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def fake(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FakeGitHub]:
    with FakeGitHub(org=ORG, tmp_dir=tmp_path_factory.mktemp("fake")) as server:
        yield server


@pytest.fixture(scope="module")
def commits(fake: FakeGitHub) -> tuple[str, str]:
    """Two commits of ``web``: the first with :data:`FILES`, the second on top of it."""
    fake.add_repo(REPO, files=FILES)
    first = fake.head(REPO)
    second = fake.commit(REPO, SECOND_FILES)
    return first, second


@pytest.fixture
def sha(commits: tuple[str, str]) -> str:
    return commits[0]


@pytest.fixture
def token(fake: FakeGitHub) -> str:
    return fake.issue_installation_token()


@pytest.fixture
def storage(tmp_path: Path) -> LocalStorage:
    return LocalStorage(tmp_path / "store")


@pytest.fixture
def clone(fake: FakeGitHub, token: str) -> Callable[..., Any]:
    """``clone(storage, sha, **overrides)``: clone_commit with the fake's defaults."""

    async def run(storage: LocalStorage | S3Storage, sha: str, **overrides: str) -> int:
        args = {
            "repo_name": REPO,
            "sha": sha,
            "token": token,
            "org": ORG,
            "github_url": fake.git_url,
        }
        return await storage.clone_commit(**{**args, **overrides})

    return run


@pytest.fixture
def bucket(s3: S3Client) -> str:
    name = f"clones-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=name)
    return name


@pytest.fixture
def s3_storage(s3: S3Client, bucket: str, tmp_path: Path) -> S3Storage:
    (tmp_path / "s3-work").mkdir()
    return S3Storage(bucket, client=s3, work_root=tmp_path / "s3-work")


# Helpers -----------------------------------------------------------------------------------


def worker_check(artifacts_dir: Path, sha: str, scratch: Path) -> dict[str, bytes]:
    """Validate and extract ``<sha>.tar.zst`` as Cocov's Worker does; return the files."""
    shasum = (artifacts_dir / f"{sha}.tar.zst.shasum").read_text()
    algorithm, _, expected = shasum.partition(":")
    assert algorithm == "sha256"
    assert re.fullmatch(r"[0-9a-f]{64}", expected)
    archive = artifacts_dir / f"{sha}.tar.zst"
    digest = _out(["shasum", "-a256", str(archive)], cwd=scratch).split()[0]
    assert digest == expected
    _out(["zstd", "-d", "-q", str(archive), "-o", str(scratch / f"{sha}.tar")], cwd=scratch)
    volume = scratch / "volume"
    volume.mkdir()
    _out(["tar", "--strip-components=1", "-xf", str(scratch / f"{sha}.tar")], cwd=volume)
    return read_tree(volume)


def read_tree(root: Path) -> dict[str, bytes]:
    """Every regular file under ``root`` (hidden ones included) by relative path."""
    return {
        path.relative_to(root).as_posix(): path.read_bytes()
        for path in root.rglob("*")
        if path.is_file() and not path.is_symlink()
    }


def _out(argv: list[str], *, cwd: Path) -> str:
    return subprocess.run(argv, cwd=cwd, check=True, capture_output=True, text=True).stdout


def expected_tree_size(files: dict[str, bytes]) -> int:
    """Cocov's glob: sizes of files with no hidden path component."""
    return sum(
        len(content)
        for path, content in files.items()
        if not any(part.startswith(".") for part in path.split("/"))
    )


def cocov_tar_size(parent: Path, sha: str, scratch: Path) -> int:
    """Size of the ``<sha>.tar`` Cocov writes and counts: ``tar -cvf <sha>.tar <sha>`` run in
    the tree's parent directory (written to ``scratch`` so the storage stays untouched)."""
    tar = scratch / f"cocov-{sha}.tar"
    _out(["tar", "-cvf", str(tar), sha], cwd=parent)
    return tar.stat().st_size


def leftovers(repo_path: Path) -> list[str]:
    return sorted(p.name for p in repo_path.iterdir()) if repo_path.exists() else []


def git_processes_under(root: Path) -> list[int]:
    """Pids of processes whose working directory lies under ``root``."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cwd = Path(os.readlink(entry / "cwd"))
            except OSError:
                continue
            if cwd.is_relative_to(root):
                found.append(int(entry.name))
    return found


def all_command_lines() -> list[bytes]:
    lines = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                lines.append((entry / "cmdline").read_bytes())
            except OSError:
                continue
    return lines


def secrets_of(token: str) -> list[bytes]:
    credentials = base64.b64encode(f"x-access-token:{token}".encode())
    return [token.encode(), credentials]


def s3_keys(s3: S3Client, bucket: str, prefix: str = "") -> dict[str, int]:
    paginator = s3.get_paginator("list_objects_v2")
    return {
        obj["Key"]: obj["Size"]
        for page in paginator.paginate(Bucket=bucket, Prefix=prefix)
        for obj in page.get("Contents", [])
    }


def download_artifacts(s3: S3Client, bucket: str, prefix: str, sha: str, into: Path) -> Path:
    into.mkdir(parents=True, exist_ok=True)
    for suffix in (".tar.zst", ".tar.zst.shasum"):
        s3.download_file(bucket, f"{prefix}/{sha}{suffix}", str(into / f"{sha}{suffix}"))
    return into


# Local storage: cloning ----------------------------------------------------------------------


async def test_clone_publishes_cocov_layout_that_passes_the_worker_check(
    storage: LocalStorage, clone: Callable[..., Any], sha: str, tmp_path: Path
) -> None:
    size = await clone(storage, sha)

    repo_path = storage.base / repo_dir(REPO)
    assert leftovers(repo_path) == sorted([sha, f"{sha}.tar.zst", f"{sha}.tar.zst.shasum"])
    assert storage.commit_path(REPO, sha) == str(repo_path / sha)
    assert read_tree(repo_path / sha) == FILES
    assert not (repo_path / sha / ".git").exists()
    shasum = (repo_path / f"{sha}.tar.zst.shasum").read_bytes()
    digest = hashlib.sha256((repo_path / f"{sha}.tar.zst").read_bytes()).hexdigest()
    assert shasum == f"sha256:{digest}".encode()
    assert worker_check(repo_path, sha, tmp_path) == FILES
    archive_size = (repo_path / f"{sha}.tar.zst").stat().st_size
    tar_size = cocov_tar_size(repo_path, sha, tmp_path)
    assert size == expected_tree_size(FILES) + tar_size + archive_size + SHASUM_SIZE
    assert await storage.commit_exists(REPO, sha)


async def test_clone_size_counts_what_cocov_counts_on_a_larger_tree(
    fake: FakeGitHub, storage: LocalStorage, clone: Callable[..., Any], tmp_path: Path
) -> None:
    # Many records of tar output, names over tar's 100-character field, hidden files.
    rng = random.Random(7)
    files = {f"lib/mod{n:03d}/" + "long-name-" * 12 + f"{n}.rb": b"x = 1\n" * n for n in range(150)}
    files |= {f"assets/blob{n}.bin": rng.randbytes(200_000) for n in range(3)}
    files |= {".hidden/config": b"secret: no\n" * 100, "lib/.keep": b""}
    fake.add_repo("large", files=files)
    sha = fake.head("large")

    size = await clone(storage, sha, repo_name="large")

    repo_path = storage.base / repo_dir("large")
    tar_size = cocov_tar_size(repo_path, sha, tmp_path)
    assert tar_size > 600_000
    archive_size = (repo_path / f"{sha}.tar.zst").stat().st_size
    assert size == expected_tree_size(files) + tar_size + archive_size + SHASUM_SIZE


async def test_archive_entries_are_prefixed_with_the_sha(
    storage: LocalStorage, clone: Callable[..., Any], sha: str
) -> None:
    await clone(storage, sha)
    archive = storage.base / repo_dir(REPO) / f"{sha}.tar.zst"
    listing = _out(["tar", "--zstd", "-tf", str(archive)], cwd=storage.base).split()
    assert listing
    assert all(name == f"{sha}/" or name.startswith(f"{sha}/") for name in listing)


async def test_two_builds_of_one_commit_are_byte_identical(
    clone: Callable[..., Any], sha: str, tmp_path: Path
) -> None:
    first, second = LocalStorage(tmp_path / "one"), LocalStorage(tmp_path / "two")
    await clone(first, sha)
    await clone(second, sha)
    name = f"{repo_dir(REPO)}/{sha}.tar.zst"
    assert (first.base / name).read_bytes() == (second.base / name).read_bytes()


async def test_relative_base_is_resolved_against_the_cwd_once(
    clone: Callable[..., Any], sha: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    storage = LocalStorage("git_storage")
    monkeypatch.chdir("/")
    await clone(storage, sha)
    assert (tmp_path / "git_storage" / repo_dir(REPO) / f"{sha}.tar.zst.shasum").is_file()


async def test_concurrent_clones_of_one_commit_publish_one_valid_pair(
    storage: LocalStorage, clone: Callable[..., Any], sha: str, tmp_path: Path
) -> None:
    sizes = await asyncio.gather(*(clone(storage, sha) for _ in range(4)))
    assert len(set(sizes)) == 1
    repo_path = storage.base / repo_dir(REPO)
    assert leftovers(repo_path) == sorted([sha, f"{sha}.tar.zst", f"{sha}.tar.zst.shasum"])
    assert worker_check(repo_path, sha, tmp_path) == FILES


async def test_a_published_commit_is_kept_when_cloned_again(
    storage: LocalStorage, clone: Callable[..., Any], sha: str
) -> None:
    first = await clone(storage, sha)
    shasum = storage.base / repo_dir(REPO) / f"{sha}.tar.zst.shasum"
    inode = shasum.stat().st_ino
    assert await clone(storage, sha) == first
    assert shasum.stat().st_ino == inode


def make_special_repo(tmp_path: Path) -> tuple[Path, str]:
    """A bare repository ``<root>/acme/special.git`` with symlinks and an executable.

    Served over ``file://``: the fake writes regular files only. Return (root, head sha).
    """
    root = tmp_path / "remote"
    work = tmp_path / "work"
    work.mkdir()
    (work / "tool.sh").write_text("#!/bin/sh\n")
    (work / "tool.sh").chmod(0o755)
    (work / "data.txt").write_bytes(b"d" * 100)
    os.symlink("data.txt", work / "inside-link")
    os.symlink("/etc/hostname", work / "escape-link")
    os.symlink("missing", work / "broken-link")
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path), "GIT_CONFIG_NOSYSTEM": "1"}
    ident = ["-c", "user.name=t", "-c", "user.email=t@t"]
    for argv in (["init", "-q"], ["add", "-A"], [*ident, "commit", "-q", "-m", "special"]):
        subprocess.run(["git", *argv], cwd=work, env=env, check=True)
    bare = root / ORG / "special.git"
    subprocess.run(["git", "clone", "-q", "--bare", str(work), str(bare)], env=env, check=True)
    return root, _out(["git", "rev-parse", "HEAD"], cwd=work).strip()


async def test_symlinks_and_modes_survive_and_escapes_are_not_counted(
    tmp_path: Path, token: str
) -> None:
    remote_root, sha = make_special_repo(tmp_path)
    storage = LocalStorage(tmp_path / "store")

    size = await storage.clone_commit(
        repo_name="special", sha=sha, token=token, org=ORG, github_url=f"file://{remote_root}"
    )

    repo_path = storage.base / repo_dir("special")
    tree = repo_path / sha
    assert os.readlink(tree / "escape-link") == "/etc/hostname"
    assert os.access(tree / "tool.sh", os.X_OK)
    archive = repo_path / f"{sha}.tar.zst"
    tree_bytes = len("#!/bin/sh\n") + 100 + 100  # tool.sh, data.txt, inside-link
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    tar_size = cocov_tar_size(repo_path, sha, scratch)
    assert size == tree_bytes + tar_size + archive.stat().st_size + SHASUM_SIZE
    worker_check(repo_path, sha, scratch)
    volume = scratch / "volume"
    assert os.readlink(volume / "inside-link") == "data.txt"
    assert os.access(volume / "tool.sh", os.X_OK)
    with pytest.raises(ValueError):
        await storage.read_file("special", sha, "escape-link")
    assert await storage.read_file("special", sha, "inside-link") == b"d" * 100
    assert await storage.read_file("special", sha, "broken-link") is None


# Local storage: failures -------------------------------------------------------------------


async def test_bad_token_fails_permanently_without_revealing_it(
    storage: LocalStorage, clone: Callable[..., Any], sha: str, fake: FakeGitHub
) -> None:
    bad = "ghs_" + "Z" * 36
    with pytest.raises(CloneError) as caught:
        await clone(storage, sha, token=bad)
    assert not caught.value.transient
    for secret in secrets_of(bad):
        assert secret.decode() not in str(caught.value)
    assert leftovers(storage.base / repo_dir(REPO)) == []
    assert FakeGitHub.git_auth_header(bad) in fake.authorization_headers


async def test_git_errors_are_scrubbed_of_the_token(tmp_path: Path, token: str) -> None:
    """Git echoes the remote URL in its error; a token placed there must not come back."""
    (tmp_path / "home").mkdir()
    remote = f"http://127.0.0.1:9/{token}/repo.git"
    with pytest.raises(CloneError) as caught:
        await fetch_commit(
            tmp_path / "tree", remote=remote, sha="a" * 40, token=token, home=tmp_path / "home"
        )
    assert "127.0.0.1:9/***/repo.git" in str(caught.value)
    assert token not in str(caught.value)


async def test_unknown_commit_fails_permanently_and_leaves_nothing(
    storage: LocalStorage, clone: Callable[..., Any]
) -> None:
    with pytest.raises(CloneError, match="not our ref") as caught:
        await clone(storage, "b" * 40)
    assert not caught.value.transient
    assert leftovers(storage.base / repo_dir(REPO)) == []


async def test_unknown_repository_fails_permanently(
    storage: LocalStorage, clone: Callable[..., Any], sha: str
) -> None:
    with pytest.raises(CloneError) as caught:
        await clone(storage, sha, repo_name="nope")
    assert not caught.value.transient


async def test_a_server_answering_404_fails_permanently(
    storage: LocalStorage, clone: Callable[..., Any], sha: str, fake: FakeGitHub
) -> None:
    """Git words a plain 404 as ``fatal: repository '<url>/' not found`` (no ``remote:`` line):
    the repository is gone, retrying for weeks cannot help."""
    fake.fail_next(None, rf"/{REPO}\.git/info/refs", 404)
    with pytest.raises(CloneError, match=r"repository '.*' not found") as caught:
        await clone(storage, sha)
    assert "remote: repository not found" not in str(caught.value).lower()
    assert not caught.value.transient


async def test_server_errors_are_transient(
    storage: LocalStorage, clone: Callable[..., Any], sha: str, fake: FakeGitHub
) -> None:
    fake.fail_next(None, rf"/{REPO}\.git/git-upload-pack", 502)
    with pytest.raises(CloneError) as caught:
        await clone(storage, sha)
    assert caught.value.transient
    assert leftovers(storage.base / repo_dir(REPO)) == []


async def test_unreachable_server_is_transient(
    storage: LocalStorage, clone: Callable[..., Any], sha: str
) -> None:
    with pytest.raises(CloneError) as caught:
        await clone(storage, sha, github_url="http://127.0.0.1:9")
    assert caught.value.transient


async def test_timeout_kills_git_and_leaves_nothing(
    tmp_path: Path, clone: Callable[..., Any], sha: str, fake: FakeGitHub
) -> None:
    storage = LocalStorage(tmp_path / "store", clone_timeout=0.5)
    fake.delay_next(rf"/{REPO}\.git/info/refs", HOLD_SECONDS)
    with pytest.raises(CloneError, match="timed out") as caught:
        await clone(storage, sha)
    assert caught.value.transient
    assert git_processes_under(storage.base) == []
    assert leftovers(storage.base / repo_dir(REPO)) == []


async def test_token_is_never_on_a_command_line_nor_in_git_config(
    storage: LocalStorage, clone: Callable[..., Any], sha: str, fake: FakeGitHub, token: str
) -> None:
    fake.delay_next(rf"/{REPO}\.git/info/refs", HOLD_SECONDS)
    task = asyncio.create_task(clone(storage, sha))
    repo_path = storage.base / repo_dir(REPO)

    def fetching() -> bool:
        return any(
            b"remote-http" in Path(f"/proc/{pid}/cmdline").read_bytes()
            for pid in git_processes_under(storage.base)
        )

    await until(fetching, WAIT_TIMEOUT)  # git fetch started
    for line in all_command_lines():
        for secret in secrets_of(token):
            assert secret not in line
    (work,) = repo_path.glob(f"{WORK_DIR_PREFIX}*")
    config = (work / sha / ".git" / "config").read_bytes()
    assert all(secret not in config for secret in secrets_of(token))
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert git_processes_under(storage.base) == []
    assert leftovers(repo_path) == []


async def test_token_travels_only_as_a_basic_auth_header(
    storage: LocalStorage, clone: Callable[..., Any], sha: str, fake: FakeGitHub, token: str
) -> None:
    fake.clear_log()
    await clone(storage, sha)
    git_requests = [r for r in fake.requests if f"/{REPO}.git/" in r.path]
    assert git_requests
    for request in git_requests:
        assert request.authorization == FakeGitHub.git_auth_header(token)
        assert token not in request.url


# Local storage: reading, destroying, renaming ----------------------------------------------


async def test_read_file(storage: LocalStorage, clone: Callable[..., Any], sha: str) -> None:
    await clone(storage, sha)
    assert await storage.read_file(REPO, sha, ".cocov.yaml") == FILES[".cocov.yaml"]
    assert (
        await storage.read_file(REPO, sha, "src//deep/./nested/data.bin")
        == (FILES["src/deep/nested/data.bin"])
    )
    assert await storage.read_file(REPO, sha, "missing.txt") is None
    assert await storage.read_file(REPO, sha, "src") is None
    assert await storage.read_file(REPO, "c" * 40, "README.md") is None
    for bad in ("../" + sha + ".tar.zst.shasum", "/etc/passwd", "src/../../x", "a\0b"):
        with pytest.raises(ValueError):
            await storage.read_file(REPO, sha, bad)


async def test_commit_exists_only_once_published(
    storage: LocalStorage, clone: Callable[..., Any], commits: tuple[str, str]
) -> None:
    first, second = commits
    await clone(storage, first)
    assert await storage.commit_exists(REPO, first)
    assert not await storage.commit_exists(REPO, second)
    assert not await storage.commit_exists("other", first)


async def test_destroy_repository_removes_everything_and_is_idempotent(
    storage: LocalStorage, clone: Callable[..., Any], commits: tuple[str, str]
) -> None:
    for sha in commits:
        await clone(storage, sha)
    await storage.destroy_repository(REPO)
    assert not (storage.base / repo_dir(REPO)).exists()
    await storage.destroy_repository(REPO)
    await storage.destroy_repository("never-cloned")


async def test_rename_moves_clones_to_the_new_name(
    storage: LocalStorage, clone: Callable[..., Any], sha: str, tmp_path: Path
) -> None:
    await clone(storage, sha)
    await storage.rename_repository(REPO, "web-renamed")
    assert not (storage.base / repo_dir(REPO)).exists()
    assert await storage.commit_exists("web-renamed", sha)
    assert await storage.read_file("web-renamed", sha, "README.md") == FILES["README.md"]
    assert worker_check(storage.base / repo_dir("web-renamed"), sha, tmp_path) == FILES
    await storage.rename_repository("never-cloned", "anything")


async def test_rename_merges_into_existing_clones_keeping_theirs(
    storage: LocalStorage, clone: Callable[..., Any], commits: tuple[str, str], tmp_path: Path
) -> None:
    first, second = commits
    await clone(storage, first)
    await storage.rename_repository(REPO, "renamed")
    await clone(storage, first)
    await clone(storage, second)
    old_path = storage.base / repo_dir(REPO)
    (old_path / first / "marker").write_text("old copy")

    await storage.rename_repository(REPO, "renamed")

    new_path = storage.base / repo_dir("renamed")
    assert not old_path.exists()
    assert leftovers(new_path) == sorted(
        name for sha in commits for name in (sha, f"{sha}.tar.zst", f"{sha}.tar.zst.shasum")
    )
    assert not (new_path / first / "marker").exists()
    assert worker_check(new_path, second, tmp_path)["NEW.md"] == SECOND_FILES["NEW.md"]


# S3 storage --------------------------------------------------------------------------------


async def test_s3_clone_uploads_cocov_keys_that_pass_the_worker_check(
    s3_storage: S3Storage,
    s3: S3Client,
    bucket: str,
    clone: Callable[..., Any],
    sha: str,
    tmp_path: Path,
) -> None:
    size = await clone(s3_storage, sha)

    prefix = repo_dir(REPO)
    keys = s3_keys(s3, bucket)
    expected = {f"{prefix}/{sha}/{path}" for path in FILES}
    expected |= {f"{prefix}/{sha}.tar.zst", f"{prefix}/{sha}.tar.zst.shasum"}
    assert set(keys) == expected
    assert s3_storage.commit_path(REPO, sha) == f"{prefix}/{sha}"
    artifacts = download_artifacts(s3, bucket, prefix, sha, tmp_path / "artifacts")
    assert worker_check(artifacts, sha, tmp_path) == FILES
    tar_size = (tmp_path / f"{sha}.tar").stat().st_size  # the stream worker_check decompressed
    archive_size = keys[f"{prefix}/{sha}.tar.zst"]
    assert size == expected_tree_size(FILES) + tar_size + archive_size + SHASUM_SIZE
    assert leftovers(tmp_path / "s3-work") == []


async def test_s3_read_file_and_commit_exists(
    s3_storage: S3Storage, clone: Callable[..., Any], commits: tuple[str, str]
) -> None:
    first, second = commits
    await clone(s3_storage, first)
    assert await s3_storage.commit_exists(REPO, first)
    assert not await s3_storage.commit_exists(REPO, second)
    assert await s3_storage.read_file(REPO, first, ".cocov.yaml") == FILES[".cocov.yaml"]
    assert await s3_storage.read_file(REPO, first, "./src//app.py") == FILES["src/app.py"]
    assert await s3_storage.read_file(REPO, first, "missing") is None
    for bad in ("../x", "/etc/passwd", "a/../../b"):
        with pytest.raises(ValueError):
            await s3_storage.read_file(REPO, first, bad)


async def test_s3_failed_clone_uploads_nothing(
    s3_storage: S3Storage, s3: S3Client, bucket: str, clone: Callable[..., Any], tmp_path: Path
) -> None:
    with pytest.raises(CloneError):
        await clone(s3_storage, "d" * 40)
    assert s3_keys(s3, bucket) == {}
    assert leftovers(tmp_path / "s3-work") == []


async def test_s3_failed_upload_deletes_the_attempts_keys(
    s3_storage: S3Storage, s3: S3Client, bucket: str, clone: Callable[..., Any], sha: str
) -> None:
    def refuse_shasum(params: dict[str, Any], **_: Any) -> None:
        if str(params.get("Key", "")).endswith(".shasum"):
            raise ConnectionError("injected upload failure")

    s3.meta.events.register("provide-client-params.s3.PutObject", refuse_shasum)
    try:
        with pytest.raises(ConnectionError):
            await clone(s3_storage, sha)
    finally:
        s3.meta.events.unregister("provide-client-params.s3.PutObject", refuse_shasum)
    assert s3_keys(s3, bucket) == {}


async def test_s3_concurrent_clones_publish_one_valid_pair(
    s3_storage: S3Storage,
    s3: S3Client,
    bucket: str,
    clone: Callable[..., Any],
    sha: str,
    tmp_path: Path,
) -> None:
    sizes = await asyncio.gather(clone(s3_storage, sha), clone(s3_storage, sha))
    assert sizes[0] == sizes[1]
    artifacts = download_artifacts(s3, bucket, repo_dir(REPO), sha, tmp_path / "artifacts")
    assert worker_check(artifacts, sha, tmp_path) == FILES


async def test_s3_destroy_deletes_every_key_across_pages(
    s3_storage: S3Storage, s3: S3Client, bucket: str, clone: Callable[..., Any], sha: str
) -> None:
    await clone(s3_storage, sha)
    prefix = repo_dir(REPO)
    extra = [f"{prefix}/{'e' * 40}/f{i}" for i in range(1205)]
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(lambda key: s3.put_object(Bucket=bucket, Key=key, Body=b"x"), extra))
    s3.put_object(Bucket=bucket, Key=f"{repo_dir('other')}/keep", Body=b"x")

    await s3_storage.destroy_repository(REPO)

    assert set(s3_keys(s3, bucket)) == {f"{repo_dir('other')}/keep"}
    await s3_storage.destroy_repository(REPO)


async def test_s3_rename_moves_keys_and_keeps_commits_published_under_the_new_name(
    s3_storage: S3Storage,
    s3: S3Client,
    bucket: str,
    clone: Callable[..., Any],
    commits: tuple[str, str],
    tmp_path: Path,
) -> None:
    first, second = commits
    await clone(s3_storage, first)
    await s3_storage.rename_repository(REPO, "renamed")
    await clone(s3_storage, first)
    await clone(s3_storage, second)
    old, new = repo_dir(REPO), repo_dir("renamed")
    s3.put_object(Bucket=bucket, Key=f"{old}/{first}/marker", Body=b"old copy")

    await s3_storage.rename_repository(REPO, "renamed")

    keys = s3_keys(s3, bucket)
    assert not [key for key in keys if key.startswith(old + "/")]
    assert f"{new}/{first}/marker" not in keys
    assert await s3_storage.read_file("renamed", second, "NEW.md") == SECOND_FILES["NEW.md"]
    artifacts = download_artifacts(s3, bucket, new, second, tmp_path / "artifacts")
    assert worker_check(artifacts, second, tmp_path)["NEW.md"] == SECOND_FILES["NEW.md"]


async def test_storage_from_settings_s3_honours_aws_endpoint_url(
    aws_env: str,
    bucket: str,
    monkeypatch: pytest.MonkeyPatch,
    clone: Callable[..., Any],
    sha: str,
) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", aws_env)
    settings = Settings(git_service_storage_mode="s3", git_service_s3_storage_bucket_name=bucket)
    storage = storage_from_settings(settings)
    assert storage.mode == "s3"
    await clone(storage, sha)
    assert await storage.commit_exists(REPO, sha)


@pytest.fixture(autouse=True)
def _no_stray_children() -> Iterator[None]:
    """Every subprocess a test started has been reaped when it ends."""
    yield
    assert not [p for p in Path("/proc").iterdir() if p.name.isdigit() and _is_zombie_child(p)]


def _is_zombie_child(proc: Path) -> bool:
    try:
        stat = (proc / "stat").read_text()
    except OSError:
        return False
    fields = stat.rsplit(")", 1)[1].split()
    return fields[0] == "Z" and int(fields[1]) == os.getpid()
