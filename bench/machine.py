"""What every benchmark prints about the machine it ran on."""

from __future__ import annotations

import os
import platform
import sys
from pathlib import Path
from typing import Any


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
