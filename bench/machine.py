"""What every benchmark prints about the machine it ran on."""

from __future__ import annotations

import os
import platform
import sys
from pathlib import Path
from typing import Any

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def machine(**extra: Any) -> dict[str, Any]:
    """CPUs usable (what ``nproc`` prints), CPU model, Python, the 1-minute load average at
    the start (other work on the machine skews the figures), plus ``extra``."""
    model = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor() or "unknown",
    )
    return {
        "nproc": len(os.sched_getaffinity(0)),
        "cpu_model": model,
        "python": sys.version.split()[0],
        "load_average_1m_at_start": os.getloadavg()[0],
        **extra,
    }


def tree_cpu(roots: list[int]) -> float:
    """CPU seconds (user + system, reaped children included) of ``roots`` and every process
    descending from them, read from ``/proc``."""
    parents: dict[int, int] = {}
    ticks: dict[int, int] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            text = Path(entry.path, "stat").read_text()
        except OSError:  # exited meanwhile
            continue
        fields = text[text.rindex(")") + 2 :].split()
        pid = int(entry.name)
        parents[pid] = int(fields[1])
        ticks[pid] = sum(int(value) for value in fields[11:15])  # utime stime cutime cstime
    members = set(roots) & ticks.keys()
    grew = True
    while grew:
        found = {pid for pid, parent in parents.items() if parent in members} - members
        members |= found
        grew = bool(found)
    return sum(ticks[pid] for pid in members) / CLOCK_TICKS
