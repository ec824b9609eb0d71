"""Shared test helpers: a fresh TRADEBAAS_HOME per test, free ports, polling with timeouts, running the CLI.

Fixtures (available to every test):
- ``tb_home``: a fresh ``Home`` under tmp_path, also exported as ``TRADEBAAS_HOME`` for the test's duration;
- ``make_home``: factory for more homes (``make_home("b")``) when a test needs several instances.

Plain helpers (``from tests.conftest import free_port, wait_for, run_cli``):
- ``free_port()``: a currently free 127.0.0.1 TCP port;
- ``wait_for(predicate, timeout=..., what=...)``: poll until ``predicate()`` is truthy and return its value, or
  fail the test with ``what`` (never sleep as synchronisation: wait for the event);
- ``run_cli(*args, home=..., timeout=...)``: run ``python -m tradebaas.cli`` as a real process.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest

from tradebaas.home import ENV_VAR, Home, get_home

T = TypeVar("T")
PYTHON = sys.executable


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(predicate: Callable[[], T], timeout: float = 15.0, interval: float = 0.02, what: str = "condition") -> T:
    """Poll ``predicate`` until it returns a truthy value (returned); exceptions count as "not yet"."""
    deadline = time.monotonic() + timeout
    last_exc: BaseException | None = None
    while True:
        try:
            value = predicate()
            if value:
                return value
        except Exception as exc:  # noqa: BLE001 - "not yet" until the deadline
            last_exc = exc
        if time.monotonic() >= deadline:
            detail = f" (last error: {last_exc!r})" if last_exc else ""
            pytest.fail(f"timed out after {timeout}s waiting for {what}{detail}")
        time.sleep(interval)


def cli_env(home: Home | Path | str | None = None, extra: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ)
    if home is not None:
        env[ENV_VAR] = str(get_home(home).root)
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra or {})
    return env


def run_cli(*args: str, home: Home | Path | str | None = None, timeout: float = 60.0,
            env: dict[str, str] | None = None, input: str | None = None) -> subprocess.CompletedProcess[str]:
    """``tradebaas *args`` in a subprocess (same interpreter as the tests), capturing stdout/stderr."""
    return subprocess.run(
        [PYTHON, "-m", "tradebaas.cli", *args], env=cli_env(home, env), capture_output=True, text=True,
        timeout=timeout, input=input,
    )


@pytest.fixture
def make_home(tmp_path: Path) -> Callable[[str], Home]:
    def make(name: str = "home") -> Home:
        return get_home(tmp_path / name).ensure()

    return make


@pytest.fixture
def tb_home(make_home: Callable[[str], Home], monkeypatch: pytest.MonkeyPatch) -> Home:
    home = make_home("home")
    monkeypatch.setenv(ENV_VAR, str(home.root))
    return home


def pytest_configure(config: Any) -> None:
    # never let a test that forgets the fixture touch the developer's real instance
    os.environ[ENV_VAR] = str(Path(config.rootpath) / ".pytest_cache" / "tradebaas-home")


def pytest_collection_modifyitems(config: Any, items: list[Any]) -> None:
    """Browser tests run last: they are the slowest, and they hold a playwright event loop while they run."""
    items.sort(key=lambda item: "tests/browser/" in str(item.fspath).replace("\\", "/"))
