"""Ending the child processes we start in their own process group (vetting, strategies, report runs)."""

from __future__ import annotations

import contextlib
import os
import signal


def kill_group(pid: int) -> None:
    """SIGKILL the process group led by ``pid`` (the child and whatever it started); gone already is fine."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)
