"""stats / stats_frame / by_strategy / by_day: hand-computed figures, empyrical cross-checks, edge cases.

The ratios are cross-checked against empyrical-reloaded on the very series ``daily_returns`` builds, with
``annualization=365`` (the market trades every day); see docs/analytics.md for the definitions.
"""

from __future__ import annotations

import math

import empyrical
import numpy as np
import pandas as pd
import pytest

import tradebaas
from tradebaas.analytics import (
    STAT_NAMES,
    by_day,
    by_strategy,
    daily_returns,
    equity_curve,
    stats,
    stats_frame,
    trades_frame,
)

UTC = "UTC"
START = pd.Timestamp("2025-01-01", tz=UTC)


def _t(hours: float) -> pd.Timestamp:
    return START + pd.Timedelta(hours=hours)


def _trade(i: int, entry_h: float, exit_h: float, pnl: float, fees: float, **kw: object) -> dict[str, object]:
    row: dict[str, object] = {
        "trade_id": f"t{i}",
        "strategy_id": "razor",
        "instrument": "BTC_USDC-PERPETUAL",
        "direction": "long" if i % 2 else "short",
        "entry_time": _t(entry_h),
        "exit_time": _t(exit_h),
        "entry_price": 100_000.0,
        "exit_price": 100_000.0,
        "amount": 0.01,
        "pnl": pnl,
        "fees": fees,
        "exit_reason": "tp" if pnl - fees > 0 else "sl",
        "currency": "USDC",
    }
    row.update(kw)
    return row


@pytest.fixture
def hand() -> pd.DataFrame:
    """Five trades over four days, computed by hand below (capital 1000, start 2025-01-01 00:00 UTC).

    net: +100, -50, -100, +250, 0  -> equity 1000, 1100, 1050, 950, 1200, 1200
    """
    return trades_frame([
        _trade(1, 1, 3, 110, 10, strategy_id="razor"),  # day 1, net +100
        _trade(2, 12, 24, -45, 5, strategy_id="ema"),  # exits 01-02 00:00, net -50
        _trade(3, 30, 36, -95, 5, strategy_id="razor"),  # day 2, net -100
        _trade(4, 48, 72, 260, 10, strategy_id="ema"),  # exits 01-04 00:00, net +250
        _trade(5, 84, 96, 4, 4, strategy_id="razor"),  # exits 01-05 00:00, breakeven
    ])  # fmt: skip


def test_hand_computed_trade_statistics(hand: pd.DataFrame) -> None:
    s = stats(hand, equity_curve(hand, 1000.0, start=START))
    assert list(s.index) == list(STAT_NAMES)
    assert s["trades"] == 5 and s["wins"] == 2 and s["losses"] == 2  # the breakeven trade is neither
    assert s["net_pnl"] == pytest.approx(200.0)
    assert s["gross_pnl"] == pytest.approx(234.0)
    assert s["fees"] == pytest.approx(34.0)
    assert s["win_rate"] == pytest.approx(0.4)
    assert s["avg_win"] == pytest.approx(175.0)
    assert s["avg_loss"] == pytest.approx(-75.0)
    assert s["profit_factor"] == pytest.approx(350.0 / 150.0)
    assert s["expectancy"] == pytest.approx(40.0)
    assert s["expectancy"] == pytest.approx(0.4 * 175.0 + 0.4 * -75.0)
    assert s["currency"] == "USDC"
    assert s["final_equity"] == pytest.approx(1200.0)
    assert s["total_return"] == pytest.approx(0.2)


def test_hand_computed_drawdown_and_its_duration(hand: pd.DataFrame) -> None:
    s = stats(hand, equity_curve(hand, 1000.0, start=START))
    # peak 1100 at 01-01 03:00, trough 950 at 01-02 12:00, back above it at 01-04 00:00
    assert s["max_drawdown"] == pytest.approx(-150.0 / 1100.0)
    assert s["max_drawdown_ccy"] == pytest.approx(-150.0)
    assert s["max_drawdown_duration"] == pd.Timedelta(days=2, hours=21)


def test_drawdown_still_open_at_the_end_lasts_until_the_end_of_the_period() -> None:
    frame = trades_frame([_trade(1, 0, 2, 100, 0), _trade(2, 3, 5, -10, 0)])
    s = stats(frame, equity_curve(frame, 1000.0), end=_t(50))
    assert s["max_drawdown_duration"] == pd.Timedelta(hours=48)


def test_hand_computed_exposure_and_trades_per_day(hand: pd.DataFrame) -> None:
    s = stats(hand, equity_curve(hand, 1000.0, start=START))
    # in a position 2 + 12 + 6 + 24 + 12 = 56 h of the 96 h from 01-01 00:00 to 01-05 00:00
    assert s["exposure"] == pytest.approx(56.0 / 96.0)
    assert s["days"] == 5  # calendar days 01-01 .. 01-05
    assert s["trades_per_day"] == pytest.approx(1.0)
    assert s["start"] == START and s["end"] == _t(96)


def test_overlapping_trades_count_once_in_exposure() -> None:
    frame = trades_frame([
        _trade(1, 0, 6, 1, 0, strategy_id="a"),
        _trade(2, 2, 4, 1, 0, strategy_id="b"),  # inside the first
        _trade(3, 5, 8, 1, 0, strategy_id="b"),  # overlaps the first's tail
        _trade(4, 10, 12, 1, 0, strategy_id="a"),
    ])  # fmt: skip
    s = stats(frame, equity_curve(frame, 1000.0, start=START), end=_t(20))
    assert s["exposure"] == pytest.approx((8.0 + 2.0) / 20.0)


def test_end_extends_the_period_with_flat_days(hand: pd.DataFrame) -> None:
    s = stats(hand, equity_curve(hand, 1000.0, start=START), end=_t(96 + 5 * 24))
    assert s["days"] == 10
    assert s["exposure"] == pytest.approx(56.0 / 216.0)
    assert s["trades_per_day"] == pytest.approx(0.5)


def test_daily_returns_sample_each_utc_day_close_and_start_from_capital(hand: pd.DataFrame) -> None:
    returns = daily_returns(equity_curve(hand, 1000.0, start=START))
    assert returns.index.tolist() == list(pd.date_range(START, periods=5, freq="D"))
    expected = [1100 / 1000 - 1, 950 / 1100 - 1, 0.0, 1200 / 950 - 1, 0.0]
    assert returns.to_numpy() == pytest.approx(expected)


# ---------------------------------------------------------------- empyrical cross-checks


def _synthetic(seed: int, n: int, days: float, *, one_close_per_day: bool = False) -> pd.DataFrame:
    """A real-looking trade list: random entries, holding 15 min to 12 h, net PnL with a slight edge."""
    rng = np.random.default_rng(seed)
    if one_close_per_day:
        day = np.arange(n)
        entry_h = day * 24 + rng.uniform(0, 10, n)
        exit_h = entry_h + rng.uniform(0.25, 12, n)
    else:
        entry_h = np.sort(rng.uniform(0, days * 24, n))
        exit_h = entry_h + rng.uniform(0.25, 12, n)
    pnl = rng.normal(15.0, 120.0, n)
    fees = rng.uniform(1.0, 6.0, n)
    ids = rng.choice(["razor", "ema_cross"], n)
    return trades_frame([
        _trade(i, float(entry_h[i]), float(exit_h[i]), float(pnl[i]), float(fees[i]), strategy_id=str(ids[i]))
        for i in range(n)
    ])  # fmt: skip


@pytest.mark.parametrize(
    ("seed", "n", "days", "one_close_per_day"),
    [(7, 300, 120, False), (11, 40, 40, True), (2024, 1500, 365, False)],
)
@pytest.mark.parametrize("risk_free", [0.0, 0.04])
def test_ratios_agree_with_empyrical_on_the_same_series(
    seed: int, n: int, days: float, one_close_per_day: bool, risk_free: float
) -> None:
    trades = _synthetic(seed, n, days, one_close_per_day=one_close_per_day)
    equity = equity_curve(trades, 10_000.0)
    s = stats(trades, equity, risk_free=risk_free)
    daily = daily_returns(equity)
    per_trade = equity.pct_change().dropna()
    rf = risk_free / 365

    assert s["sharpe"] == pytest.approx(
        empyrical.sharpe_ratio(daily, risk_free=rf, annualization=365), rel=1e-9
    )
    assert s["sortino"] == pytest.approx(
        empyrical.sortino_ratio(daily, required_return=rf, annualization=365), rel=1e-9
    )
    assert s["annual_return"] == pytest.approx(empyrical.annual_return(daily, annualization=365), rel=1e-9)
    assert s["volatility"] == pytest.approx(empyrical.annual_volatility(daily, annualization=365), rel=1e-9)
    # drawdown at trade resolution: empyrical on the per-trade returns of the same equity curve
    assert s["max_drawdown"] == pytest.approx(empyrical.max_drawdown(per_trade), rel=1e-9)
    assert s["calmar"] == pytest.approx(
        empyrical.annual_return(daily, annualization=365) / abs(empyrical.max_drawdown(per_trade)), rel=1e-9
    )
    if one_close_per_day:
        # daily closes see every trough, so empyrical's own daily Calmar and drawdown agree too
        assert s["max_drawdown"] == pytest.approx(empyrical.max_drawdown(daily), rel=1e-9)
        assert s["calmar"] == pytest.approx(empyrical.calmar_ratio(daily, annualization=365), rel=1e-9)


def test_hand_made_list_agrees_with_empyrical(hand: pd.DataFrame) -> None:
    equity = equity_curve(hand, 1000.0, start=START)
    s = stats(hand, equity)
    daily = daily_returns(equity)
    assert s["sharpe"] == pytest.approx(empyrical.sharpe_ratio(daily, annualization=365))
    assert s["sortino"] == pytest.approx(empyrical.sortino_ratio(daily, annualization=365))
    assert s["max_drawdown"] == pytest.approx(empyrical.max_drawdown(daily))
    assert s["annual_return"] == pytest.approx(empyrical.annual_return(daily, annualization=365))
    assert s["calmar"] == pytest.approx(empyrical.calmar_ratio(daily, annualization=365))


def test_intraday_trough_is_deeper_than_the_daily_close_drawdown() -> None:
    frame = trades_frame([_trade(1, 1, 2, -300, 0), _trade(2, 3, 4, 290, 0)])  # down and back within the day
    equity = equity_curve(frame, 1000.0)
    s = stats(frame, equity)
    assert s["max_drawdown"] == pytest.approx(-0.3)
    assert empyrical.max_drawdown(daily_returns(equity)) == pytest.approx(-0.01)


# ---------------------------------------------------------------- edge cases


def test_no_trades_give_zero_counts_and_nan_ratios() -> None:
    empty = trades_frame([])
    s = stats(empty, equity_curve(empty, 1000.0, start=START), end=_t(48))
    assert s["trades"] == 0 and s["net_pnl"] == 0.0 and s["fees"] == 0.0
    for name in (
        "win_rate",
        "avg_win",
        "avg_loss",
        "profit_factor",
        "expectancy",
        "sharpe",
        "sortino",
        "calmar",
    ):
        assert math.isnan(s[name]), name
    assert s["max_drawdown"] == 0.0 and s["max_drawdown_duration"] == pd.Timedelta(0)
    assert s["exposure"] == 0.0 and s["trades_per_day"] == 0.0
    without_curve = stats(empty, capital=1000.0)
    assert without_curve["trades"] == 0 and pd.isna(without_curve["start"])
    assert by_day(empty).empty and by_strategy(empty, 1000.0).empty


def test_one_trade() -> None:
    frame = trades_frame([_trade(1, 1, 5, 50, 2)])
    s = stats(frame, capital=1000.0)
    assert s["trades"] == 1 and s["win_rate"] == 1.0
    assert s["expectancy"] == pytest.approx(48.0)
    assert s["profit_factor"] == math.inf
    assert math.isnan(s["sharpe"]) and math.isnan(s["sortino"])  # a single daily return
    assert math.isnan(s["calmar"])  # no drawdown
    assert s["exposure"] == pytest.approx(1.0)  # the period is the trade


def test_all_wins_give_infinite_profit_factor_and_all_breakeven_nan() -> None:
    wins = trades_frame([_trade(i, i * 24, i * 24 + 2, 10 + i, 1) for i in range(4)])
    s = stats(wins, capital=1000.0)
    assert s["profit_factor"] == math.inf and math.isnan(s["avg_loss"])
    assert s["sortino"] == math.inf  # no downside day at all
    flat = trades_frame([_trade(i, i * 24, i * 24 + 2, 3, 3) for i in range(4)])
    s_flat = stats(flat, capital=1000.0)
    assert math.isnan(s_flat["profit_factor"]) and s_flat["win_rate"] == 0.0


def test_zero_variance_returns_give_nan_sharpe_not_a_crash() -> None:
    flat = trades_frame([_trade(i, i * 24, i * 24 + 2, 3, 3) for i in range(5)])
    s = stats(flat, capital=1000.0)
    assert math.isnan(s["sharpe"]) and math.isnan(s["sortino"]) and s["volatility"] == 0.0
    # constant +10 % a day: empyrical divides by float noise; we answer NaN for a ratio without variance
    equity_values = 1000.0 * 1.1 ** np.arange(6)
    steady = trades_frame(
        [_trade(i, i * 24, i * 24 + 1, float(d), 0.0) for i, d in enumerate(np.diff(equity_values))]
    )
    s2 = stats(steady, equity_curve(steady, 1000.0, start=START))
    assert math.isnan(s2["sharpe"])


def test_mixed_currencies_are_refused() -> None:
    frame = trades_frame([_trade(1, 0, 1, 1, 0, currency="BTC"), _trade(2, 0, 1, 1, 0, currency="USDC")])
    with pytest.raises(ValueError, match="several currencies"):
        stats(frame, capital=1.0)


def test_stats_needs_equity_or_capital(hand: pd.DataFrame) -> None:
    with pytest.raises(ValueError, match="capital"):
        stats(hand)


# ---------------------------------------------------------------- breakdowns


def test_by_strategy_measures_each_strategy_over_the_common_period(hand: pd.DataFrame) -> None:
    table = by_strategy(hand, 1000.0, start=START)
    assert table.index.tolist() == ["ema", "razor"]
    assert table.loc["ema", "net_pnl"] == pytest.approx(200.0)
    assert table.loc["razor", "net_pnl"] == pytest.approx(0.0)
    assert table.loc["razor", "trades"] == 3 and table.loc["ema", "trades"] == 2
    assert (table["start"] == START).all() and (table["end"] == _t(96)).all()
    assert table.loc["ema", "exposure"] == pytest.approx(36.0 / 96.0)
    assert table["max_drawdown_duration"].dtype.kind == "m"
    assert table["sharpe"].dtype == "float64"


def test_stats_frame_has_a_total_row_equal_to_stats(hand: pd.DataFrame) -> None:
    table = stats_frame(hand, 1000.0, by="direction", start=START)
    assert table.index.tolist() == ["long", "short", "(all)"]
    whole = stats(hand, equity_curve(hand, 1000.0, start=START))
    assert table.loc["(all)", "sharpe"] == pytest.approx(whole["sharpe"])
    assert table.loc["(all)", "trades"] == 5


def test_by_day_groups_by_utc_exit_day_including_quiet_days(hand: pd.DataFrame) -> None:
    days = by_day(hand)
    assert days.index.tolist() == list(pd.date_range(START, periods=5, freq="D"))
    assert days["trades"].tolist() == [1, 2, 0, 1, 1]
    assert days["net_pnl"].tolist() == pytest.approx([100.0, -150.0, 0.0, 250.0, 0.0])
    assert days["fees"].tolist() == pytest.approx([10.0, 10.0, 0.0, 10.0, 4.0])
    assert days["wins"].tolist() == [1, 0, 0, 1, 0]
    assert days["worst"].iloc[1] == pytest.approx(-100.0)
    assert days["cum_net_pnl"].iloc[-1] == pytest.approx(200.0)
    assert math.isnan(days["win_rate"].iloc[2])


def test_public_entry_point_is_the_same_function() -> None:
    assert tradebaas.stats is stats
