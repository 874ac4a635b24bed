"""Issue 7, scenario 7: ``bench/faults/secret_leaks.py`` as a test.

The script runs the whole pipeline (web and worker processes, JSON logs at DEBUG) with known
tokens and keys, then searches the logs, the recorded errors and job arguments, the command
lines of the git processes sampled during a slow clone, and the stored clones; it exits 0 only
when no secret was found anywhere and every place searched held something to search. Its JSON
result goes to the test's temporary directory, not ``bench/results/``.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "bench" / "faults" / "secret_leaks.py"
#: Seconds the script may take (it takes about 20).
TIMEOUT = 120


@pytest.mark.slow
def test_no_secret_in_logs_errors_job_arguments_command_lines_or_clones(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--results-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
        cwd=SCRIPT.parents[2],
    )
    assert result.returncode == 0, result.stderr[-5000:] + result.stdout[-2000:]
    summary = result.stdout.strip().splitlines()[-1]
    assert summary.startswith("SCENARIO secrets ")
    assert " failures=0 " in summary
    assert json.loads((tmp_path / "secrets.json").read_text())["failures"] == 0
