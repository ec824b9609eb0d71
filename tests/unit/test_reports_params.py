"""Report parameters judged from the notebook file alone, and the progress read from the notebook papermill writes."""

from __future__ import annotations

import io
import json
from pathlib import Path

import nbformat
import pytest

from tradebaas.errors import UserError
from tradebaas.reports.config import default_report
from tradebaas.reports.params import check_params, parameter_rules, value_problem
from tradebaas.reports.progress import Progress, ProgressLine, notebook_progress

DAILY = Path(__file__).resolve().parents[2] / "notebooks" / "reports" / "daily.ipynb"


@pytest.mark.parametrize(("params", "message"), [
    ({"period_days": -3}, "period_days must be a positive number of days, got -3"),
    ({"period_days": "7"}, "period_days must be a positive number of days, got '7'"),
    ({"period_days": True}, "period_days must be a positive number of days, got True"),
    ({"capital": 0}, "capital must be None or a positive number, got 0"),
    ({"strategies": 5}, "strategies must be None or a list of strategy ids, got 5"),
    ({"until": 1.5}, "until must be None, an ISO time or Unix ms, got 1.5"),
])
def test_the_daily_reports_bad_values_are_refused_from_the_file(tb_home, params, message) -> None:
    with pytest.raises(UserError) as err:
        check_params(default_report("daily", tb_home), params)
    assert str(err.value) == f"report 'daily': {message}"


def test_the_daily_reports_good_values_pass(tb_home) -> None:
    check_params(default_report("daily", tb_home), {"period_days": 0.5, "until": "2025-01-07", "strategies": ["a"],
                                                    "capital": 1000, "engine_url": None})
    check_params(default_report("daily", tb_home), {"strategies": "razor-1", "until": 1736208060000})


def test_without_declared_rules_a_literal_default_gives_the_type(tmp_path: Path) -> None:
    nb = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell("n = 1\nname = 'x'\nflag = False\nanything = None\nlater = compute()")
    cell.metadata["tags"] = ["parameters"]
    nb.cells = [cell]
    path = tmp_path / "p.ipynb"
    nbformat.write(nb, path)
    assert parameter_rules(path) == {"n": {"type": "number"}, "name": {"type": "string"}, "flag": {"type": "boolean"}}
    assert value_problem("n", "many", {"type": "number"}) == "n must be a number, got 'many'"
    assert value_problem("n", 2.5, {"type": "number"}) is None
    assert value_problem("n", 0, {"type": "number", "minimum": 1}) == "n must be >= 1, got 0"


def write_run(path: Path, statuses: list[str | None]) -> None:
    nb = nbformat.v4.new_notebook()
    cells = [nbformat.v4.new_markdown_cell("# Title"), nbformat.v4.new_code_cell("a"),
             nbformat.v4.new_markdown_cell("## Trades\nsome text"), nbformat.v4.new_code_cell("b"),
             nbformat.v4.new_code_cell("c")]
    for cell, status in zip([c for c in cells if c.cell_type == "code"], statuses, strict=True):
        if status:
            cell.metadata["papermill"] = {"status": status}
    nb.cells = cells
    nbformat.write(nb, path)


def test_progress_is_the_running_cell_and_its_section(tmp_path: Path) -> None:
    path = tmp_path / "out.ipynb"
    assert notebook_progress(path) is None  # not written yet
    write_run(path, ["completed", "running", "pending"])
    assert notebook_progress(path) == Progress(2, 3, "Trades")
    write_run(path, ["completed", "completed", "completed"])
    assert notebook_progress(path) == Progress(3, 3, "Trades")
    text = path.read_text()
    path.write_text(text[: len(text) // 2])  # caught half-written
    assert notebook_progress(path) is None
    path.write_text(json.dumps({"cells": []}))
    assert notebook_progress(path) is None


def test_progress_lines_are_written_when_they_change() -> None:
    out = io.StringIO()
    line = ProgressLine("daily", out)
    line.show(None, "queued")
    line.show(None, "queued")
    line.show(Progress(2, 9, "Trades"), "running")
    line.done()
    assert out.getvalue().splitlines() == ["report daily: queued, 0 s", "report daily: cell 2 of 9 (Trades), 0 s"]
