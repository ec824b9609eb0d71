"""The shipped notebooks run top to bottom, headless (nbclient), on the project's kernel, against a real engine.

This catches errors, not rendering (the browser tests cover that): any error output fails the test, with the
failing cell's source and traceback in the message.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import nbformat
import pytest
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

from tests.browser.harness import NOTEBOOKS, ensure_kernel_spec
from tradebaas.home import ENV_VAR, Home


def execute(name: str, home: Home, cwd: Path) -> nbformat.NotebookNode:
    """Run notebook ``name`` with TRADEBAAS_HOME pointing at ``home``; raise with the failing cell on error."""
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    assert os.environ.get(ENV_VAR) == str(home.root)  # the kernel inherits it
    client = NotebookClient(nb, kernel_name=ensure_kernel_spec(), timeout=120, startup_timeout=60,
                            resources={"metadata": {"path": str(cwd)}})
    try:
        client.execute()
    except CellExecutionError as exc:
        pytest.fail(f"{name} failed:\n{exc}")
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
              if o.get("output_type") == "error"]
    assert errors == [], f"{name} has error outputs: {errors}"
    return nb


def outputs_text(nb: nbformat.NotebookNode) -> str:
    parts: list[str] = []
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            parts.append(str(out.get("text", "")))
            parts.extend(str(v) for v in (out.get("data") or {}).values())
    return "\n".join(parts)


def test_control_notebook_runs_headless(engine_proc: Callable[..., Any], tb_home: Home, tmp_path: Path) -> None:
    engine_proc()
    nb = execute("control.ipynb", tb_home, tmp_path)
    mimes = {m for c in nb.cells for o in c.get("outputs", []) for m in (o.get("data") or {})}
    assert "application/vnd.jupyter.widget-view+json" in mimes  # the panel was displayed


def test_analytics_notebook_runs_headless(engine_proc: Callable[..., Any], tb_home: Home, tmp_path: Path) -> None:
    engine_proc()
    nb = execute("analytics.ipynb", tb_home, tmp_path)
    text = outputs_text(nb)
    assert "net_pnl" in text and "sharpe" in text  # the stats table was displayed


def test_analytics_notebook_on_a_trading_engine_draws_trades_on_price(
    sim_proc: Callable[..., Any], engine_proc: Callable[..., Any], tb_home: Home, tmp_path: Path
) -> None:
    from tests.conftest import wait_for

    sim_proc(speed=600)
    c = engine_proc(exchange="sim").client()
    wait_for(lambda: c.call("engine.status")["exchange"]["reconciliations"] >= 1, timeout=30, what="reconciliation")
    sid = c.call("strategy.start", name="razor", config={"rsiOversold": 48, "rsiOverbought": 52,
                                                           "stopLossPercent": 0.05, "takeProfitPercent": 0.05})["id"]
    wait_for(lambda: sum(t["state"] == "closed" for t in c.call("trades.list", strategy=sid)) >= 2, timeout=90,
             what="two closed trades")
    nb = execute("analytics.ipynb", tb_home, tmp_path)
    images = [o for cell in nb.cells for o in cell.get("outputs", []) if "image/png" in (o.get("data") or {})]
    kinds = [sorted((o.get("data") or {}).keys()) for cell in nb.cells for o in cell.get("outputs", [])]
    assert len(images) >= 3, kinds  # equity/drawdown, PnL distribution, trades on price
    assert "no closed trades yet" not in outputs_text(nb)
    assert len(c.call("market.candles", instrument="BTC_USDC-PERPETUAL")) > 0
