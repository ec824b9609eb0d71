"""Helpers to run the real simulator process in tests (and a smoke test of the helper itself).

The simulator is started exactly as users start it (``tradebaas sim`` when the console script has the command,
else ``python -m tradebaas.exchange.sim.cli``) with its own TRADEBAAS_HOME; its URLs are read from the first two
lines of stdout. Other test modules import ``SimProcess`` from here.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import urllib.request
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.integration

START_TIMEOUT_S = 30.0


class SimProcess:
    """A running ``tradebaas sim`` with its home; ``stop()`` sends SIGTERM and checks exit 0."""

    def __init__(self, home: Path, *args: str) -> None:
        self.home = home
        env = dict(os.environ, TRADEBAAS_HOME=str(home), PYTHONUNBUFFERED="1")
        cmd = [sys.executable, "-m", "tradebaas.exchange.sim.cli", "--port", "0", *args]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, text=True)
        lines: list[str] = []

        def read() -> None:
            assert self.proc.stdout is not None
            for _ in range(2):
                lines.append(self.proc.stdout.readline().strip())

        t = threading.Thread(target=read, daemon=True)
        t.start()
        t.join(START_TIMEOUT_S)
        if len(lines) < 2 or not lines[0].startswith("ws://"):
            self.proc.kill()
            err = self.proc.stderr.read() if self.proc.stderr else ""
            raise RuntimeError(f"simulator did not start: {lines!r} {err}")
        self.ws_url, self.http_url = lines[0], lines[1]
        self.port = int(self.http_url.rsplit(":", 1)[1])
        creds = json.loads((home / "sim" / "credentials.json").read_text())
        self.client_id, self.client_secret = creds["client_id"], creds["client_secret"]

    def get(self, method: str, **params: Any) -> dict[str, Any]:
        """A public/admin call over HTTP GET; returns the whole envelope (errors too)."""
        q = "&".join(f"{k}={v}" for k, v in params.items())
        url = f"{self.http_url}/api/v2/{method}" + (f"?{q}" if q else "")
        return _http(urllib.request.Request(url))

    def post(self, method: str, params: dict[str, Any], headers: dict[str, str] | None = None) -> dict[str, Any]:
        body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": method, "params": params}).encode()
        req = urllib.request.Request(f"{self.http_url}/api/v2/{method}", data=body, method="POST",
                                     headers={"Content-Type": "application/json", **(headers or {})})
        return _http(req)

    def stop(self, timeout: float = 20.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


def _http(req: urllib.request.Request) -> dict[str, Any]:
    import urllib.error

    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            out = json.loads(resp.read())
            out["_status"] = resp.status
            return out
    except urllib.error.HTTPError as exc:
        out = json.loads(exc.read())
        out["_status"] = exc.code
        return out


def test_simulator_prints_its_urls_and_writes_private_files(tmp_path: Path) -> None:
    sim = SimProcess(tmp_path)
    try:
        assert sim.ws_url == f"ws://127.0.0.1:{sim.port}/ws/api/v2"
        info = json.loads((tmp_path / "sim" / "sim.json").read_text())
        assert info["port"] == sim.port and info["ws_url"] == sim.ws_url and info["pid"] == sim.proc.pid
        for name in ("sim.json", "credentials.json", "accounts.json"):
            assert ((tmp_path / "sim" / name).stat().st_mode & 0o777) == 0o600
        assert sim.get("public/test")["result"] == {"version": "1.2.26"}
    finally:
        assert sim.stop() == 0
    assert not (tmp_path / "sim" / "sim.json").exists()
    assert (tmp_path / "sim" / "state.json").exists()
