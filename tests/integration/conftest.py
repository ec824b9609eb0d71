"""Integration fixtures: real engine processes, each in its own TRADEBAAS_HOME, torn down after the test.

``engine_proc`` is a factory::

    def test_x(engine_proc, tb_home):
        eng = engine_proc()                      # engine for tb_home, `--foreground` child of the test
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
from tradebaas.engine.daemon import ConnectionInfo, read_connection_file
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


def start_engine_process(home: Home, exchange: str | None = None, timeout: float = 30.0,
                         extra_args: list[str] | None = None, env: dict[str, str] | None = None) -> EngineProc:
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

    def start(home: Home | None = None, exchange: str | None = None, timeout: float = 30.0,
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
    from tradebaas.engine import daemon

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
