"""``%%tradebaas_strategy`` in a real IPython shell: the cell runs as usual, its source is remembered for the
strategy classes it defines, a failing cell fails, and a cell that does not stand on its own is flagged at once."""

from __future__ import annotations

import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from IPython.core.interactiveshell import InteractiveShell
from traitlets.config import Config

import tradebaas
from tradebaas.errors import EngineNotRunning, UserError
from tradebaas.notebook.magic import MAGIC_NAME, captured, undefined_names
from tradebaas.strategies.loader import source_version

from ..conftest import free_port
from .test_panel_fakes import FakeEngine, wait_for

HEADER = f"%%{MAGIC_NAME}\n"
IMPORTS = "from tradebaas.strategies.base import BaseStrategy, Decision, Param\n"


def strategy_cell(class_name: str, name: str, body: str = 'return Decision(candle.ts_ms, "none", {}, {}, ())',
                  extra: str = "", param_default: str = "3") -> str:
    """The text of a cell defining one small strategy (without the magic line)."""
    return IMPORTS + extra + textwrap.dedent(f"""
        class {class_name}(BaseStrategy):
            name = "{name}"
            params = (Param("n", int, {param_default}, 1, 10, "a number"),)

            def on_candle(self, candle, context):
                {body}
        """)


@pytest.fixture(scope="module")
def shell(tmp_path_factory: pytest.TempPathFactory) -> InteractiveShell:
    config = Config()
    config.HistoryManager.enabled = False  # never write to the developer's ~/.ipython
    ip = InteractiveShell.instance(config=config, ipython_dir=str(tmp_path_factory.mktemp("ipython")))
    tradebaas.load_ipython_extension(ip)
    return ip


@pytest.fixture
def ip(shell: InteractiveShell, capsys: pytest.CaptureFixture[str]) -> Iterator[InteractiveShell]:
    capsys.readouterr()
    yield shell


def test_a_strategy_cell_runs_as_usual_and_remembers_its_source(ip: InteractiveShell,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    cell = strategy_cell("Quiet", "quiet") + "answer = Quiet.name\nanswer\n"
    result = ip.run_cell(HEADER + cell, store_history=True)
    assert result.success
    cls = ip.user_ns["Quiet"]
    assert ip.user_ns["answer"] == "quiet"
    assert "Out" in capsys.readouterr().out  # its last expression is displayed, as in any cell
    entry = captured(cls)
    assert entry is not None
    assert entry.source == cell and entry.version == source_version(cell)
    assert (entry.class_name, entry.name, entry.problem) == ("Quiet", "quiet", None)


def test_a_failing_cell_still_fails_and_remembers_nothing(ip: InteractiveShell,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    cell = strategy_cell("Broken", "broken") + "raise RuntimeError('cell blew up')\n"
    result = ip.run_cell(HEADER + cell, store_history=True)
    assert not result.success
    assert "cell blew up" in capsys.readouterr().out  # the cell's own traceback is shown
    assert captured(ip.user_ns["Broken"]) is None  # defined before the error, as in a normal cell, not captured
    assert not ip.run_cell(HEADER + "def f(:\n").success  # a syntax error too


def test_only_classes_the_cell_defines_are_captured(ip: InteractiveShell) -> None:
    cell = "from tradebaas.strategies.razor import Razor\n" + strategy_cell("Mine", "mine")
    assert ip.run_cell(HEADER + cell).success
    assert captured(ip.user_ns["Razor"]) is None
    assert captured(ip.user_ns["Mine"]) is not None


def test_running_the_cell_again_captures_the_new_class_and_keeps_the_old(ip: InteractiveShell) -> None:
    first = strategy_cell("Twice", "twice")
    ip.run_cell(HEADER + first)
    old = ip.user_ns["Twice"]
    second = strategy_cell("Twice", "twice", param_default="4")
    ip.run_cell(HEADER + second)
    new = ip.user_ns["Twice"]
    assert new is not old
    assert captured(new).source == second and captured(old).source == first  # type: ignore[union-attr]


def test_a_name_from_another_cell_is_flagged_at_once_with_the_fix(ip: InteractiveShell,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    ip.run_cell("LIMIT_7 = 3\ndef helper_7(x):\n    return x\n")
    cell = strategy_cell("Leaky", "leaky", body='return Decision(candle.ts_ms, helper_7("none"), {}, '
                                                '{"x": LIMIT_7}, ())')
    assert ip.run_cell(HEADER + cell).success
    err = capsys.readouterr().err
    assert "Leaky: it uses helper_7, LIMIT_7, which this cell does not define (defined in another cell)" in err
    assert "move those definitions" in err and "into this cell" in err
    entry = captured(ip.user_ns["Leaky"])
    assert entry is not None and entry.problem is not None and "helper_7" in entry.problem


def test_a_cell_that_cannot_load_on_its_own_is_flagged(ip: InteractiveShell,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    ip.run_cell("DEFAULT_9 = 3\n")
    assert ip.run_cell(HEADER + strategy_cell("Needs", "needs", param_default="DEFAULT_9")).success
    err = capsys.readouterr().err
    assert "does not run on its own (it uses a name defined in another cell)" in err
    assert "NameError: name 'DEFAULT_9' is not defined" in err


def test_a_class_the_engine_would_refuse_is_flagged(ip: InteractiveShell,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    assert ip.run_cell(HEADER + strategy_cell("Spaced", "has space")).success
    assert "the engine will refuse it: strategy class Spaced: `name` must be" in capsys.readouterr().err


def test_ipython_syntax_in_the_cell_is_flagged(ip: InteractiveShell, capsys: pytest.CaptureFixture[str]) -> None:
    assert ip.run_cell(HEADER + "%time x = 1\n" + strategy_cell("Magicky", "magicky")).success
    assert "IPython syntax such as %magics" in capsys.readouterr().err


def test_a_cell_without_a_strategy_says_so(ip: InteractiveShell, capsys: pytest.CaptureFixture[str]) -> None:
    assert ip.run_cell(HEADER + "x_1 = 1\n").success
    assert "defines no strategy class" in capsys.readouterr().err


def test_arguments_are_refused(ip: InteractiveShell, capsys: pytest.CaptureFixture[str]) -> None:
    assert not ip.run_cell(f"%%{MAGIC_NAME} --name x\nx_2 = 1\n").success
    assert "takes no arguments" in capsys.readouterr().err
    assert "x_2" not in ip.user_ns


def test_loading_the_extension_twice_is_harmless(ip: InteractiveShell) -> None:
    assert ip.run_cell("%load_ext tradebaas").success
    tradebaas.load_ipython_extension(ip)
    assert MAGIC_NAME in ip.magics_manager.magics["cell"]


def _unregister(ip: InteractiveShell) -> None:
    ip.magics_manager.magics["cell"].pop(MAGIC_NAME, None)


def test_connect_registers_the_magic_inside_ipython(ip: InteractiveShell) -> None:
    _unregister(ip)
    with pytest.raises(EngineNotRunning):  # no engine there: the magic is registered all the same
        tradebaas.connect(url=f"ws://127.0.0.1:{free_port()}", token="t", timeout=0.5, reconnect=False)
    assert MAGIC_NAME in ip.magics_manager.magics["cell"]


def test_the_control_panel_registers_the_magic_inside_ipython(ip: InteractiveShell) -> None:
    _unregister(ip)
    panel = tradebaas.ControlPanel(FakeEngine())
    try:
        assert MAGIC_NAME in ip.magics_manager.magics["cell"]
        wait_for(lambda: panel.state.connection == "connected", what="snapshot")
    finally:
        panel.close()


def test_deploy_sends_exactly_the_cell(ip: InteractiveShell) -> None:
    cell = strategy_cell("Shipped", "shipped")
    ip.run_cell(HEADER + cell)
    eng = FakeEngine()
    answer = eng.facade().deploy(ip.user_ns["Shipped"])
    assert eng.called("strategy.deploy") == [{"source": cell, "name": "shipped", "timeout": 300.0}]
    assert answer["version"] == source_version(cell) and answer["class_name"] == "Shipped"


def test_a_plain_cell_class_cannot_be_deployed_and_says_how(ip: InteractiveShell) -> None:
    ip.run_cell(strategy_cell("Plain", "plain"))
    with pytest.raises(UserError, match="Put `%%tradebaas_strategy` as the first line"):
        FakeEngine().facade().deploy(ip.user_ns["Plain"])


# -- the static check on its own ---------------------------------------------------------------------------


def _names(source: str) -> list[str]:
    namespace: dict[str, Any] = {}
    exec(compile(source, "<t>", "exec"), namespace)  # noqa: S102 - test input
    return undefined_names(source, namespace)


def test_undefined_names_sees_uses_inside_methods_only_loading_would_miss() -> None:
    assert _names("class A:\n    def f(self):\n        return helper(len(X))\n") == ["helper", "X"]


def test_class_body_locals_globals_and_builtins_are_not_undefined() -> None:
    source = textwrap.dedent("""
        import math
        class A:
            k = 2
            j = k + 1
            def f(self):
                global CACHE
                CACHE = [math.pi for _ in range(self.j)]
                return [x for x in CACHE if super().__init__ or print]
        def g():
            return CACHE
        """)
    assert _names(source) == []


def test_module_file_classes_send_their_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "my_strats_mod.py").write_text(strategy_cell("FromFile", "from_file"))
    monkeypatch.syspath_prepend(str(tmp_path))
    import importlib

    module = importlib.import_module("my_strats_mod")
    try:
        eng = FakeEngine()
        eng.facade().deploy(module.FromFile)
        assert eng.called("strategy.deploy")[0]["source"] == (tmp_path / "my_strats_mod.py").read_text()
    finally:
        sys.modules.pop("my_strats_mod", None)
