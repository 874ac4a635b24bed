"""``cocov-jobs demo --no-serve`` as a new user runs it: own embedded stores, every step done."""

from __future__ import annotations

import subprocess
from pathlib import Path

from cocov_jobs.cli import demo, demo_sample
from cocov_jobs.testing.processes import CLI, cli_env

#: Seconds the whole demo may take (embedded stores included).
DEMO_TIMEOUT = 60
#: Step titles, in order, as the progress display shows them.
STEPS = (
    "Start",
    "Org sync",
    "Add repository",
    "Initialize",
    "Process the commit",
    "Upload coverage",
    "Coverage processed",
    "Permissions",
    "Commit author linked",
)


def run_demo(data_dir: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CLI, "demo", "--no-serve", "--data-dir", str(data_dir)],
        env=cli_env(COCOV_LOG_FORMAT="json"),
        capture_output=True,
        text=True,
        timeout=DEMO_TIMEOUT,
        check=False,
    )


def step_lines(output: str) -> list[str]:
    return [line.strip() for line in output.splitlines() if line.strip()[:1] in ("✓", "✗", "-")]


def test_demo_completes_every_step_and_reruns_on_the_same_data(tmp_path: Path) -> None:
    data_dir = tmp_path / "demo"
    first = run_demo(data_dir)
    assert first.returncode == 0, first.stdout + first.stderr
    lines = step_lines(first.stdout)
    assert [line[1:].strip().split("  ")[0] for line in lines] == list(STEPS)
    assert all(line.startswith("✓") for line in lines), first.stdout
    assert '"85.71% covered"' in first.stdout
    assert f"belongs to {demo_sample.AUTHOR_LOGIN}" in first.stdout
    assert "Jobs run:" in first.stdout
    assert (data_dir / demo.LOG_FILE).stat().st_size > 0

    again = run_demo(data_dir)
    assert again.returncode == 0, again.stdout + again.stderr
    # The result column wraps long lines (a long data directory): compare words, not lines.
    assert "the previous demo run was removed" in " ".join(again.stdout.split())
    assert all(line.startswith("✓") for line in step_lines(again.stdout)), again.stdout
