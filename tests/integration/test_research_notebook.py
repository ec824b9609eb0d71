"""notebooks/research.ipynb end to end, headless: papermill on the project's kernel against a real simulator and a
real engine (the stack of ``make run``, replayed faster), as a user runs it top to bottom.

The notebook writes a strategy in a ``%%tradebaas_strategy`` cell, backtests it on the bundled candles and on the
engine's recordings, sweeps two parameters, deploys it (the engine vets it in a child process), starts it, shows
the ControlPanel, waits for a trade, changes ``hold`` with ``eng.set``, waits for a trade under config version 2,
and compares live with the backtest. The test checks the notebook's own outputs, then the same facts on the
engine over RPC (the notebook could print anything; the journal cannot).

The recordings the notebook backtests on come from an earlier engine in the same home that ran a strategy for a
while and stopped, so that nothing rewrites the day files while the notebook and the vetting child read them:
``load_recorded`` (``pd.read_parquet`` on a path) can fail with "Unexpected end of stream" when the recorder
replaces the file in the middle of the read (pyarrow opens the path more than once), and at this replay speed the
recorder replaces it twice a second. The comparison still reads while the engine records, as it does live (the
slower replay keeps that window small).

The papermill run writes its output notebook under tmp_path: the tracked notebook is only read.
"""

from __future__ import annotations

import contextlib
import io
import re
import textwrap
from collections.abc import Callable
from pathlib import Path

import nbformat
import papermill  # type: ignore[import-untyped]
import pytest

from tests.browser.harness import NOTEBOOKS, ensure_kernel_spec
from tests.conftest import wait_for
from tests.integration.conftest import EngineProc, SimProc
from tests.integration.test_notebooks_headless import outputs_text
from tradebaas.analytics.compare import Comparison
from tradebaas.backtest.data import DataError, load_recorded
from tradebaas.domain import Candle
from tradebaas.engine.live.recorder import CandleRecorder
from tradebaas.home import Home

pytestmark = pytest.mark.integration

NOTEBOOK = NOTEBOOKS / "research.ipynb"
# The simulator replays two minutes of market per second: the demo settings trade every few candles, so each wait
# of the notebook ends within seconds (WAIT_S only bounds a run gone wrong).
SIM_SPEED = 120
INSTRUMENT = "BTC_USDC-PERPETUAL"
PARAMETERS = {"WAIT_S": 150, "SWEEP_PROCESSES": 2}
#: A strategy that never trades: running it before the notebook makes the engine record candles (it records the
#: instruments its strategies trade on), as an engine that has run a while has; it holds no position to disturb.
WATCHER = textwrap.dedent('''
    from tradebaas.strategies.base import BaseStrategy, Decision, Param


    class Watcher(BaseStrategy):
        name = "watcher"
        params = (Param("every", int, 1, 1, 60, "unused"),)

        def on_candle(self, candle, context):
            return Decision(candle.ts_ms, "none", {}, {}, ("only watching",))
''')


def cell_text(cell: nbformat.NotebookNode) -> str:
    return outputs_text(nbformat.v4.new_notebook(cells=[cell]))


def cell_with(nb: nbformat.NotebookNode, code: str) -> nbformat.NotebookNode:
    """The one code cell whose source contains ``code``."""
    found = [c for c in nb.cells if c.cell_type == "code" and code in c.source]
    assert len(found) == 1, f"{len(found)} cells contain {code!r}"
    return found[0]


def test_the_tracked_notebook_has_no_outputs_and_a_parameters_cell() -> None:
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(nb)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(c.outputs == [] and c.execution_count is None for c in code)
    assert nb.metadata["kernelspec"]["name"] == "tradebaas"
    params = [c for c in code if "parameters" in c.metadata.get("tags", [])]
    assert len(params) == 1 and "WAIT_S" in params[0].source
    assert sum(c.source.startswith("%%tradebaas_strategy\n") for c in code) == 1


def run_recorded_cell(home: Home) -> str:
    """The notebook's "backtest on the engine's recordings" cell, run as it is written against ``home``'s
    recordings; what it printed."""
    source = cell_with(nbformat.read(NOTEBOOK, as_version=4), "load_recorded(").source
    out = io.StringIO()
    names = {"INSTRUMENT": INSTRUMENT, "DataError": DataError, "load_recorded": load_recorded}
    with contextlib.redirect_stdout(out):
        exec(compile(source, "research.ipynb: recorded cell", "exec"), names)
    return out.getvalue()


def test_the_recordings_cell_says_when_the_engine_has_recorded_little(tb_home: Home) -> None:
    assert "has recorded no candles of BTC_USDC-PERPETUAL yet" in run_recorded_cell(tb_home)
    recorder = CandleRecorder(tb_home.data_dir)
    start = 1_736_208_000_000  # 2025-01-07 00:00 UTC
    for i in range(50):
        recorder.add(INSTRUMENT, Candle(start + i * 60_000, 100.0, 101.0, 99.0, 100.5, 1.0))
    assert recorder.flush() == 50
    said = run_recorded_cell(tb_home)
    assert "has recorded only 50 candles of BTC_USDC-PERPETUAL (2025-01-07 00:00 .. 00:49 UTC): too few" in said


def test_research_notebook_runs_against_a_real_engine(
    sim_proc: Callable[..., SimProc], engine_proc: Callable[..., EngineProc], tb_home: Home, tmp_path: Path
) -> None:
    sim_proc(speed=SIM_SPEED)
    # an engine that traded a while ago: it recorded candles, then stopped (its recordings stay in TRADEBAAS_HOME)
    before = engine_proc(exchange="sim")
    c = before.client()
    c.call("strategy.deploy", source=WATCHER, timeout=300)
    watcher = c.call("strategy.start", name="watcher", instrument=INSTRUMENT, config={})["id"]
    wait_for(lambda: len(load_recorded(tb_home.root, INSTRUMENT)) >= 150, timeout=60, what="150 recorded candles")
    c.call("strategy.stop", id=watcher)
    assert before.stop() == 0
    recorded_before = len(load_recorded(tb_home.root, INSTRUMENT))
    # the engine the notebook talks to (with no strategy running, it subscribes to no market: nothing is recorded
    # until the notebook starts its strategy, see the module docstring)
    c = engine_proc(exchange="sim").client()
    wait_for(lambda: c.call("engine.status")["exchange"]["reconciliations"] >= 1, timeout=30, what="reconciliation")
    tracked = {p: p.read_bytes() for p in NOTEBOOKS.rglob("*") if p.is_file()}
    out_path = tmp_path / "research.out.ipynb"
    try:
        papermill.execute_notebook(str(NOTEBOOK), str(out_path), parameters=PARAMETERS,
                                   kernel_name=ensure_kernel_spec(), cwd=str(tmp_path), progress_bar=False,
                                   execution_timeout=600)
    except papermill.PapermillExecutionError as exc:
        pytest.fail(f"research.ipynb failed in cell {exc.cell_index}: {exc.ename}: {exc.evalue}\n"
                    f"{''.join(exc.traceback)[-4000:]}")
    nb = nbformat.read(out_path, as_version=4)
    errors = [o for cell in nb.cells if cell.cell_type == "code" for o in cell.outputs if o.output_type == "error"]
    assert errors == []

    # the strategy cell ran clean (no self-containment warning) and the backtests, sweep and heatmap rendered
    assert cell_text(cell_with(nb, "%%tradebaas_strategy")) == ""
    assert "net_pnl" in cell_text(cell_with(nb, "bt_demo = tb.backtest"))
    sweep = cell_text(cell_with(nb, "tb.sweep("))
    assert "period" in sweep and "hold" in sweep
    images = [o for cell in nb.cells if cell.cell_type == "code" for o in cell.outputs
              if "image/png" in (o.get("data") or {})]
    assert len(images) >= 2, "the equity curve and the sweep heatmap"
    recorded = cell_text(cell_with(nb, "load_recorded("))
    assert f"{recorded_before} recorded candles" in recorded and "demo settings, recorded candles" in recorded, recorded

    # the deploy answer, the start, the panel, a first trade
    deployed = re.search(r"deployed trend_dip version ([0-9a-f]{12}): vetted on (\d+) candles",
                         cell_text(cell_with(nb, "eng.deploy(TrendDip)")))
    assert deployed is not None
    started = re.search(r"started (\S+): running", cell_text(cell_with(nb, 'eng.start("trend_dip"')))
    assert started is not None
    sid = started.group(1)
    assert any("application/vnd.jupyter.widget-view+json" in (o.get("data") or {})
               for o in cell_with(nb, "tb.ControlPanel(eng)").outputs)
    first = cell_text(cell_with(nb, "def wait_until("))
    assert "a closed trade: after" in first, first

    # the live change and a trade under config version 2
    assert f"{sid}: config version 2, hold = 5 minutes" in cell_text(cell_with(nb, "eng.set(sid"))
    waited = cell_text(cell_with(nb, "under config version"))
    assert "a closed trade under config version 2: after" in waited, waited

    # the comparison: printed, and nothing unexplained
    compared = cell_text(cell_with(nb, "tb.compare(eng, sid)"))
    assert f"trend_dip ({sid}) live vs backtest" in compared
    assert "unexplained: 0" in compared, compared
    assert "stopped" in cell_text(nb.cells[-1])

    # the same facts from the engine's journal
    info = c.call("strategy.get", id=sid)
    assert info["name"] == "trend_dip" and info["version"].startswith(deployed.group(1))
    assert info["config_version"] == 2 and info["config"]["hold"] == 5 and info["state"] == "stopped"
    trades = [t for t in c.call("trades.list", strategy=sid) if t["state"] == "closed"]
    assert {t["config_version"] for t in trades} == {1, 2}
    comparison = Comparison.from_json(c.call("strategy.compare", id=sid, timeout=120))
    assert comparison.summary["matched"] >= 2 and comparison.unexplained == [], comparison

    # the run left the notebooks folder as it was (no outputs saved into the tracked notebook, no new files)
    assert {p: p.read_bytes() for p in NOTEBOOKS.rglob("*") if p.is_file()} == tracked

@pytest.fixture(autouse=True)
def _fresh_home(tb_home: Home) -> Home:
    """The kernel inherits TRADEBAAS_HOME (tb_home): the notebook's `tb.connect()` and `load_recorded()` find the
    test's engine and its recordings, and nothing real."""
    return tb_home
