"""Pure rules of gitstore: layout, path checks, credential scrubbing, failure classes, sizes."""

from __future__ import annotations

import asyncio
import base64
import os
from pathlib import Path

import pytest

from cocov_jobs.config import Settings
from cocov_jobs.gitstore import LocalStorage, repo_dir, scrub, storage_from_settings
from cocov_jobs.gitstore.artifacts import clone_size, iter_tree_files, tree_size
from cocov_jobs.gitstore.clone import (
    auth_header,
    base_env,
    git_auth_env,
    is_permanent_failure,
    remote_url,
)
from cocov_jobs.gitstore.layout import archive_name, check_sha, relative_parts, shasum_name
from cocov_jobs.gitstore.process import RELAY_CHUNK_SIZE, run_pipeline

SHA = "a" * 40
TOKEN = "ghs_SecretInstallationToken123"


def test_repo_dir_is_sha1_of_the_name_as_in_cocov_specs() -> None:
    assert repo_dir("foo") == "0beec7b5ea3f0fdbc95d0dd47f3c5bc275da8a33"


def test_artifact_names() -> None:
    assert archive_name(SHA) == SHA + ".tar.zst"
    assert shasum_name(SHA) == SHA + ".tar.zst.shasum"


@pytest.mark.parametrize("sha", ["a" * 40, "0123456789abcdef" * 4])
def test_check_sha_accepts_full_ids(sha: str) -> None:
    assert check_sha(sha) == sha


@pytest.mark.parametrize("sha", ["", "a" * 39, "A" * 40, "../" + "a" * 37, "a" * 41, "g" * 40])
def test_check_sha_rejects_anything_else(sha: str) -> None:
    with pytest.raises(ValueError):
        check_sha(sha)


@pytest.mark.parametrize(
    ("path", "parts"),
    [
        ("a.txt", ("a.txt",)),
        ("src//x/./y.py", ("src", "x", "y.py")),
        (".cocov.yaml", (".cocov.yaml",)),
    ],
)
def test_relative_parts_normalises(path: str, parts: tuple[str, ...]) -> None:
    assert relative_parts(path) == parts


@pytest.mark.parametrize("path", ["/etc/passwd", "../x", "a/../../x", "a/..", "a\0b", "", "./"])
def test_relative_parts_rejects_escapes(path: str) -> None:
    with pytest.raises(ValueError):
        relative_parts(path)


def test_scrub_removes_token_credentials_header_and_url_userinfo() -> None:
    credentials = base64.b64encode(f"x-access-token:{TOKEN}".encode()).decode()
    text = (
        f"token {TOKEN} in text\n"
        f"> Authorization: Basic {credentials}\n"
        f"fatal: unable to access 'https://x-access-token:{TOKEN}@github.com/o/r.git/'\n"
        f"raw {credentials}\n"
    )
    scrubbed = scrub(text, [TOKEN, credentials])
    assert TOKEN not in scrubbed
    assert credentials not in scrubbed
    assert "Authorization: ***" in scrubbed
    assert "https://***@github.com/o/r.git/" in scrubbed


def test_scrub_redacts_header_and_userinfo_without_knowing_the_secret() -> None:
    scrubbed = scrub("authorization: token abc\nsee http://user:pw@host/x")
    assert scrubbed == "authorization: ***\nsee http://***@host/x"


def test_scrub_leaves_plain_text_and_ignores_empty_secrets() -> None:
    text = "fatal: could not resolve host github.invalid"
    assert scrub(text, ["", "absent"]) == text


def test_remote_url_has_no_credentials_and_encodes_names() -> None:
    assert remote_url("https://github.com/", "acme", "web app") == (
        "https://github.com/acme/web%20app.git"
    )


def test_git_env_is_minimal_and_carries_the_token_as_a_header(tmp_path: Path) -> None:
    env = git_auth_env(tmp_path, TOKEN)
    assert env == {
        **base_env(tmp_path),
        "GIT_CONFIG_COUNT": "1",
        "GIT_CONFIG_KEY_0": "http.extraHeader",
        "GIT_CONFIG_VALUE_0": auth_header(TOKEN),
    }
    assert set(base_env(tmp_path)) == {
        "PATH",
        "HOME",
        "GIT_TERMINAL_PROMPT",
        "GIT_CONFIG_NOSYSTEM",
        "LC_ALL",
    }
    credentials = auth_header(TOKEN).removeprefix("Authorization: Basic ")
    assert base64.b64decode(credentials).decode() == f"x-access-token:{TOKEN}"


@pytest.mark.parametrize(
    ("stderr", "permanent"),
    [
        ("fatal: unable to access 'u': The requested URL returned error: 401", True),
        ("fatal: unable to access 'u': The requested URL returned error: 403", True),
        ("remote: Repository not found.\nfatal: repository 'u' not found", True),
        ("fatal: repository 'http://h/acme/web.git/' not found", True),
        ("fatal: could not read Username for 'https://h': terminal prompts disabled", True),
        ("fatal: remote error: upload-pack: not our ref " + SHA, True),
        ("fatal: couldn't find remote ref " + SHA, True),
        ("fatal: unable to access 'u': The requested URL returned error: 502", False),
        ("fatal: unable to access 'u': Could not resolve host: github.invalid", False),
        ("fatal: unable to access 'u': Failed to connect to 127.0.0.1 port 1", False),
        ("error: RPC failed; curl 18 transfer closed\nfatal: early EOF", False),
    ],
)
def test_failure_classes(stderr: str, permanent: bool) -> None:
    assert is_permanent_failure(stderr) is permanent


def _write(path: Path, size: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x" * size)


def test_tree_size_skips_hidden_entries_and_counts_symlinks_inside_the_tree(
    tmp_path: Path,
) -> None:
    tree = tmp_path / "tree"
    _write(tree / "a.txt", 100)
    _write(tree / "sub" / "b.txt", 20)
    _write(tree / ".hidden", 1000)
    _write(tree / ".dir" / "c.txt", 1000)
    _write(tmp_path / "outside.txt", 5000)
    os.symlink("a.txt", tree / "link-to-a")
    os.symlink("sub", tree / "link-to-dir")
    os.symlink("missing", tree / "broken")
    os.symlink(tmp_path / "outside.txt", tree / "escape")
    assert tree_size(tree) == 100 + 20 + 100


def test_iter_tree_files_includes_hidden_files_when_asked(tmp_path: Path) -> None:
    _write(tmp_path / ".cocov.yaml", 3)
    _write(tmp_path / "d" / ".keep", 0)
    names = sorted(file.relative for file in iter_tree_files(tmp_path, skip_hidden=False))
    assert names == [".cocov.yaml", "d/.keep"]


def test_clone_size_is_tree_plus_tar_plus_archive_plus_shasum(tmp_path: Path) -> None:
    # The figures of Cocov's own spec (git_spec.rb, "calculates directory size"): 310.
    _write(tmp_path / "a.tar.zst", 50)
    _write(tmp_path / "a.shasum", 32)
    assert clone_size(128, 100, tmp_path / "a.tar.zst", tmp_path / "a.shasum") == 310


async def test_pipeline_relays_and_counts_every_byte(tmp_path: Path) -> None:
    size = 3 * RELAY_CHUNK_SIZE + 12345
    piped = await run_pipeline(
        ("head", "-c", str(size), "/dev/urandom"),
        ("sh", "-c", "cat > out"),
        cwd=tmp_path,
        env={"PATH": os.environ["PATH"]},
    )
    assert (piped.producer.returncode, piped.consumer.returncode) == (0, 0)
    assert piped.relayed == size == (tmp_path / "out").stat().st_size


async def test_pipeline_whose_consumer_dies_early_reports_both_statuses(tmp_path: Path) -> None:
    # The producer's output goes on being read, so it finishes instead of blocking.
    size = 4 * RELAY_CHUNK_SIZE
    piped = await run_pipeline(
        ("head", "-c", str(size), "/dev/zero"),
        ("sh", "-c", "echo gone >&2; exit 3"),
        cwd=tmp_path,
        env={"PATH": os.environ["PATH"]},
    )
    assert (piped.producer.returncode, piped.relayed) == (0, size)
    assert (piped.consumer.returncode, piped.consumer.stderr) == (3, b"gone\n")


def _processes_running(marker: bytes) -> list[Path]:
    found = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and marker in (entry / "cmdline").read_bytes():
                found.append(entry)
        except OSError:
            continue
    return found


async def test_cancelled_pipeline_kills_both_processes_and_closes_its_pipes(
    tmp_path: Path,
) -> None:
    marker = f"61.{os.getpid()}"
    open_fds = len(os.listdir("/proc/self/fd"))
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.5):  # the cancellation under test, not a wait
            await run_pipeline(
                ("sh", "-c", f"head -c 100000 /dev/zero; exec sleep {marker}"),
                ("sh", "-c", f"cat >/dev/null; exec sleep {marker}"),
                cwd=tmp_path,
                env={"PATH": os.environ["PATH"]},
            )
    assert _processes_running(marker.encode()) == []
    assert len(os.listdir("/proc/self/fd")) == open_fds


def test_storage_from_settings_local_resolves_a_relative_base_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    storage = storage_from_settings(Settings(git_service_local_storage_path=Path("store")))
    assert isinstance(storage, LocalStorage)
    assert storage.mode == "local"
    monkeypatch.chdir("/")
    assert storage.commit_path("foo", SHA) == f"{tmp_path}/store/{repo_dir('foo')}/{SHA}"
