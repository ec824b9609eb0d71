"""``tradebaas report`` without an engine: runs in the CLI process, recorded in the journal all the same."""

from __future__ import annotations

import json
from pathlib import Path

import nbformat
import pytest

from tests.conftest import run_cli
from tradebaas.home import Home
from tradebaas.reports.execute import choose_kernel, installed_kernels


@pytest.fixture(scope="module", autouse=True)
def tradebaas_kernel() -> None:
    if "tradebaas" not in installed_kernels():
        assert run_cli("kernel", "install", "--sys-prefix").returncode == 0


def notebook(path: Path, body: str) -> None:
    nb = nbformat.v4.new_notebook()
    params = nbformat.v4.new_code_cell("n = 1")
    params.metadata["tags"] = ["parameters"]
    nb.cells = [nbformat.v4.new_markdown_cell("# Tiny"), params, nbformat.v4.new_code_cell(body)]
    nb.metadata["kernelspec"] = {"name": "tradebaas", "display_name": "tradebaas", "language": "python"}
    nbformat.write(nb, path)


def test_report_run_without_an_engine_runs_locally_and_is_listed(tb_home: Home) -> None:
    notebook(tb_home.root / "tiny.ipynb", "print('the answer is', n * 21)")
    tb_home.config_file.write_text('[reports.tiny]\nnotebook = "tiny.ipynb"\n')
    result = run_cli("report", "run", "tiny", "-p", "n", "2", "--json", home=tb_home, timeout=240)
    assert result.returncode == 0, result.stdout + result.stderr
    run = json.loads(result.stdout)
    assert run["status"] == "ok" and run["params"] == {"n": 2}
    assert "the answer is 42" in Path(run["html_path"]).read_text()
    assert "print(" not in Path(run["html_path"]).read_text()

    listing = run_cli("report", "list", home=tb_home)
    assert listing.returncode == 0
    assert run["run_id"] in listing.stdout and " ok " in listing.stdout
    assert "report tiny: cron (on demand)" in listing.stdout


def test_report_run_shows_which_cell_runs_while_it_runs(tb_home: Home) -> None:
    nb = nbformat.v4.new_notebook()
    params = nbformat.v4.new_code_cell("n = 1")
    params.metadata["tags"] = ["parameters"]
    nb.cells = [params, nbformat.v4.new_markdown_cell("## Slow part"),
                nbformat.v4.new_code_cell("import time\ntime.sleep(3)"), nbformat.v4.new_code_cell("print(n)")]
    nb.metadata["kernelspec"] = {"name": "tradebaas", "display_name": "tradebaas", "language": "python"}
    nbformat.write(nb, tb_home.root / "slowish.ipynb")
    tb_home.config_file.write_text('[reports.slowish]\nnotebook = "slowish.ipynb"\n')
    result = run_cli("report", "run", "slowish", home=tb_home, timeout=240)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "report slowish: cell 2 of 3 (Slow part), " in result.stderr


def test_a_value_the_notebook_cannot_take_fails_the_run_before_any_kernel(tb_home: Home) -> None:
    notebook(tb_home.root / "tiny.ipynb", "print('the answer is', n * 21)")
    tb_home.config_file.write_text('[reports.tiny]\nnotebook = "tiny.ipynb"\n')
    result = run_cli("report", "run", "tiny", "-p", "n", "many", "--json", home=tb_home, timeout=60)
    assert result.returncode == 1
    run = json.loads(result.stdout)
    assert run["status"] == "failed" and run["error"] == "report 'tiny': n must be a number, got 'many'"
    assert run["notebook_path"] is None and not Path(run["run_dir"]).exists()  # nothing was started


def test_daily_without_an_engine_fails_with_a_clear_error_and_keeps_its_notebook(tb_home: Home) -> None:
    result = run_cli("report", "run", "daily", home=tb_home, timeout=240)
    assert result.returncode == 1
    assert "no engine running" in result.stdout
    listed = json.loads(run_cli("report", "list", "--json", home=tb_home).stdout)
    assert listed["runs"][0]["status"] == "failed"
    assert Path(listed["runs"][0]["notebook_path"]).is_file()


def test_a_report_over_its_timeout_is_killed_and_recorded_as_failed(tb_home: Home) -> None:
    notebook(tb_home.root / "slow.ipynb", "import time\ntime.sleep(120)")
    tb_home.config_file.write_text('[reports.slow]\nnotebook = "slow.ipynb"\ntimeout_s = 3\n')
    result = run_cli("report", "run", "slow", "--json", home=tb_home, timeout=120)
    assert result.returncode == 1
    run = json.loads(result.stdout)
    assert run["status"] == "failed" and "timeout" in run["error"].lower().replace("timed out", "timeout")
    assert run["finished_ts_ms"] - run["started_ts_ms"] < 60_000


def test_unknown_reports_and_bad_config_are_one_line_errors(tb_home: Home) -> None:
    result = run_cli("report", "run", "nosuch", home=tb_home)
    assert result.returncode == 2 and result.stderr.startswith("error: ")
    assert "no report notebook named 'nosuch'" in result.stderr and result.stderr.count("\n") == 1
    tb_home.config_file.write_text('[reports.daily]\ncron = "every morning"\n')
    result = run_cli("report", "run", "daily", home=tb_home)
    assert result.returncode == 2 and "cron must have 5 fields" in result.stderr


def test_kernel_choice_prefers_the_project_kernel_and_falls_back_to_python3() -> None:
    assert choose_kernel(None, {"tradebaas", "python3"}) == "tradebaas"
    assert choose_kernel(None, {"python3"}) == "python3"
    assert choose_kernel("other", {"python3"}) == "other"
