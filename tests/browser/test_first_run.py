"""A first run that just works: ``tradebaas up`` (what ``make run`` runs after installing the kernel spec), as a real
process in a fresh home, prints the cockpit's URL only once the server answers; the cockpit shows the live panel
without anyone pressing "Run all"; a session in JupyterLab saves into the home's copy of the notebooks; and the
repository's ``git status`` is the same afterwards.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from playwright.sync_api import expect

from tests.browser.conftest import quiet_lab_settings
from tests.browser.harness import REPO_ROOT, LabPage, ensure_kernel_spec
from tests.browser.layout import cut_off
from tests.conftest import PYTHON, cli_env, run_cli, wait_for

PANEL = ".tb-control-panel"


@dataclass
class Served:
    """The server ``up`` started, as LabPage needs it."""

    base_url: str
    token: str

    def url(self, path: str) -> str:
        return f"{self.base_url}/{path.lstrip('/')}?token={self.token}"


def git_status() -> str:
    return subprocess.run(["git", "-C", str(REPO_ROOT), "status", "--porcelain", "--untracked-files=all"],
                          capture_output=True, text=True, check=True, timeout=60).stdout


def test_up_serves_the_cockpit_once_it_answers_and_a_session_leaves_the_repository_clean(
        chromium: Any, tmp_path: Path) -> None:
    ensure_kernel_spec()  # `make run` installs it before `tradebaas up`
    before = git_status()
    home = tmp_path / "home"
    config_dir = tmp_path / "jupyter-config"  # the test's own: window.jupyterapp for LabPage, nothing of the user's
    config_dir.mkdir()
    (config_dir / "jupyter_lab_config.json").write_text(json.dumps({"LabApp": {"expose_app_in_browser": True}}))
    env = cli_env(home, {"JUPYTER_CONFIG_DIR": str(config_dir),
                         "JUPYTERLAB_WORKSPACES_DIR": str(tmp_path / "lab-workspaces"),
                         "JUPYTERLAB_SETTINGS_DIR": str(tmp_path / "lab-settings"),
                         "JUPYTER_RUNTIME_DIR": str(tmp_path / "jupyter-runtime")})
    quiet_lab_settings(tmp_path / "lab-settings")
    out_path = tmp_path / "up.out"
    with open(out_path, "wb") as out:
        up = subprocess.Popen([PYTHON, "-m", "tradebaas.cli", "up", "--no-browser"], env=env, stdout=out,
                              stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=REPO_ROOT,
                              start_new_session=True)
    try:
        def cockpit_line() -> str | None:
            if up.poll() is not None:
                raise AssertionError(f"tradebaas up exited with {up.returncode}:\n{out_path.read_text()}")
            text = out_path.read_text(errors="replace")
            found = re.search(r"the cockpit[^:]*: (http://\S+)", text)
            # the URLs block is complete once its closing hint is there
            return found.group(1) if found and "(Ctrl-C stops JupyterLab" in text else None

        cockpit = wait_for(cockpit_line, timeout=150, what="tradebaas up to print the cockpit's URL")
        base, token = re.match(r"(http://[\d.:]+)/.*token=(\w+)", cockpit).groups()  # type: ignore[union-attr]
        # printed only once the server answers: the very first request succeeds
        with urllib.request.urlopen(f"{base}/api/status?token={token}", timeout=5) as resp:
            assert resp.status == 200
        text = out_path.read_text()
        assert "copied" in text and str(home / "notebooks") in text
        assert re.search(r"JupyterLab[^:]*: http://\S+/lab/tree/notebooks/control\.ipynb\?token=", text)
        # the server's root is the home: the notebooks folder and the reports are listed, the engine's files are not
        with urllib.request.urlopen(f"{base}/api/contents/?token={token}", timeout=10) as resp:
            listed = {item["name"] for item in json.load(resp)["content"]}
        assert "notebooks" in listed and "logs" in listed
        assert (home / "engine.json").exists() and not listed & {"engine.json", "engine.lock", "journal.sqlite"}

        context = chromium.new_context(viewport={"width": 1280, "height": 800})
        page = context.new_page()
        try:
            # the cockpit: the control notebook executed by Voila, its panel live, nothing to press
            page.goto(cockpit)
            panel = page.locator(PANEL)
            expect(panel.locator(".tb-connection")).to_have_text("connected", timeout=120_000)
            expect(panel.locator(".tb-start-form .widget-button", has_text="Start")).to_be_visible(timeout=60_000)
            expect(panel.locator(".tb-chart-choice")).to_be_visible()
            assert cut_off(page, PANEL) == []
            page.screenshot(path=str(artifact("cockpit_first_run.png")))

            # a session in JupyterLab on the same server: it saves into the home's copy, not the repository
            lab = LabPage(page, Served(base, token))  # type: ignore[arg-type]
            lab.open_notebook("notebooks/control.ipynb", timeout_ms=90_000)  # INTERFACE.md's path, in the home
            lab.run_all()
            expect(page.locator(f".jp-OutputArea-output {PANEL} .tb-connection")).to_have_text(
                "connected", timeout=60_000)
            lab.wait_all_executed()
            assert lab.errors() == []
            page.evaluate("() => window.jupyterapp.commands.execute('docmanager:save')")
            saved = home / "notebooks" / "control.ipynb"
            wait_for(lambda: any(c.get("outputs") for c in json.loads(saved.read_text())["cells"]), timeout=30,
                     what="the session saved into the home's copy of control.ipynb")
        finally:
            context.close()
    finally:
        if up.poll() is None:
            up.send_signal(signal.SIGTERM)  # `up` stops its JupyterLab (and its kernels) on SIGTERM
            try:
                up.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(up.pid, signal.SIGKILL)
                up.wait(10)
        run_cli("down", home=home, timeout=60)
    assert git_status() == before, "a `tradebaas up` session changed files in the repository"
    assert json.loads((REPO_ROOT / "notebooks" / "control.ipynb").read_text())["cells"][1]["outputs"] == []


def artifact(name: str) -> Path:
    from tests.browser.harness import ARTIFACTS

    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS / name
