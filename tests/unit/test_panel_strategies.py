"""The panel and the strategies of issue 11: versions on every row, errors with their traceback, where each
strategy comes from, and changing a running strategy's parameters from its edit form -- against the fake engine,
whose ``strategy.set`` validates with the engine's ``validate_config`` and bumps the config version."""

from __future__ import annotations

import html
from collections.abc import Iterator

import pytest

from tradebaas.notebook.panel import ControlPanel
from tradebaas.rpc.protocol import INVALID_PARAMS, RpcError
from tradebaas.strategies.params import validate_config
from tradebaas.strategies.registry import get_strategy

from .test_panel_fakes import RAZOR_VERSION, FakeEngine, broken_file_entry, strategy_row, wait_for

TRACEBACK = ('Traceback (most recent call last):\n  File "<deployed 1a2b3c4d5e6f>", line 12, in on_candle\n'
             "    ratio = candle.volume / 0\nZeroDivisionError: division by zero\n")


@pytest.fixture
def eng() -> FakeEngine:
    return FakeEngine()


def open_panel(eng: FakeEngine) -> ControlPanel:
    panel = ControlPanel(eng, max_updates_per_second=20, ping_every_s=0.05)
    wait_for(lambda: panel.state.connection == "connected" and panel.form is not None, what="first snapshot")
    return panel


@pytest.fixture
def panel(eng: FakeEngine) -> Iterator[ControlPanel]:
    p = open_panel(eng)
    yield p
    p.close()


def row_html(panel: ControlPanel, sid: str = "razor-1") -> str:
    return panel.row(sid).html.value if sid in panel._rows else ""


def test_each_row_shows_its_code_version_and_config_version(panel: ControlPanel) -> None:
    text = wait_for(lambda: row_html(panel), what="row")
    assert f"v {RAZOR_VERSION[:12]}" in text and RAZOR_VERSION[:13] not in text.replace(RAZOR_VERSION, "")
    assert f'title="code version {RAZOR_VERSION}"' in text  # the full one on hover
    assert "cfg 1" in text


def test_a_strategy_in_error_shows_its_error_and_the_traceback_behind_details(eng: FakeEngine) -> None:
    eng.strategies = [strategy_row(state="error", error=TRACEBACK, state_reason="on_candle raised")]
    panel = open_panel(eng)
    try:
        text = wait_for(lambda: row_html(panel), what="row")
        assert "tb-state-error" in text
        assert '<span class="tb-strategy-error"' in text and "ZeroDivisionError: division by zero" in text
        assert "ratio = candle.volume" not in text  # the row has the summary; the traceback is behind details
        details = panel.row("razor-1").details.value
        assert "<details" in details and "<summary" in details and "details</summary>" in details
        assert "ratio = candle.volume / 0" in html.unescape(details)
        assert panel.row("razor-1").edit.disabled
    finally:
        panel.close()


def test_a_running_strategy_has_no_error_details(panel: ControlPanel) -> None:
    wait_for(lambda: row_html(panel), what="row")
    assert panel.row("razor-1").details.value == ""


def test_the_start_form_lists_broken_and_deployed_strategies(eng: FakeEngine) -> None:
    eng.available.append(broken_file_entry("broken"))
    answer = eng.facade().deploy(
        "from tradebaas.strategies.base import BaseStrategy, Decision, Param\n"
        "class Mine(BaseStrategy):\n    name = 'mine'\n    params = (Param('n', int, 3, 1, 10, 'n'),)\n"
        "    def on_candle(self, candle, context):\n        return Decision(candle.ts_ms, 'none', {}, {}, ())\n")
    panel = open_panel(eng)
    try:
        assert panel.form is not None
        labels = {value: label for label, value in panel.form.choice.options}
        assert labels["mine"] == f"mine · deployed · {answer['version'][:12]}"
        assert labels["broken"] == "broken · file · does not load"
        assert panel.start("broken") is False
        assert eng.called("strategy.start") == []
    finally:
        panel.close()


def open_edit(panel: ControlPanel, sid: str = "razor-1") -> None:
    wait_for(lambda: sid in panel._rows, what="row")
    panel.row(sid).edit.click()
    wait_for(lambda: panel.edit_form is not None and panel.edit_form.strategy_id == sid, what="edit form")
    assert panel.row(sid).edit_box.children == (panel.edit_form,)  # under the row it is about


def test_edit_changes_a_running_strategys_parameter_as_a_new_config_version(panel: ControlPanel,
                                                                            eng: FakeEngine) -> None:
    open_edit(panel)
    form = panel.edit_form
    assert form is not None and form.fields["rsiOversold"].value == "40.0"  # its current config
    form.set_values({"rsiOversold": 45})
    assert form.submit() is True
    wait_for(lambda: eng.called("strategy.set"), what="strategy.set")
    assert eng.called("strategy.set") == [{"id": "razor-1", "config": {"rsiOversold": 45.0}, "apply_to_open": False}]
    wait_for(lambda: "config version 2 from the next candle" in form.message.value, what="new config version")
    wait_for(lambda: "cfg 2" in row_html(panel), what="row shows the new config version")
    assert panel.state.strategies["razor-1"]["config"]["rsiOversold"] == 45.0


def test_apply_to_open_is_sent_when_ticked(panel: ControlPanel, eng: FakeEngine) -> None:
    open_edit(panel)
    form = panel.edit_form
    assert form is not None
    form.set_values({"stopLossPercent": 0.4})
    form.apply_to_open.value = True
    form.apply_button.click()
    wait_for(lambda: eng.called("strategy.set"), what="strategy.set")
    assert eng.called("strategy.set")[0]["apply_to_open"] is True


def test_an_invalid_edit_never_reaches_the_engine_and_is_explained_in_its_words(panel: ControlPanel,
                                                                              eng: FakeEngine) -> None:
    open_edit(panel)
    form = panel.edit_form
    assert form is not None
    form.set_values({"rsiOversold": 400})
    assert form.submit() is False
    with pytest.raises(RpcError) as refused:
        eng.call("strategy.set", id="razor-1", config={"rsiOversold": "400"})  # as typed
    assert refused.value.code == INVALID_PARAMS
    assert html.escape(refused.value.message) in form.errors["rsiOversold"].value
    assert eng.called("strategy.set") == [{"id": "razor-1", "config": {"rsiOversold": "400"}}]  # only ours above


def test_the_engines_refusal_of_an_edit_is_shown_inline(panel: ControlPanel, eng: FakeEngine) -> None:
    eng.errors["strategy.set"] = RpcError(INVALID_PARAMS, "config razor.rsiOversold=45: must be below rsiOverbought")
    open_edit(panel)
    form = panel.edit_form
    assert form is not None
    form.set_values({"rsiOversold": 45})
    form.submit()
    wait_for(lambda: "must be below rsiOverbought" in form.message.value, what="engine message")
    assert "must be below" in form.errors["rsiOversold"].value
    assert "cfg 1" in row_html(panel)


def test_the_edit_button_toggles_the_form_and_close_sends_nothing(panel: ControlPanel, eng: FakeEngine) -> None:
    open_edit(panel)
    panel.row("razor-1").edit.click()  # again: closes
    assert panel.edit_form is None and panel.row("razor-1").edit_box.children == ()
    open_edit(panel)
    assert panel.edit_form is not None
    panel.edit_form.close_button.click()
    assert panel.edit_form is None and panel.row("razor-1").edit_box.children == ()
    assert eng.called("strategy.set") == []


def test_the_edit_form_follows_the_running_version_of_a_deployed_strategy(eng: FakeEngine) -> None:
    """A deployed strategy's parameters come from the engine (``strategy.get``), not from the built-ins."""
    eng.facade().deploy(
        "from tradebaas.strategies.base import BaseStrategy, Decision, Param\n"
        "class Mine(BaseStrategy):\n    name = 'mine'\n    params = (Param('n', int, 3, 1, 10, 'n'),)\n"
        "    def on_candle(self, candle, context):\n        return Decision(candle.ts_ms, 'none', {}, {}, ())\n")
    eng.strategies = [strategy_row("mine-1", name="mine", config={"n": 5}, version="cd" * 32)]
    panel = open_panel(eng)
    try:
        open_edit(panel, "mine-1")
        form = panel.edit_form
        assert form is not None and set(form.fields) == {"n"} and form.fields["n"].value == "5"
        form.set_values({"n": 11})
        assert form.submit() is False and "out of range" in form.errors["n"].value
        form.set_values({"n": 7})
        assert form.submit() is True
        wait_for(lambda: eng.called("strategy.set"), what="strategy.set")
        assert eng.called("strategy.set")[0]["config"] == {"n": 7}
        wait_for(lambda: "cfg 2" in row_html(panel, "mine-1"), what="new config version")
    finally:
        panel.close()


def test_the_fakes_strategy_set_merges_validates_and_bumps_the_version(eng: FakeEngine) -> None:
    """The fake keeps the engine's rules, or the panel tests above would prove nothing."""
    answer = eng.call("strategy.set", id="razor-1", config={"rsiOversold": "45"})
    assert answer["config"] == validate_config(get_strategy("razor"), {"rsiOversold": 45})
    assert answer["config_version"] == 2
    with pytest.raises(RpcError, match="unknown config key 'rsiOversol'"):
        eng.call("strategy.set", id="razor-1", config={"rsiOversol": 1})
    assert eng.call("strategy.get", id="razor-1")["config_version"] == 2


def options_of(panel: ControlPanel) -> list[str]:
    return [value for _label, value in panel.form.choice.options] if panel.form is not None else []


def test_a_strategy_deployed_after_the_panel_opened_appears_in_the_start_form(panel: ControlPanel,
                                                                              eng: FakeEngine) -> None:
    assert "mine" not in options_of(panel)
    eng.facade().deploy(
        "from tradebaas.strategies.base import BaseStrategy, Decision, Param\n"
        "class Mine(BaseStrategy):\n    name = 'mine'\n    params = (Param('n', int, 3, 1, 10, 'n'),)\n"
        "    def on_candle(self, candle, context):\n        return Decision(candle.ts_ms, 'none', {}, {}, ())\n")
    eng.push("strategies", {"type": "state", "strategy": strategy_row("mine-1", name="mine", config={"n": 3})})
    wait_for(lambda: "mine" in options_of(panel), what="the deployed strategy in the dropdown")


def test_the_refresh_button_fetches_the_strategy_list_again(panel: ControlPanel, eng: FakeEngine) -> None:
    eng.available.append(broken_file_entry("later"))
    assert panel.form is not None
    before = len(eng.called("strategy.available"))
    panel.form.refresh_button.click()
    wait_for(lambda: "later" in options_of(panel), what="the new file in the dropdown")
    assert len(eng.called("strategy.available")) == before + 1
