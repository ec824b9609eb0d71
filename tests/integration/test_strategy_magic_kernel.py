"""``%%tradebaas_strategy`` in a real Jupyter kernel (the project's kernel spec, driven by nbclient as papermill
and "Run All" drive it): the warning for a cell that does not stand on its own reaches the cell's output, the
captured source is the cell's text, and a failing strategy cell stops the run with the cell's own traceback."""

from __future__ import annotations

import textwrap
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

from tests.browser.harness import ensure_kernel_spec
from tradebaas.strategies.loader import source_version

GOOD = textwrap.dedent("""
    from tradebaas.strategies.base import BaseStrategy, Decision, Param

    class Good(BaseStrategy):
        name = "good"
        params = (Param("n", int, 3, 1, 10, "a number"),)

        def on_candle(self, candle, context):
            return Decision(candle.ts_ms, "none", {}, {}, ())
    """).lstrip()
LEAKY = GOOD.replace("Good", "Leaky").replace('"good"', '"leaky"').replace('"none", {}, {}', '"none", {}, {"x": LIMIT}')


def run(cells: list[str], cwd: Path) -> tuple[nbformat.NotebookNode, CellExecutionError | None]:
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in cells])
    client = NotebookClient(nb, kernel_name=ensure_kernel_spec(), timeout=60, startup_timeout=60,
                            resources={"metadata": {"path": str(cwd)}})
    try:
        client.execute()
    except CellExecutionError as exc:
        return nb, exc
    return nb, None


def text_of(cell: nbformat.NotebookNode) -> str:
    return "".join(str(o.get("text", "")) + "".join(str(v) for v in (o.get("data") or {}).values())
                   for o in cell.get("outputs", []))


def test_the_magic_in_a_real_kernel(tmp_path: Path) -> None:
    nb, error = run([
        "import tradebaas as tb\n%load_ext tradebaas",
        "LIMIT = 3",
        "%%tradebaas_strategy\n" + LEAKY,
        "%%tradebaas_strategy\n" + GOOD + "Good.name",
        "from tradebaas.notebook.magic import captured\nprint(captured(Good).version, captured(Leaky).problem is None)",
        "%%tradebaas_strategy\n" + GOOD.replace("Good", "Bad") + "raise RuntimeError('strategy cell blew up')",
        "print('after the failing cell')",
    ], tmp_path)
    leaky, good, check, bad, after = nb.cells[2:]
    assert "Leaky: it uses LIMIT, which this cell does not define (defined in another cell)" in text_of(leaky)
    assert any(o.get("name") == "stderr" for o in leaky.outputs)  # shown right away, as a warning
    assert "'good'" in text_of(good)  # the last expression is displayed, as in a normal cell
    # the cell's text as the kernel hands it to the magic (IPython ends a cell body with a newline)
    assert f"{source_version(GOOD + 'Good.name' + chr(10))} False" in text_of(check)
    assert error is not None, "a failing strategy cell must fail the run"
    assert "strategy cell blew up" in str(error) and "RuntimeError" in str(error)
    assert after.get("outputs") == [] and after.get("execution_count") is None  # the run stopped there
    assert bad.get("execution_count") is not None


@pytest.fixture(autouse=True)
def _kernel_home(tb_home: object) -> None:
    """The kernel inherits TRADEBAAS_HOME; a fresh one keeps it away from anything real."""
