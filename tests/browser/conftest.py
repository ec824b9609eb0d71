"""Fixtures for the browser tests: the accelerated simulator, the engine, JupyterLab and headless Chromium.

The stack is real and private to the test: its own TRADEBAAS_HOME (under tmp_path), the simulator replaying the
bundled market data at ``--speed`` (one minute of market per second at 60), the engine as a process pointed at
that simulator, a JupyterLab on a free port with a token whose kernels inherit TRADEBAAS_HOME, and Debian's
Chromium driven by playwright (no browser download: ``executable_path``). The engine and simulator helpers are
the integration suite's (``tests/integration``), reused rather than copied.

Every test here is marked ``browser``; they are skipped (with the reason) only when no Chromium binary exists.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.browser.harness import (
    CHROMIUM,
    CHROMIUM_ARGS,
    JupyterLab,
    LabPage,
    copy_notebooks,
    ensure_kernel_spec,
)
from tests.conftest import cli_env
from tradebaas.home import Home, get_home

SIM_SPEED = os.environ.get("TRADEBAAS_TEST_SIM_SPEED", "120")


def pytest_collection_modifyitems(config: Any, items: list[pytest.Item]) -> None:
    here = os.path.dirname(__file__)
    for item in items:
        if str(item.fspath).startswith(here):
            item.add_marker(pytest.mark.browser)


@dataclass
class Stack:
    """Everything a browser test drives: the home, the simulator, the engine and JupyterLab."""

    home: Home
    sim: Any
    engine: Any
    lab: JupyterLab


def start_sim(home: Home, speed: str = SIM_SPEED) -> Any:
    from tests.integration.test_sim_fixtures import SimProcess

    return SimProcess(home.root, "--speed", speed)


def quiet_lab_settings(settings_dir: Path) -> None:
    """No "get Jupyter news?" toast over the panel in screenshots, and no attempt to reach the internet."""
    target = settings_dir / "@jupyterlab" / "apputils-extension" / "notification.jupyterlab-settings"
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps({"fetchNews": "false", "checkForUpdates": False}))


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    """Simulator + engine + JupyterLab for one test, torn down in reverse order."""
    from tests.integration.conftest import start_engine_process

    ensure_kernel_spec()
    home = get_home(tmp_path / "home").ensure()
    sim = start_sim(home)
    engines: list[Any] = []  # every engine the test ran (a test may restart it), all stopped at the end
    lab = None
    try:
        engines.append(start_engine_process(home, exchange="sim", timeout=60))  # sim/sim.json + credentials
        env = cli_env(home, {
            # a private JupyterLab state: no workspace or settings of another run (or of the developer) leak in
            "JUPYTERLAB_WORKSPACES_DIR": str(tmp_path / "lab-workspaces"),
            "JUPYTERLAB_SETTINGS_DIR": str(tmp_path / "lab-settings"),
            "JUPYTER_RUNTIME_DIR": str(tmp_path / "jupyter-runtime"),
        })
        quiet_lab_settings(tmp_path / "lab-settings")
        lab = JupyterLab(copy_notebooks(tmp_path / "notebooks"), env, tmp_path / "jupyterlab.log")
        stack = Stack(home, sim, engines[0], lab)
        yield stack
        engines.append(stack.engine)
    finally:
        if lab is not None:
            lab.stop()
        for engine in engines:
            if engine.alive():
                try:
                    engine.stop(timeout=15)
                except Exception:  # noqa: BLE001 - a stuck engine must not leak past the test
                    engine.kill()
        try:
            sim.stop()
        except Exception:  # noqa: BLE001
            sim.kill()


@pytest.fixture(scope="module")
def chromium() -> Iterator[Any]:
    """Module-scoped: playwright's sync API keeps an event loop running in the main thread while it is open, and
    every later test that calls ``asyncio.run`` would fail; it must close with the browser tests."""
    if not Path(CHROMIUM).exists():
        message = f"no Chromium at {CHROMIUM} (apt-get install chromium; .ci/run does)"
        if os.environ.get("CI"):
            pytest.fail(message)  # in CI a missing browser is a broken install step, not a reason to skip
        pytest.skip(message)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture
def lab_page(chromium: Any, stack: Stack, request: pytest.FixtureRequest) -> Iterator[LabPage]:
    """A fresh browser page on the stack's JupyterLab; on failure a screenshot lands in test-artifacts/."""
    context = chromium.new_context(viewport={"width": 1600, "height": 1800})
    page = context.new_page()
    lab_page = LabPage(page, stack.lab)
    try:
        yield lab_page
    finally:
        report = getattr(request.node, "rep_call", None)
        if report is not None and report.failed:
            try:
                lab_page.screenshot(f"{request.node.name}-failure.png")
            except Exception:  # noqa: BLE001 - the failure itself matters more than its picture
                pass
        context.close()


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: Any) -> Any:
    # keep each phase's report on the item, so fixtures can tell whether the test failed
    report = yield
    setattr(item, f"rep_{report.when}", report)
    return report
