"""notebooks/backtest.ipynb runs top to bottom, headless (nbclient), on the "tradebaas" kernel, with no error cell.

It needs no engine: it backtests the bundled candles. Any error output fails the test with the failing cell's
source and traceback; the plots and the stats table must actually be produced.
"""

from __future__ import annotations

import time
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

from tests.browser.harness import NOTEBOOKS, ensure_kernel_spec

NOTEBOOK = NOTEBOOKS / "backtest.ipynb"


def test_backtest_notebook_runs_without_errors(tmp_path: Path) -> None:
    nb = nbformat.read(NOTEBOOK, as_version=4)
    client = NotebookClient(nb, kernel_name=ensure_kernel_spec(), timeout=180, startup_timeout=60,
                            resources={"metadata": {"path": str(tmp_path)}})
    started = time.perf_counter()
    try:
        client.execute()
    except CellExecutionError as exc:
        pytest.fail(f"backtest.ipynb failed:\n{exc}")
    elapsed = time.perf_counter() - started
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    errors = [o for o in outputs if o.get("output_type") == "error"]
    assert errors == [], f"backtest.ipynb has error outputs: {errors}"
    images = [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(images) >= 4, "trades on price, two equity curves and the sweep heatmap must render"
    html = "".join(o.get("data", {}).get("text/html", "") for o in outputs)
    assert "net_pnl" in html and "ema_cross" in html and "razor" in html
    # the notebook is meant to run in about a minute; a generous bound still catches a slow path creeping in
    assert elapsed < 120, f"backtest.ipynb took {elapsed:.0f} s"
