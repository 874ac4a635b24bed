"""Benchmark: ``LocalStorage.clone_commit`` against a plain ``git clone --depth 1``.

The GitHub fake serves a repository of ``--files`` files and ``--commits`` commits over git
smart HTTP. Each run clones its head commit into a fresh directory, once with our
``clone_commit`` (fetch, checkout, tar | zstd, sha256, size, publish) and once with
``git clone --depth 1 --no-tags`` (same server, same token header, same minimal
environment). One untimed warm-up of each, then ``--runs`` timed runs of each, alternating;
the medians and their ratio (ours / baseline, target at most :data:`TARGET_RATIO`) are
printed and written to ``bench/results/clone.json`` with the machine's description.

Both write about ``--files`` files, so on a filesystem where creating a file is slow the
checkout dominates both; ``--scratch /dev/shm`` (tmpfs) exposes the CPU cost of the
archive, digest and size steps instead.

Usage: ``python bench/clone.py [--files 10000] [--commits 2000] [--runs 3] [--scratch DIR]``
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from machine import machine as common_machine

from cocov_jobs.gitstore import LocalStorage
from cocov_jobs.gitstore.clone import git_auth_env
from cocov_jobs.testing.github_fake import FakeGitHub

#: Largest acceptable ratio of our median clone time to the baseline's.
TARGET_RATIO = 1.3
#: Where the figures are written.
RESULTS_PATH = Path(__file__).parent / "results" / "clone.json"
#: What is timed: our ``clone_commit`` and the ``git clone --depth 1`` baseline.
CONTENDERS = ("clone_commit", "git_clone")
ORG = "bench"
REPO = "big"


def machine() -> dict[str, object]:
    """:func:`bench.machine.machine` plus the versions of the tools a clone runs."""
    return common_machine(
        git=_version("git", "--version"),
        zstd=_version("zstd", "--version"),
        tar=_version("tar", "--version"),
    )


def _filesystem(path: Path) -> str:
    """Type of the filesystem holding ``path`` (from ``df --output=fstype``)."""
    out = subprocess.run(["df", "--output=fstype", str(path)], capture_output=True, text=True)
    return out.stdout.split()[-1] if out.returncode == 0 else "unknown"


def _version(*argv: str) -> str:
    return subprocess.run(argv, capture_output=True, text=True, check=True).stdout.splitlines()[0]


async def time_ours(fake: FakeGitHub, sha: str, token: str, root: Path) -> float:
    storage = LocalStorage(root)
    started = time.perf_counter()
    await storage.clone_commit(
        repo_name=REPO, sha=sha, token=token, org=ORG, github_url=fake.git_url
    )
    return time.perf_counter() - started


async def time_baseline(fake: FakeGitHub, token: str, root: Path) -> float:
    home = root / "home"
    home.mkdir(parents=True)
    argv = ("git", "clone", "-q", "--depth", "1", "--no-tags", fake.clone_url(REPO), "checkout")
    started = time.perf_counter()
    proc = await asyncio.create_subprocess_exec(*argv, cwd=root, env=git_auth_env(home, token))
    if await proc.wait() != 0:
        raise RuntimeError("baseline git clone failed")
    return time.perf_counter() - started


async def measure(fake: FakeGitHub, sha: str, runs: int, scratch: Path) -> dict[str, list[float]]:
    """Warm up each contender once, then time ``runs`` runs of each.

    The contenders alternate which goes first, so neither always pays for the other's
    dirty pages being written back.
    """
    times: dict[str, list[float]] = {name: [] for name in CONTENDERS}
    for run in range(runs + 1):
        token = fake.issue_installation_token()
        target = scratch / f"run{run}"
        for name in CONTENDERS if run % 2 else reversed(CONTENDERS):
            if name == "git_clone":
                seconds = await time_baseline(fake, token, target / name)
            else:
                seconds = await time_ours(fake, sha, token, target / name)
            if run:
                times[name].append(seconds)
        shutil.rmtree(target)
    return times


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=10_000)
    parser.add_argument("--commits", type=int, default=2_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--scratch", type=Path, default=None, help="where clones are written")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-clone-", dir=args.scratch) as tmp:
        scratch = Path(tmp)
        with FakeGitHub(org=ORG, tmp_dir=scratch / "fake") as fake:
            started = time.perf_counter()
            fake.add_big_repo(REPO, files=args.files, commits=args.commits)
            build_seconds = time.perf_counter() - started
            times = await measure(fake, fake.head(REPO), args.runs, scratch)
    medians = {name: statistics.median(values) for name, values in times.items()}
    ratio = medians["clone_commit"] / medians["git_clone"]
    result = {
        "machine": machine(),
        "repository": {"files": args.files, "commits": args.commits},
        "scratch_filesystem": _filesystem(Path(args.scratch or tempfile.gettempdir())),
        "repository_build_seconds": round(build_seconds, 3),
        "runs": {name: [round(v, 4) for v in values] for name, values in times.items()},
        "median_seconds": {name: round(v, 4) for name, v in medians.items()},
        "ratio": round(ratio, 3),
        "target_ratio": TARGET_RATIO,
        "meets_target": ratio <= TARGET_RATIO,
    }
    RESULTS_PATH.parent.mkdir(parents=True, exist_ok=True)
    RESULTS_PATH.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    asyncio.run(main())
