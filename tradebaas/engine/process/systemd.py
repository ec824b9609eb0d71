"""systemd integration: the unit file for servers that must come back after a reboot, and sd_notify.

The unit runs the engine in the foreground (`Type=notify`): the engine says READY=1 once its RPC answers and
the first reconciliation is done, and pings WATCHDOG=1 from its event loop, so systemd restarts an engine whose
loop is wedged, not only one that died. Hardening follows the seed's unit: no new privileges, a read-only
system, a private /tmp, and write access to TRADEBAAS_HOME only.
"""

from __future__ import annotations

import os
import shlex
import socket
import subprocess
import sys
from pathlib import Path

from tradebaas.errors import UserError

UNIT_NAME = "tradebaas-engine.service"
WATCHDOG_SEC = 30


def render_unit(*, python: str, home: Path, exchange: str, user_mode: bool, user: str | None = None) -> str:
    """The unit file text. Pure, so tests can check it without systemd."""
    exec_start = " ".join(
        shlex.quote(part) for part in (python, "-m", "tradebaas.cli", "engine", "start", "--foreground", "--exchange", exchange)
    )
    lines = [
        "[Unit]",
        "Description=tradebaas trading engine (Deribit perpetuals)",
        "Documentation=https://github.com/tradebaas/tradebaas",
        "After=network-online.target",
        "Wants=network-online.target",
        "StartLimitIntervalSec=0",
        "",
        "[Service]",
        "Type=notify",
        "NotifyAccess=main",
        f"Environment=TRADEBAAS_HOME={home}",
        "Environment=PYTHONUNBUFFERED=1",
        f"ExecStart={exec_start}",
        "Restart=always",
        "RestartSec=2",
        f"WatchdogSec={WATCHDOG_SEC}",
        "TimeoutStopSec=30",
        "KillSignal=SIGTERM",
        "NoNewPrivileges=true",
        "PrivateTmp=true",
        "ProtectSystem=strict",
        f"ReadWritePaths={home}",
        "ProtectKernelTunables=true",
        "ProtectKernelModules=true",
        "ProtectControlGroups=true",
        "RestrictSUIDSGID=true",
        "LockPersonality=true",
        "RestrictRealtime=true",
        "UMask=0077",
    ]
    if not user_mode:
        lines.insert(lines.index("Type=notify"), f"User={user or os.environ.get('SUDO_USER') or os.environ.get('USER', 'root')}")
        lines.append("ProtectHome=read-only" if not str(home).startswith("/home") else "ProtectHome=false")
    lines += ["", "[Install]", f"WantedBy={'default.target' if user_mode else 'multi-user.target'}", ""]
    return "\n".join(lines)


def unit_path(user_mode: bool) -> Path:
    if user_mode:
        config = Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config")
        return config / "systemd" / "user" / UNIT_NAME
    return Path("/etc/systemd/system") / UNIT_NAME


def install(*, home: Path, exchange: str, user_mode: bool, enable: bool = True, path: Path | None = None) -> Path:
    """Write the unit and, when systemd is there, enable and start it. Returns the unit's path."""
    target = path or unit_path(user_mode)
    text = render_unit(python=sys.executable, home=home, exchange=exchange, user_mode=user_mode)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
    except OSError as exc:
        raise UserError(f"cannot write {target}: {exc.strerror} (try --user, or run as root)") from None
    if enable and path is None:
        systemctl = ["systemctl", "--user"] if user_mode else ["systemctl"]
        for args in (["daemon-reload"], ["enable", "--now", UNIT_NAME]):
            try:
                done = subprocess.run(systemctl + args, capture_output=True, text=True, timeout=30)
            except (OSError, subprocess.TimeoutExpired) as exc:
                raise UserError(f"wrote {target}, but systemctl is not usable here: {exc}") from None
            if done.returncode != 0:
                raise UserError(f"wrote {target}, but `{' '.join(systemctl + args)}` failed: {done.stderr.strip()}")
    return target


def sd_notify(state: str) -> bool:
    """Send one sd_notify datagram (READY=1, WATCHDOG=1, STOPPING=1, STATUS=...). False when not under systemd."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return False
    if address.startswith("@"):
        address = "\0" + address[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.connect(address)
            sock.sendall(state.encode())
    except OSError:
        return False
    return True


def watchdog_interval_s() -> float | None:
    """Half of systemd's watchdog period (WATCHDOG_USEC), or None when no watchdog was asked for."""
    usec = os.environ.get("WATCHDOG_USEC")
    pid = os.environ.get("WATCHDOG_PID")
    if not usec or (pid and pid != str(os.getpid())):
        return None
    return int(usec) / 2_000_000
