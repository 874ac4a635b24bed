"""Child processes that die with their parent, however it ends (Linux ``PR_SET_PDEATHSIG``).

A worker child of the supervisor, or a report parser of a web process, must not outlive its
parent killed with SIGKILL (nothing then runs its shutdown): it would hold a port, a database
slot or memory for nothing. Elsewhere than on Linux this does nothing.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys

#: ``prctl`` option: the signal a process gets when its parent dies.
_PR_SET_PDEATHSIG = 1


def die_with_parent(parent: int | None = None) -> None:
    """Be killed (SIGKILL) when this process's parent dies. ``parent``: the pid the parent had
    when it started this process; if it is already gone, exit at once (it died before the
    request was made, so no signal would come)."""
    if not sys.platform.startswith("linux"):
        return
    ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    if parent is not None and os.getppid() != parent:
        os._exit(1)
