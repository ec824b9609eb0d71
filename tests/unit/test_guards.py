"""The rules a strategy start passes: an order size the instrument can trade, one strategy per instrument."""

from __future__ import annotations

from typing import Any, ClassVar

import pytest

from tradebaas.domain import StrategyState
from tradebaas.engine.core.guards import shared_instrument_problem, size_param, size_problem
from tradebaas.instruments import BTC_PERPETUAL, BTC_USDC_PERPETUAL
from tradebaas.strategies.base import BaseStrategy, Param
from tradebaas.strategies.ema_cross import EmaCross
from tradebaas.strategies.razor import Razor


class Notional(BaseStrategy):
    """Sizes its orders with another key than tradeSize, and says so."""

    name: ClassVar[str] = "notional"
    size_param: ClassVar[str] = "usd"
    params: ClassVar[tuple[Param, ...]] = (Param("usd", float, 100.0, 0, 1e6, "USD per trade"),)


class Unsized(BaseStrategy):
    name: ClassVar[str] = "unsized"
    params: ClassVar[tuple[Param, ...]] = (Param("every", int, 2, 1, 100, "candles"),)


def test_the_size_parameter_is_tradesize_unless_the_class_names_another_and_only_when_declared() -> None:
    assert size_param(Razor) == "tradeSize" and size_param(EmaCross) == "tradeSize"
    assert size_param(Notional) == "usd"
    assert size_param(Unsized) is None


def test_a_size_that_rounds_to_no_contract_is_refused_with_the_minimum_in_the_message() -> None:
    price = 102_214.0  # 0.001 BTC is 102.21 USD; sizes round to the nearest 0.001 BTC
    problem = size_problem(Razor, {"tradeSize": 0}, BTC_USDC_PERPETUAL, price)
    assert problem is not None
    assert "tradeSize 0 USD is below the minimum order of BTC_USDC-PERPETUAL: 0.001 BTC" in problem
    assert "about 102.21 USD at 102214" in problem and "at least 51.11" in problem
    assert size_problem(Razor, {"tradeSize": 51.0}, BTC_USDC_PERPETUAL, price) is not None
    assert size_problem(Razor, {"tradeSize": 51.11}, BTC_USDC_PERPETUAL, price) is None  # the bound it names passes
    assert size_problem(Razor, {"tradeSize": 100.0}, BTC_USDC_PERPETUAL, price) is None  # the default trades 0.001
    assert BTC_USDC_PERPETUAL.amount_for_notional(51.11, price) == 0.001


def test_an_inverse_instrument_needs_no_price_and_names_its_usd_minimum() -> None:
    problem = size_problem(Razor, {"tradeSize": 4}, BTC_PERPETUAL, None)
    assert problem is not None and "minimum order of BTC-PERPETUAL: 10 USD" in problem and "at least 5" in problem
    assert size_problem(Razor, {"tradeSize": 5}, BTC_PERPETUAL, None) is None


def test_without_a_price_a_linear_size_cannot_be_checked_and_is_refused() -> None:
    problem = size_problem(Razor, {"tradeSize": 1000}, BTC_USDC_PERPETUAL, None)
    assert problem is not None and "no price of BTC_USDC-PERPETUAL is known yet" in problem


def test_the_rule_follows_the_named_parameter_and_skips_a_class_without_one() -> None:
    problem = size_problem(Notional, {"usd": 1.0}, BTC_USDC_PERPETUAL, 100_000.0)
    assert problem is not None and problem.startswith("usd 1 USD is below")
    assert size_problem(Unsized, {"every": 2}, BTC_USDC_PERPETUAL, None) is None


STRATEGIES: list[tuple[str, str, StrategyState]] = [
    ("razor-a", "BTC_USDC-PERPETUAL", StrategyState.RUNNING),
    ("razor-b", "BTC-PERPETUAL", StrategyState.STOPPED),
    ("razor-c", "BTC-PERPETUAL", StrategyState.ERROR),
]


@pytest.mark.parametrize(("instrument", "holding", "named"), [
    ("BTC_USDC-PERPETUAL", set(), "razor-a (running)"),
    ("BTC-PERPETUAL", {"razor-b"}, "razor-b (stopped, with an open position)"),
])
def test_an_instrument_another_strategy_trades_or_holds_is_refused_with_the_reason(
    instrument: str, holding: set[str], named: str
) -> None:
    problem = shared_instrument_problem(instrument, STRATEGIES, holding)
    assert problem is not None and named in problem
    assert "nets" in problem and "allow_shared_instrument" in problem


def test_a_free_instrument_passes_and_a_strategy_never_conflicts_with_itself() -> None:
    assert shared_instrument_problem("BTC-PERPETUAL", STRATEGIES, set()) is None  # stopped, flat: free
    assert shared_instrument_problem("BTC_USDC-PERPETUAL", STRATEGIES, set(), own_id="razor-a") is None
    for state in (StrategyState.STARTING, StrategyState.NEEDS_ATTENTION):
        rows: Any = [("x-1", "BTC-PERPETUAL", state)]
        assert shared_instrument_problem("BTC-PERPETUAL", rows, set()) is not None
