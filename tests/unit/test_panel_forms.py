"""The start form: generated from the declared parameters, validated client-side, engine errors shown inline."""

from __future__ import annotations

from typing import Any

import pytest

from tradebaas.notebook.forms import StartForm, changed_only, error_key, parse_param, validate

from .test_panel_fakes import RAZOR_PARAMS

FLOAT = {"name": "x", "type": "float", "default": 1.0, "minimum": 0, "maximum": 10}
INT = {"name": "n", "type": "int", "default": 1, "minimum": 0, "maximum": 5}


@pytest.mark.parametrize(("param", "raw", "value"), [
    (FLOAT, "2.5", 2.5), (FLOAT, " 0 ", 0.0), (FLOAT, 3, 3), (INT, "4", 4), (INT, "3.0", 3),
    ({"name": "b", "type": "bool", "default": False}, "true", True),
    ({"name": "b", "type": "boolean", "default": False}, False, False),
    ({"name": "s", "type": "string", "default": "a"}, " BTC ", "BTC"),
    ({"name": "c", "type": "string", "default": "a", "choices": ["a", "b"]}, "b", "b"),
])
def test_valid_values_parse(param: dict[str, Any], raw: Any, value: Any) -> None:
    assert parse_param(param, raw) == (value, None)


@pytest.mark.parametrize(("param", "raw", "message"), [
    (FLOAT, "abc", "must be a number"), (FLOAT, "11", "must be <= 10"), (FLOAT, "-1", "must be >= 0"),
    (FLOAT, "nan", "must be a finite number"), (INT, "2.5", "must be a whole number"),
    (INT, "x", "must be a whole number"),
    ({"name": "b", "type": "bool", "default": False}, "maybe", "must be true or false"),
    ({"name": "c", "type": "string", "default": "a", "choices": ["a", "b"]}, "z", "must be one of a, b"),
])
def test_invalid_values_are_explained(param: dict[str, Any], raw: Any, message: str) -> None:
    assert parse_param(param, raw) == (None, message)


def test_type_is_inferred_from_the_default_when_undeclared() -> None:
    assert parse_param({"name": "n", "default": 3}, "2.5") == (None, "must be a whole number")


def test_validate_fills_defaults_and_refuses_unknown_keys() -> None:
    config, errors = validate(RAZOR_PARAMS, {"rsiOversold": "45", "bogus": 1})
    assert config["rsiOversold"] == 45.0 and config["tradeSize"] == 100.0
    assert errors == {"bogus": "unknown parameter"}


def test_only_changed_values_are_sent() -> None:
    config, _ = validate(RAZOR_PARAMS, {"rsiOversold": "45", "tradeSize": "100"})
    assert changed_only(RAZOR_PARAMS, config) == {"rsiOversold": 45.0}


def test_engine_error_is_attached_to_the_field_it_names() -> None:
    names = ["rsiOversold", "rsiOverbought", "tradeSize"]
    assert error_key("config razor.rsiOverbought=120: out of range (allowed: a number in [0, 100])", None,
                     names) == "rsiOverbought"
    assert error_key("bad", {"key": "tradeSize"}, names) == "tradeSize"
    assert error_key("unknown config key 'foo'", None, names) is None


def _form(submitted: list[tuple[str, str, dict[str, Any]]]) -> StartForm:
    return StartForm([{"name": "razor", "description": "scalper", "params": RAZOR_PARAMS}],
                     lambda *args: submitted.append(args))


def test_form_shows_defaults_and_has_a_start_button() -> None:
    form = _form([])
    assert form.start_button.description == "Start"
    assert form.fields["rsiOversold"].value == "40.0"
    assert form.fields["breakEvenEnabled"].value is True
    assert form.instrument.value == "BTC_USDC-PERPETUAL"
    assert "instrument" not in form.fields  # sent as strategy.start's own argument


def test_form_explains_an_invalid_value_inline_and_does_not_submit() -> None:
    submitted: list[Any] = []
    form = _form(submitted)
    form.fields["rsiOversold"].value = "lots"
    assert "must be a number" in form.errors["rsiOversold"].value  # as the user types
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


def test_form_shows_the_engines_refusal_next_to_the_field() -> None:
    form = _form([])
    form.show_engine_error("config razor.tradeSize=5: below the instrument's minimum", {"key": "tradeSize"})
    assert "engine: config razor.tradeSize=5" in form.message.value
    assert "below the instrument" in form.errors["tradeSize"].value
