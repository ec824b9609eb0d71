"""Start and stop the local simulator process of a home, beside the engine's own daemon code (``daemon.py``).

``tradebaas up`` starts a simulator detached (``--clock present``: the replay at wall-clock time; its own
session, output in ``logs/sim.log``, pid in ``sim/sim.pid``) and waits until it announces its URLs in
``sim/sim.json``, which the simulator writes once it listens; ``tradebaas down`` stops it with SIGTERM (it saves its
state then), SIGKILL after a timeout. A simulator already running for the home is reused, and a new one comes back
on its previous port when that port is free: an engine started with ``--exchange sim`` then reconnects where it was.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from tradebaas.connection import pid_alive
from tradebaas.errors import UserError
from tradebaas.home import ENV_VAR, Home

START_TIMEOUT_S = 60.0


def free_port(preferred: int | None = None) -> int:
    """``preferred`` when it is free on 127.0.0.1, else any free port."""
    for candidate in ([preferred] if preferred else []) + [0]:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind(("127.0.0.1", candidate))
            except OSError:
                continue
            return int(s.getsockname()[1])
    raise UserError("no free TCP port on 127.0.0.1")


def running(home: Home) -> dict[str, Any] | None:
    """``sim/sim.json`` of a live simulator of ``home`` (written by the simulator once it listens), else None."""
    try:
        info = json.loads((home.sim_dir / "sim.json").read_text())
    except (OSError, ValueError):
        return None
    return info if isinstance(info, dict) and info.get("ws_url") and pid_alive(int(info.get("pid", 0))) else None


def start_detached(home: Home) -> str:
    """Spawn ``tradebaas sim`` detached for ``home`` (or reuse the running one); returns its ws:// URL."""
    home.ensure()
    info = running(home)
    if info is not None:
        return str(info["ws_url"])
    try:
        previous = int(json.loads((home.sim_dir / "sim.json").read_text()).get("port") or 0)
    except (OSError, ValueError, TypeError):
        previous = 0
    port = free_port(previous) if previous else 0
    # --clock present: the replay shown at wall-clock time, so notebooks, ccxt and anything else that asks for
    # "the last N minutes" by its own clock sees a market (docs/simulator.md)
    cmd = [sys.executable, "-m", "tradebaas.cli", "sim", "--host", "127.0.0.1", "--port", str(port), "--clock", "present"]
    env = dict(os.environ)
    env[ENV_VAR] = str(home.root)
    with open(home.sim_log, "ab") as out:
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=out, env=env, cwd=home.root,
                                start_new_session=True, close_fds=True)
    home.sim_pid_file.write_text(f"{proc.pid}\n")
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            home.sim_pid_file.unlink(missing_ok=True)
            raise UserError(f"the simulator exited at start (code {proc.returncode}); see {home.sim_log}")
        info = running(home)
        if info is not None and int(info.get("pid", 0)) == proc.pid:
            return str(info["ws_url"])
        time.sleep(0.05)
    raise UserError(f"the simulator did not start listening within {START_TIMEOUT_S:.0f}s; see {home.sim_log}")


def stop(home: Home, timeout_s: float = 15.0) -> str | None:
    """Stop the simulator of ``home`` (SIGTERM: it saves its state; SIGKILL after ``timeout_s``); None if none ran."""
    info = running(home)
    pid = _read_pid(home.sim_pid_file) or (int(info["pid"]) if info else None)
    if not pid:
        return None
    if pid_alive(pid):
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        while pid_alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        if pid_alive(pid):
            os.kill(pid, signal.SIGKILL)
    home.sim_pid_file.unlink(missing_ok=True)
    return f"simulator stopped (pid {pid})"


def _read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None
