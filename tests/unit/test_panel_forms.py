"""The start and edit forms: generated from the engine's parameter schema, checked with the engine's own rules and
words, engine errors shown inline; the dropdown says where each strategy comes from."""

from __future__ import annotations

import html
from typing import Any

import pytest

from tradebaas.notebook.forms import EditForm, StartForm, changed_only, error_key, parse_param, validate
from tradebaas.strategies.base import Param
from tradebaas.strategies.params import ConfigError, params_from_schema, validate_config
from tradebaas.strategies.registry import get_strategy

from .test_panel_fakes import RAZOR_PARAMS, RAZOR_VERSION, available_answer, broken_file_entry, strategy_row


def one(**schema: Any) -> Param:
    """A parameter as the form gets it: one entry of ``strategy.available``'s ``params``."""
    return params_from_schema([{"minimum": None, "maximum": None, "help": "", "choices": None, **schema}])[0]


FLOAT = one(name="x", type="number", default=1.0, minimum=0, maximum=10)
INT = one(name="n", type="integer", default=1, minimum=0, maximum=5)
BOOL = one(name="b", type="boolean", default=False)
STR = one(name="s", type="string", default="a")
CHOICE = one(name="c", type="string", default="a", choices=["a", "b"])
RAZOR = params_from_schema(RAZOR_PARAMS)


@pytest.mark.parametrize(("param", "raw", "value"), [
    (FLOAT, "2.5", 2.5), (FLOAT, " 0 ", 0.0), (FLOAT, 3, 3.0), (INT, "4", 4), (INT, "3.0", 3),
    (BOOL, "true", True), (BOOL, False, False), (BOOL, "y", True), (BOOL, "OFF", False),
    (STR, " BTC ", "BTC"), (CHOICE, "b", "b"),
])
def test_valid_values_parse(param: Param, raw: Any, value: Any) -> None:
    parsed, error = parse_param(param, raw)
    assert error is None
    assert parsed == value and type(parsed) is type(value)


@pytest.mark.parametrize(("param", "raw", "message"), [
    (FLOAT, "abc", "config razor.x='abc': not a number (allowed: a number in [0, 10])"),
    (FLOAT, "11", "config razor.x='11': out of range (allowed: a number in [0, 10])"),
    (FLOAT, "-1", "config razor.x='-1': out of range (allowed: a number in [0, 10])"),
    (FLOAT, "nan", "config razor.x='nan': not a finite number (allowed: a number in [0, 10])"),
    (INT, "2.5", "config razor.n='2.5': not an integer (allowed: an integer in [0, 5])"),
    (INT, "x", "config razor.n='x': not an integer (allowed: an integer in [0, 5])"),
    (BOOL, "maybe", "config razor.b='maybe': not a boolean (allowed: true or false)"),
    (STR, "  ", "config razor.s='  ': not a non-empty string (allowed: str in [-inf, inf])"),
    (CHOICE, "z", "config razor.c='z': not an allowed value (allowed: one of 'a', 'b')"),
])
def test_invalid_values_are_explained_in_the_engines_words(param: Param, raw: Any, message: str) -> None:
    assert parse_param(param, raw, "razor") == (None, message)


RAW_VALUES = ["yes", "y", "t", "off", "No", "1", "0", "2", "3.0", "2.5", " 7 ", "-1", "101", "1e9", "abc", "",
              "nan", "inf", True, False, 0, 1, 1.5, 150]


@pytest.mark.parametrize("name", [p.name for p in RAZOR if p.name != "instrument"])
def test_the_form_accepts_and_refuses_exactly_what_the_engine_does(name: str) -> None:
    """The schema went through JSON as over RPC; the verdict and the words must still be the engine's."""
    razor = get_strategy("razor")
    for raw in RAW_VALUES:
        config, errors = validate(RAZOR, {name: raw}, "razor")
        try:
            expected = validate_config(razor, {name: raw})
        except ConfigError as exc:
            assert errors == {name: str(exc)}, raw
        else:
            assert errors == {}, raw
            assert config == expected and type(config[name]) is type(expected[name]), raw


def test_unreadable_schema_is_refused_rather_than_guessed() -> None:
    with pytest.raises(ConfigError, match="'n' has type 'int'"):
        params_from_schema([{"name": "n", "type": "int", "default": 3}])
    with pytest.raises(ConfigError, match="without a name"):
        params_from_schema([{"type": "number", "default": 3.0}])


def test_validate_fills_defaults_and_refuses_unknown_keys() -> None:
    config, errors = validate(RAZOR, {"rsiOversold": "45", "rsiOversol": 1}, "razor")
    assert config["rsiOversold"] == 45.0 and config["tradeSize"] == 100.0
    assert list(errors) == ["rsiOversol"]
    assert errors["rsiOversol"].startswith("unknown config key 'rsiOversol' for strategy razor; "
                                           "did you mean 'rsiOversold'?")


def test_only_changed_values_are_sent() -> None:
    config, _ = validate(RAZOR, {"rsiOversold": "45", "tradeSize": "100"})
    assert changed_only(RAZOR, config) == {"rsiOversold": 45.0}


def test_engine_error_is_attached_to_the_field_it_names() -> None:
    names = ["rsiOversold", "rsiOverbought", "tradeSize"]
    assert error_key("config razor.rsiOverbought=120: out of range (allowed: a number in [0, 100])", None,
                     names) == "rsiOverbought"
    assert error_key("bad", {"key": "tradeSize"}, names) == "tradeSize"
    assert error_key("unknown config key 'foo'", None, names) is None


def _form(submitted: list[tuple[str, str, dict[str, Any]]], strategies: Any = None) -> StartForm:
    return StartForm(available_answer() if strategies is None else strategies, lambda *args: submitted.append(args))


def test_form_shows_defaults_and_has_a_start_button() -> None:
    form = _form([])
    assert form.choice.value == "razor"
    assert form.start_button.description == "Start" and not form.start_button.disabled
    assert form.fields["rsiOversold"].value == "40.0"
    assert form.fields["maxDailyTrades"].value == "150"
    assert form.fields["breakEvenEnabled"].value is True
    assert form.instrument.value == "BTC_USDC-PERPETUAL"
    assert "instrument" not in form.fields  # sent as strategy.start's own argument
    assert form.params == get_strategy("razor").params


def test_form_explains_an_invalid_value_inline_and_does_not_submit() -> None:
    submitted: list[Any] = []
    form = _form(submitted)
    form.fields["rsiOversold"].value = "lots"
    assert html.escape("config razor.rsiOversold='lots': not a number") in form.errors["rsiOversold"].value
    assert form.submit() is False
    assert submitted == []
    assert "rsiOversold" in form.message.value
    form.fields["rsiOversold"].value = "30"
    assert form.errors["rsiOversold"].value == ""


def test_form_submits_changed_values_only() -> None:
    submitted: list[Any] = []
    form = _form(submitted)
    form.set_values({"rsiOversold": 48, "breakEvenEnabled": False, "instrument": "BTC-PERPETUAL"})
    assert form.submit() is True
    assert submitted == [("razor", "BTC-PERPETUAL", {"rsiOversold": 48.0, "breakEvenEnabled": False})]


def test_switching_strategy_rebuilds_the_fields_with_its_rules() -> None:
    submitted: list[Any] = []
    form = _form(submitted)
    form.choice.value = "ema_cross"
    assert set(form.fields) == {"fast", "slow", "tradeSize"}
    form.fields["fast"].value = "9.5"
    assert "not an integer" in form.errors["fast"].value
    form.set_values({"fast": 5})
    assert form.submit() is True
    assert submitted == [("ema_cross", "BTC_USDC-PERPETUAL", {"fast": 5})]


def test_a_schema_the_form_cannot_read_disables_start_and_says_why() -> None:
    submitted: list[Any] = []
    form = _form(submitted, [{"name": "odd", "description": "", "params": [
        {"name": "n", "type": "int", "default": 3}]}])
    assert form.start_button.disabled and form.fields == {}
    assert "cannot build the form for odd" in form.message.value and "&#x27;int&#x27;" in form.message.value
    assert form.submit() is False  # a script pressing Start cannot send what the form could not check
    assert submitted == []


def test_form_shows_the_engines_refusal_next_to_the_field() -> None:
    form = _form([])
    form.show_engine_error("config razor.tradeSize=5: below the instrument's minimum", {"key": "tradeSize"})
    assert "engine: config razor.tradeSize=5" in form.message.value
    assert "below the instrument" in form.errors["tradeSize"].value


# -- where strategies come from, in the dropdown ---------------------------------------------------------------


def test_the_dropdown_lists_every_strategy_with_its_source_and_version() -> None:
    form = _form([], available_answer() + [broken_file_entry("broken")])
    labels = dict((value, label) for label, value in form.choice.options)
    assert labels["razor"] == f"razor · built-in · {RAZOR_VERSION[:12]}"
    assert labels["ema_cross"].startswith("ema_cross · built-in · ")
    assert labels["broken"] == "broken · file · does not load"
    assert form.choice.value == "razor"


def test_a_broken_file_is_listed_with_its_error_and_cannot_be_started() -> None:
    submitted: list[Any] = []
    form = _form(submitted, available_answer() + [broken_file_entry("broken")])
    form.choice.value = "broken"
    assert form.start_button.disabled and form.fields == {}
    assert "broken cannot be started: ModuleNotFoundError: No module named" in html.unescape(form.message.value)
    details = form.fields_box.children[0].value
    assert "<details" in details and "<summary" in details and "broken.py&quot;, line 3" in details
    assert form.submit() is False and submitted == []
    form.choice.value = "razor"  # back to a good one: startable again
    assert not form.start_button.disabled and "rsiOversold" in form.fields


def test_an_older_engines_entries_are_listed_by_name() -> None:
    form = _form([], [{"name": "razor", "description": "", "params": RAZOR_PARAMS}])
    assert form.choice.options == (("razor", "razor"),)


# -- the edit form ---------------------------------------------------------------------------------------------


def _edit_form(sent: list[Any], **row: Any) -> EditForm:
    strategy = strategy_row(**row)
    return EditForm(strategy, RAZOR_PARAMS, lambda *args: sent.append(args))


def test_the_edit_form_is_prefilled_with_the_current_config() -> None:
    config = validate_config(get_strategy("razor"), {"rsiOversold": 35, "breakEvenEnabled": False})
    form = _edit_form([], config=config, config_version=4)
    assert form.fields["rsiOversold"].value == "35.0"
    assert form.fields["breakEvenEnabled"].value is False
    assert form.fields["tradeSize"].value == "100.0"
    assert "instrument" not in form.fields  # a running strategy keeps its market
    assert "config version 4" in form.title.value and form.apply_to_open.value is False


def test_the_edit_form_shows_an_int_parameter_as_an_int_even_from_a_json_float() -> None:
    # a config that went through JSON (or a script) may hold 0.0 for an int parameter: the field reads "0"
    config = {**validate_config(get_strategy("razor"), {}), "breakEvenOffsetTicks": 0.0, "maxDailyTrades": 150.0}
    form = _edit_form([], config=config)
    assert form.fields["breakEvenOffsetTicks"].value == "0"
    assert form.fields["maxDailyTrades"].value == "150"
    assert form.fields["stopLossPercent"].value == "0.5"  # a float parameter keeps its decimals
    form.set_values({"maxConcurrentTrades": 2.0})
    assert form.fields["maxConcurrentTrades"].value == "2"


def test_apply_sends_the_changed_keys_only() -> None:
    sent: list[Any] = []
    form = _edit_form(sent)
    form.set_values({"rsiOversold": 45, "tradeSize": 100})  # tradeSize is what it already is
    assert form.submit() is True
    assert sent == [("razor-1", {"rsiOversold": 45.0}, False)]
    form.apply_to_open.value = True
    form.set_values({"stopLossPercent": 0.4})
    assert form.submit() is True
    assert sent[1] == ("razor-1", {"rsiOversold": 45.0, "stopLossPercent": 0.4}, True)


def test_the_edit_form_uses_the_start_forms_rules_and_words() -> None:
    sent: list[Any] = []
    form = _edit_form(sent)
    form.fields["maxDailyTrades"].value = "2.5"
    _config, errors = validate(RAZOR, {"maxDailyTrades": "2.5"}, "razor")
    assert html.escape(errors["maxDailyTrades"]) in form.errors["maxDailyTrades"].value
    assert form.submit() is False and sent == []
    assert "1 invalid value(s): maxDailyTrades" in form.message.value


def test_nothing_changed_sends_nothing() -> None:
    sent: list[Any] = []
    form = _edit_form(sent)
    assert form.submit() is False and sent == []
    assert "nothing changed" in form.message.value


def test_an_applied_change_becomes_the_new_baseline() -> None:
    sent: list[Any] = []
    form = _edit_form(sent)
    form.set_values({"rsiOversold": 45})
    form.submit()
    new_config = validate_config(get_strategy("razor"), {"rsiOversold": 45})
    form.show_applied(strategy_row(config=new_config, config_version=2))
    assert "config version 2 from the next candle" in form.message.value and "config version 2" in form.title.value
    assert form.submit() is False and len(sent) == 1  # 45 is now the current value


def test_the_edit_form_shows_the_engines_refusal_next_to_the_field() -> None:
    form = _edit_form([])
    form.show_engine_error("config razor.rsiOversold=45: must be below rsiOverbought")
    assert "engine: config razor.rsiOversold=45" in form.message.value
    assert "must be below" in form.errors["rsiOversold"].value


def test_a_new_strategy_list_keeps_the_choice_and_what_was_typed() -> None:
    form = _form([])
    form.set_values({"rsiOversold": 33})
    newer = available_answer() + [broken_file_entry("broken")]
    assert form.update_strategies(newer) is True
    assert form.choice.value == "razor" and form.fields["rsiOversold"].value == "33"
    assert "broken" in [value for _label, value in form.choice.options]
    assert form.update_strategies(newer) is False


def test_a_new_version_of_the_chosen_strategy_rebuilds_its_fields() -> None:
    form = _form([])
    form.set_values({"rsiOversold": 33})
    changed = [dict(a, version="ef" * 32) if a["name"] == "razor" else a for a in available_answer()]
    form.update_strategies(changed)
    assert form.choice.value == "razor" and form.fields["rsiOversold"].value == "40.0"
    assert dict((v, k) for k, v in form.choice.options)["razor"].endswith("efefefefefef")
