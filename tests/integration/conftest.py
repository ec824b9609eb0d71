"""Integration fixtures: real engine processes, each in its own TRADEBAAS_HOME, torn down after the test.

``engine_proc`` is a factory::

    def test_x(engine_proc, tb_home):
        eng = engine_proc()                      # engine for tb_home (--exchange sim), `--foreground` child
        eng2 = engine_proc(make_home("b"), exchange="ws://127.0.0.1:1234/ws/api/v2")
        with eng.client() as c: c.ping()
        eng.kill()                               # SIGKILL; eng.stop() = SIGTERM and wait

It returns once ``engine.json`` names the new pid and the RPC answers ``engine.ping``. Every engine still
running at the end of the test is stopped (SIGTERM, then SIGKILL after 10 s).
"""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from tests.conftest import PYTHON, cli_env, wait_for
from tradebaas.connection import ConnectionInfo, read_connection_file
from tradebaas.home import Home, get_home
from tradebaas.rpc.client import EngineClient, ping_once


def pytest_collection_modifyitems(config: Any, items: list[pytest.Item]) -> None:
    here = os.path.dirname(__file__)
    for item in items:
        if str(item.fspath).startswith(here):
            item.add_marker(pytest.mark.integration)


@dataclass
class EngineProc:
    """A running engine process started by the test (``--foreground``; stdout/stderr in logs/test-engine.out)."""

    home: Home
    proc: subprocess.Popen[bytes]
    info: ConnectionInfo
    clients: list[EngineClient] = field(default_factory=list)

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def url(self) -> str:
        return self.info.url

    @property
    def token(self) -> str:
        return self.info.token

    def client(self, **kwargs: Any) -> EngineClient:
        """A sync client through this home's engine.json (closed at teardown)."""
        c = EngineClient(home=self.home, **kwargs)
        self.clients.append(c)
        return c

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self, timeout: float = 15.0) -> int:
        """SIGTERM and wait for the exit code."""
        if self.alive():
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    def kill(self) -> None:
        """SIGKILL (a crash: engine.json stays behind)."""
        if self.alive():
            self.proc.kill()
        self.proc.wait(10)


def start_engine_process(home: Home, exchange: str | None = "sim", timeout: float = 30.0,
                         extra_args: list[str] | None = None, env: dict[str, str] | None = None) -> EngineProc:
    """``exchange`` defaults to the local simulator (an engine refuses to start without an exchange in a fresh
    home); ``None`` starts it without ``--exchange`` (the journal's or the config's, as a user's restart does)."""
    home.ensure()
    cmd = [PYTHON, "-m", "tradebaas.cli", "engine", "start", "--foreground", *(extra_args or [])]
    if exchange:
        cmd += ["--exchange", exchange]
    out = open(home.logs_dir / "test-engine.out", "ab")  # noqa: SIM115 - owned by the process
    proc = subprocess.Popen(cmd, env=cli_env(home, env), stdout=out, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL)
    out.close()

    def ready() -> ConnectionInfo | None:
        if proc.poll() is not None:
            text = (home.logs_dir / "test-engine.out").read_text(errors="replace")
            pytest.fail(f"engine exited with {proc.returncode} at start:\n{text[-3000:]}")
        info = read_connection_file(home)
        if info is not None and info.pid == proc.pid and ping_once(info.url, info.token, 2.0):
            return info
        return None

    info = wait_for(ready, timeout=timeout, what=f"engine in {home.root} to answer")
    return EngineProc(home, proc, info)


@pytest.fixture
def engine_proc(tb_home: Home) -> Iterator[Callable[..., EngineProc]]:
    started: list[EngineProc] = []

    def start(home: Home | None = None, exchange: str | None = "sim", timeout: float = 30.0,
              **kwargs: Any) -> EngineProc:
        eng = start_engine_process(get_home(home or tb_home), exchange, timeout, **kwargs)
        started.append(eng)
        return eng

    yield start
    for eng in started:
        for c in eng.clients:
            c.close()
        if eng.alive():
            eng.proc.send_signal(signal.SIGTERM)
            try:
                eng.proc.wait(10)
            except subprocess.TimeoutExpired:
                eng.proc.kill()
                eng.proc.wait(10)


@pytest.fixture
def stop_detached() -> Iterator[Callable[[Home], None]]:
    """Register homes whose *detached* engine (started through the CLI) must be stopped at teardown."""
    homes: list[Home] = []
    yield homes.append
    from tradebaas.engine.process import daemon

    for home in homes:
        try:
            daemon.stop(home, timeout_s=10)
        except Exception:  # noqa: BLE001 - best effort cleanup
            info = read_connection_file(home)
            if info is not None:
                try:
                    os.kill(info.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass


# ------------------------------------------------------------------------------------------- simulator processes


class SimProc:
    """A running ``tradebaas sim`` (real process) in ``home``, with a small HTTP client for its API.

    stdout/stderr go to ``<home>/logs/test-sim.out`` (never a pipe nobody drains). ``restart()`` stops it with
    SIGTERM (its state is saved) and starts it again on the *same* port and home, as an operator would.
    Private calls use the account of ``<home>/sim/credentials.json`` (the engine's paper key) over HTTP with a
    bearer token (re-authenticated after a restart). Rate limits are off unless ``extra_args`` sets
    ``--rate-limits``: tests poll the simulator with the engine's own key, and that polling must not eat the
    engine's request credits.
    """

    def __init__(self, home: Home, speed: float = 600.0, port: int = 0, extra_args: list[str] | None = None) -> None:
        self.home = home.ensure()
        self.speed = speed
        self.extra_args = list(extra_args or [])
        if "--rate-limits" not in self.extra_args:
            self.extra_args += ["--rate-limits", "off"]
        self.port = port
        self.proc: subprocess.Popen[bytes] | None = None
        self._token: str | None = None
        self._launch()

    # -- life ------------------------------------------------------------------------------------------------
    def _launch(self) -> None:
        import json

        out_path = self.home.logs_dir / "test-sim.out"
        self.home.logs_dir.mkdir(parents=True, exist_ok=True)
        start_offset = out_path.stat().st_size if out_path.exists() else 0
        cmd = [PYTHON, "-m", "tradebaas.cli", "sim", "--port", str(self.port), "--speed", str(self.speed),
               *self.extra_args]
        out = open(out_path, "ab")  # noqa: SIM115 - owned by the process
        self.proc = subprocess.Popen(cmd, env=cli_env(self.home), stdout=out, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL)
        out.close()
        proc = self.proc

        def urls() -> list[str] | None:
            if proc.poll() is not None:
                pytest.fail(f"simulator exited with {proc.returncode}:\n{out_path.read_text(errors='replace')[-3000:]}")
            with open(out_path, "rb") as fh:
                fh.seek(start_offset)
                lines = [ln.strip() for ln in fh.read().decode(errors="replace").splitlines()]
            found = [ln for ln in lines if ln.startswith(("ws://", "http://"))]
            return found[:2] if len(found) >= 2 else None

        self.ws_url, self.http_url = wait_for(urls, timeout=30, what="the simulator's URLs")
        self.port = int(self.http_url.rsplit(":", 1)[1])
        creds = json.loads((self.home.sim_dir / "credentials.json").read_text())
        self.client_id, self.client_secret = str(creds["client_id"]), str(creds["client_secret"])
        self._token = None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout: float = 20.0) -> int:
        """SIGTERM (the simulator saves its state) and wait for the exit code."""
        assert self.proc is not None
        if self.alive():
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    def kill(self) -> None:
        if self.alive():
            assert self.proc is not None
            self.proc.kill()
            self.proc.wait(10)

    def restart(self, speed: float | None = None) -> None:
        """SIGTERM, then start again on the same port with the same home (state, clock and keys persist);
        ``speed`` changes the market's pace from then on."""
        code = self.stop()
        assert code == 0, f"simulator exited with {code} on SIGTERM"
        if speed is not None:
            self.speed = speed
        self._launch()

    # -- HTTP API --------------------------------------------------------------------------------------------
    def request(self, method: str, params: dict[str, Any] | None = None, auth: bool = False) -> dict[str, Any]:
        """One JSON-RPC call over HTTP POST; returns the whole envelope (``result`` or ``error``)."""
        import json
        import urllib.error
        import urllib.request

        headers = {"Content-Type": "application/json"}
        if auth:
            headers["Authorization"] = f"Bearer {self._bearer()}"
        body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": method, "params": params or {}}).encode()
        req = urllib.request.Request(f"{self.http_url}/api/v2/{method}", data=body, method="POST", headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=15) as resp:
                return dict(json.loads(resp.read()))
        except urllib.error.HTTPError as exc:
            return dict(json.loads(exc.read()))

    def call(self, method: str, **params: Any) -> Any:
        """``result`` of a public/admin/private call (private ones authenticated); raises on an error answer."""
        private = method.startswith("private/")
        answer = self.request(method, params, auth=private)
        if "error" in answer and private and answer["error"].get("code") in (13009, 13010, 13011):
            self._token = None
            answer = self.request(method, params, auth=True)
        if "error" in answer:
            raise RuntimeError(f"simulator answered {method} with {answer['error']}")
        return answer["result"]

    def _bearer(self) -> str:
        if self._token is None:
            result = self.request("public/auth", {"grant_type": "client_credentials", "client_id": self.client_id,
                                                  "client_secret": self.client_secret})["result"]
            self._token = str(result["access_token"])
        return self._token

    # -- conveniences ----------------------------------------------------------------------------------------
    def now_ms(self) -> int:
        """The simulated clock."""
        return int(self.call("public/get_time"))

    def position_size(self, instrument: str = "BTC_USDC-PERPETUAL") -> float:
        return float(self.call("private/get_position", instrument_name=instrument)["size"])

    def open_orders(self, instrument: str = "BTC_USDC-PERPETUAL") -> list[dict[str, Any]]:
        return list(self.call("private/get_open_orders_by_instrument", instrument_name=instrument))

    def user_trades(self, instrument: str = "BTC_USDC-PERPETUAL") -> list[dict[str, Any]]:
        """Every fill of the account on ``instrument``, oldest first (pages of 1000), from both of Deribit's
        history windows (the last 24 h, then ``historical: true`` for the older ones; the recent one first)."""
        found: dict[str, dict[str, Any]] = {}
        for historical in (False, True):
            start_seq = 0
            while True:
                page = self.call("private/get_user_trades_by_instrument", instrument_name=instrument, count=1000,
                                 sorting="asc", start_seq=start_seq, historical=historical)
                found.update((t["trade_id"], t) for t in page["trades"])
                if not page["has_more"] or not page["trades"]:
                    break
                start_seq = int(page["trades"][-1]["trade_seq"]) + 1
        return sorted(found.values(), key=lambda t: (t["timestamp"], t["trade_seq"]))

    def order_history(self, instrument: str = "BTC_USDC-PERPETUAL") -> list[dict[str, Any]]:
        """Every closed order of the account on ``instrument`` (filled or not), from both of Deribit's history
        windows, in pages of 1000."""
        found: dict[str, dict[str, Any]] = {}
        for historical in (False, True):
            offset = 0
            while True:
                page = self.call("private/get_order_history_by_instrument", instrument_name=instrument, count=1000,
                                 offset=offset, include_unfilled=True, historical=historical)
                found.update((o["order_id"], o) for o in page)
                if len(page) < 1000:
                    break
                offset += len(page)
        return list(found.values())

    def set_fault(self, action: str, **params: Any) -> Any:
        return self.call("admin/set_fault", action=action, **params)


@pytest.fixture
def sim_proc(tb_home: Home) -> Iterator[Callable[..., SimProc]]:
    """Factory: ``sim = sim_proc(speed=600)`` starts ``tradebaas sim`` in ``tb_home`` (or ``home=``) on a free port
    (or ``port=``); every simulator still running at the end of the test is stopped (SIGTERM, then SIGKILL)."""
    started: list[SimProc] = []

    def start(home: Home | None = None, speed: float = 600.0, port: int = 0,
              extra_args: list[str] | None = None) -> SimProc:
        sim = SimProc(get_home(home or tb_home), speed, port, extra_args)
        started.append(sim)
        return sim

    yield start
    for sim in started:
        try:
            sim.stop(10)
        except subprocess.TimeoutExpired:
            sim.kill()
