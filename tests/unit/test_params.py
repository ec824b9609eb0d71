"""Strategy config validation and its schema, from the declared parameters."""

from __future__ import annotations

import json

import pytest

from tradebaas.errors import UserError
from tradebaas.strategies.base import Param
from tradebaas.strategies.params import (
    ConfigError,
    check_config,
    params_from_schema,
    params_list,
    parse_set_options,
    schema,
    validate_config,
)
from tradebaas.strategies.razor import Razor
from tradebaas.strategies.registry import available, get_strategy


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


def test_params_list_is_the_rpc_param_shape():
    first, *_ = params_list(Razor)
    assert first == {"name": "instrument", "type": "string", "default": "BTC_USDC-PERPETUAL", "minimum": None,
                     "maximum": None, "help": first["help"], "choices": None}
    assert [p["name"] for p in params_list(Razor)] == [p.name for p in Razor.params]


@pytest.mark.parametrize("name", available())
def test_params_survive_the_rpc_round_trip(name):
    """What the form rebuilds from ``strategy.available`` (after JSON) is the strategy's own declaration."""
    cls = get_strategy(name)
    assert params_from_schema(json.loads(json.dumps(params_list(cls)))) == cls.params


def test_choices_survive_the_round_trip():
    class Picky:
        name = "picky"
        params = (Param("mode", str, "fast", help="how", choices=("fast", "slow")),
                  Param("level", int, 2, 1, 3))

    rebuilt = params_from_schema(json.loads(json.dumps(params_list(Picky))))
    assert rebuilt == Picky.params
    with pytest.raises(ConfigError, match="not an allowed value"):
        validate_config(Picky, {"mode": "medium"})


def test_check_config_reports_every_refusal_and_validate_config_raises_the_first():
    config, errors = check_config(Razor.params, {"tradeSize": "lots", "maxDailyTrades": "7", "rsiOversol": 1,
                                                 "rsiOverbought": 101}, "razor")
    assert list(errors) == ["tradeSize", "rsiOversol", "rsiOverbought"]
    assert config["maxDailyTrades"] == 7 and config["tradeSize"] == 100.0  # refused values keep the default
    with pytest.raises(ConfigError) as first:
        validate_config(Razor, {"tradeSize": "lots", "rsiOversol": 1})
    assert str(first.value) == str(errors["tradeSize"])
