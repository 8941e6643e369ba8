"""Process-level OS calls the engine process needs (the only ctypes outside llama.cpp's libraries)."""

from __future__ import annotations

import contextlib
import ctypes
import signal
import sys

__all__ = ["kill_with_parent"]

_PR_SET_PDEATHSIG = 1


def kill_with_parent() -> bool:
    """Ask the kernel to SIGKILL this process when its parent thread exits (Linux ``prctl``
    ``PR_SET_PDEATHSIG``). False where that is not available."""
    if not sys.platform.startswith("linux"):
        return False
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        return int(libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)) == 0
    return False
