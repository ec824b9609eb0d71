"""Processes and page helpers for the browser tests (and the headless notebook tests).

- :func:`ensure_kernel_spec`: the project's ``tradebaas`` kernel spec in this venv (``--sys-prefix``), installed by
  the real CLI when missing, so notebooks run on the kernel users get.
- :class:`JupyterLab`: a real JupyterLab server on a free loopback port with a token, serving a copy of the
  notebooks (so autosave never writes outputs into the repository), with ``TRADEBAAS_HOME`` in its environment
  (the kernels it starts inherit it and so talk to the test's engine).
- :class:`LabPage`: the few JupyterLab interactions the tests need, each waiting for a condition with a deadline
  (reference/browser-testing.md has the recipe these follow).
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from tests.conftest import free_port

REPO_ROOT = Path(__file__).resolve().parents[2]
# the notebooks under test (overridable to try a draft notebook without touching the repository)
NOTEBOOKS = Path(os.environ.get("TRADEBAAS_TEST_NOTEBOOKS", REPO_ROOT / "notebooks"))
ARTIFACTS = REPO_ROOT / "test-artifacts"
KERNEL_NAME = "tradebaas"
CHROMIUM = os.environ.get("TRADEBAAS_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--no-first-run", "--disable-sync", "--disable-dev-shm-usage"]


def ensure_kernel_spec() -> str:
    """The kernel spec name, installing it (``tradebaas kernel install --sys-prefix``) if this venv lacks it."""
    from jupyter_client.kernelspec import KernelSpecManager

    specs = KernelSpecManager().find_kernel_specs()
    if KERNEL_NAME not in specs:
        subprocess.run([sys.executable, "-m", "tradebaas.cli", "kernel", "install", "--sys-prefix"], check=True,
                       capture_output=True, timeout=120)
    return KERNEL_NAME


def copy_notebooks(dest: Path, names: tuple[str, ...] = ("control.ipynb", "analytics.ipynb")) -> Path:
    """Copy the repository's notebooks into ``dest`` (the server's root); returns ``dest``."""
    dest.mkdir(parents=True, exist_ok=True)
    for name in names:
        if (NOTEBOOKS / name).exists():
            shutil.copy2(NOTEBOOKS / name, dest / name)
    return dest


class JupyterLab:
    """A JupyterLab server as a child process; ``stop()`` (or the fixture's teardown) ends it and its kernels."""

    def __init__(self, root_dir: Path, env: dict[str, str], log_path: Path, timeout: float = 90.0) -> None:
        self.root_dir = root_dir
        self.port = free_port()
        self.token = secrets.token_hex(16)
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        cmd = [
            sys.executable, "-m", "jupyter", "lab", "--no-browser", "--allow-root",
            "--ServerApp.ip=127.0.0.1", f"--ServerApp.port={self.port}", "--ServerApp.port_retries=0",
            f"--IdentityProvider.token={self.token}", f"--ServerApp.root_dir={root_dir}",
            "--LabApp.expose_app_in_browser=True",
        ]
        log = open(log_path, "ab")  # noqa: SIM115 - owned by the process
        # own session: stop() can end the server and the kernels it started, and nothing else
        self.proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                     cwd=root_dir, start_new_session=True)
        log.close()
        deadline = time.monotonic() + timeout
        while not self._answers():
            if self.proc.poll() is not None:
                raise RuntimeError(f"JupyterLab exited with {self.proc.returncode}:\n{self.log_tail()}")
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"JupyterLab did not answer within {timeout}s:\n{self.log_tail()}")
            time.sleep(0.1)

    def _answers(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.base_url}/api/status?token={self.token}", timeout=2) as resp:
                return resp.status == 200
        except (urllib.error.URLError, OSError):
            return False

    def url(self, path: str) -> str:
        return f"{self.base_url}/{path.lstrip('/')}?token={self.token}"

    def log_tail(self, chars: int = 4000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def stop(self, timeout: float = 15.0) -> None:
        if self.proc.poll() is not None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)


class LabPage:
    """A notebook open in JupyterLab in a playwright page."""

    def __init__(self, page: Any, lab: JupyterLab) -> None:
        self.page = page
        self.lab = lab

    def open_notebook(self, name: str, timeout_ms: int = 60_000) -> None:
        self.page.goto(self.lab.url(f"lab/tree/{name}"))
        self.page.wait_for_function("() => window.jupyterapp && document.querySelector('.jp-Notebook')",
                                    timeout=timeout_ms)
        self.wait_kernel_idle(timeout_ms)

    def wait_kernel_idle(self, timeout_ms: int = 60_000) -> None:
        """The notebook's kernel is started and idle (run-all before that would queue into a starting kernel)."""
        self.page.wait_for_function(
            """() => {
                const w = window.jupyterapp.shell.currentWidget;
                const k = w && w.sessionContext && w.sessionContext.session && w.sessionContext.session.kernel;
                return !!k && k.status === 'idle' && w.sessionContext.kernelDisplayName !== 'No Kernel';
            }""",
            timeout=timeout_ms,
        )

    def kernel_name(self) -> str:
        return str(self.page.evaluate(
            "() => window.jupyterapp.shell.currentWidget.sessionContext.session.kernel.name"))

    def run_all(self) -> None:
        self.page.evaluate("() => window.jupyterapp.commands.execute('notebook:run-all-cells')")

    def wait_all_executed(self, timeout_ms: int = 120_000) -> None:
        """Every code cell ran (it has an execution count) and the kernel is idle again."""
        self.page.wait_for_function(
            """() => {
                const w = window.jupyterapp.shell.currentWidget;
                const k = w.sessionContext.session && w.sessionContext.session.kernel;
                const cells = w.content.widgets.filter(c => c.model.type === 'code');
                return !!k && k.status === 'idle' && cells.every(c => c.model.executionCount !== null);
            }""",
            timeout=timeout_ms,
        )

    def errors(self) -> list[str]:
        """``ename: evalue`` of every error output in the open notebook: a run-all must leave none."""
        return list(self.page.evaluate(
            """() => {
                const errs = [];
                for (const cell of window.jupyterapp.shell.currentWidget.content.widgets) {
                    if (cell.model.type !== 'code') continue;
                    const outs = cell.model.outputs;
                    for (let i = 0; i < outs.length; i++) {
                        const o = outs.get(i).toJSON();
                        if (o.output_type === 'error') errs.push(o.ename + ': ' + o.evalue);
                    }
                }
                return errs;
            }"""))

    def screenshot(self, name: str, selector: str | None = None) -> Path:
        """Save a PNG under test-artifacts/: the page, or just the element ``selector`` (whole, even if the
        notebook would need scrolling to show it)."""
        ARTIFACTS.mkdir(exist_ok=True)
        path = ARTIFACTS / name
        if selector is not None:
            self.page.locator(selector).first.screenshot(path=str(path))
        else:
            self.page.screenshot(path=str(path), full_page=True)
        return path
