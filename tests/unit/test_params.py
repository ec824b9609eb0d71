"""Strategy config validation and its schema, from the declared parameters."""

from __future__ import annotations

import pytest

from tradebaas.errors import UserError
from tradebaas.strategies.params import ConfigError, parse_set_options, schema, validate_config
from tradebaas.strategies.razor import Razor


def test_cli_strings_are_coerced_to_the_declared_types():
    cfg = validate_config(Razor, {"stopLossPercent": "0.4", "maxDailyTrades": "20", "breakEvenEnabled": "false",
                                  "adaptiveRiskEnabled": "TRUE"})
    assert cfg["stopLossPercent"] == 0.4 and cfg["maxDailyTrades"] == 20
    assert cfg["breakEvenEnabled"] is False and cfg["adaptiveRiskEnabled"] is True


def test_integral_floats_are_accepted_for_integers_but_fractions_are_not():
    assert validate_config(Razor, {"maxDailyTrades": 3.0})["maxDailyTrades"] == 3
    with pytest.raises(ConfigError, match="maxDailyTrades"):
        validate_config(Razor, {"maxDailyTrades": 3.5})


def test_zero_is_allowed():
    cfg = validate_config(Razor, {"cooldownMinutes": 0, "maxDailyTrades": "0", "stopLossPercent": 0})
    assert cfg["cooldownMinutes"] == 0 and cfg["maxDailyTrades"] == 0 and cfg["stopLossPercent"] == 0


def test_unknown_config_key_is_rejected():
    with pytest.raises(ConfigError, match=r"unknown config key 'stopLossPercentt'.*did you mean 'stopLossPercent'"):
        validate_config(Razor, {"stopLossPercentt": 1})


def test_out_of_range_names_the_key_and_the_allowed_range():
    with pytest.raises(ConfigError) as err:
        validate_config(Razor, {"rsiOversold": 101})
    assert "rsiOversold" in str(err.value) and "[0, 100]" in str(err.value)


def test_negative_values_are_rejected():
    with pytest.raises(ConfigError, match="tradeSize"):
        validate_config(Razor, {"tradeSize": -1})


def test_wrong_types_are_rejected_with_a_clear_message():
    with pytest.raises(ConfigError, match="not a number"):
        validate_config(Razor, {"tradeSize": "lots"})
    with pytest.raises(ConfigError, match="not a boolean"):
        validate_config(Razor, {"breakEvenEnabled": "maybe"})
    with pytest.raises(ConfigError, match="boolean is not a number"):
        validate_config(Razor, {"tradeSize": True})
    with pytest.raises(ConfigError, match="finite"):
        validate_config(Razor, {"tradeSize": "nan"})


def test_config_error_is_a_user_error():
    assert issubclass(ConfigError, UserError)


def test_validation_is_idempotent_and_fills_defaults():
    cfg = validate_config(Razor, {"tradeSize": "50"})
    assert validate_config(Razor, cfg) == cfg and cfg["takeProfitPercent"] == 0.65


def test_set_options_parse_key_value_pairs():
    assert parse_set_options(["a=1", " b = x=y "]) == {"a": "1", "b": "x=y"}
    with pytest.raises(ConfigError, match="key=value"):
        parse_set_options(["novalue"])


def test_schema_describes_every_parameter_for_the_form():
    s = schema(Razor)
    assert s["additionalProperties"] is False and list(s["properties"])[0] == "instrument"
    sl = s["properties"]["stopLossPercent"]
    assert sl == {"type": "number", "default": 0.5, "minimum": 0, "maximum": 50, "description": sl["description"]}
    assert s["properties"]["breakEvenEnabled"]["type"] == "boolean"
    assert s["properties"]["maxDailyTrades"]["type"] == "integer"
