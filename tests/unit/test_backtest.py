"""Backtest semantics (docs/razor.md): next-open fills, brackets along the candle path (or SL-first), fees,
break-even, bookkeeping."""

from __future__ import annotations

import copy

import pandas as pd
import pytest

from tradebaas.backtest.backtester import BacktestError, backtest
from tradebaas.domain import Candle, Direction
from tradebaas.errors import UserError
from tradebaas.strategies.base import BaseStrategy, Decision, Enter, Exit, MoveStop, StrategyContext
from tradebaas.strategies.params import ConfigError

T0 = 1_736_208_000_000  # 2025-01-07 00:00 UTC
M = 60_000
TAKER = 0.0005


def frame(rows: list[tuple[float, float, float, float]], t0: int = T0) -> pd.DataFrame:
    idx = pd.to_datetime([t0 + i * M for i in range(len(rows))], unit="ms", utc=True)
    return pd.DataFrame(rows, columns=["open", "high", "low", "close"], index=idx).assign(volume=1.0)


class Script(BaseStrategy):
    """Emits the intents scripted per candle index and records what the context said."""

    name = "script"

    def __init__(self, script: dict[int, tuple], cooldown_ms: int = 0) -> None:
        super().__init__({})
        self.script = script
        self.cooldown_ms = cooldown_ms
        self.i = -1
        self.seen: list[StrategyContext] = []

    def on_candle(self, candle: Candle, context: StrategyContext) -> Decision:
        self.i += 1
        self.seen.append(copy.deepcopy(context))
        return Decision(candle.ts_ms, "none", {}, {}, (), self.script.get(self.i, ()))


def long_(sl=0.5, tp=0.65):
    return (Enter(Direction.LONG, 100.0, sl, tp),)


def short_(sl=0.5, tp=0.65):
    return (Enter(Direction.SHORT, 100.0, sl, tp),)


FLAT = (100_000.0, 100_010.0, 99_990.0, 100_000.0)


def test_signal_fills_at_next_open_with_taker_fee():
    rows = [FLAT, (100_100.0, 100_150.0, 100_050.0, 100_100.0), FLAT, FLAT]
    r = backtest(Script({0: long_(None, None), 2: (Exit(),)}), frame(rows))
    (t,) = r.trades.itertuples()
    assert t.entry_time == pd.Timestamp(T0 + M, unit="ms", tz="UTC") and t.entry_price == 100_100.0
    assert t.exit_time == pd.Timestamp(T0 + 3 * M, unit="ms", tz="UTC") and t.exit_price == 100_000.0
    assert t.amount == 0.001 and t.pnl == pytest.approx(-0.1)
    assert t.fees == pytest.approx(0.001 * 100_100 * TAKER + 0.001 * 100_000 * TAKER)
    assert t.net_pnl == pytest.approx(t.pnl - t.fees) and t.exit_reason == "exit"


def test_an_exit_keeps_the_reason_the_strategy_gave_as_the_live_engine_does():
    rows = [FLAT, FLAT, FLAT, FLAT]
    r = backtest(Script({0: long_(None, None), 1: (Exit("hold"),)}), frame(rows))
    assert r.trades["exit_reason"].tolist() == ["hold"]


def test_tp_fills_at_its_limit_price_with_maker_fee():
    rows = [FLAT, FLAT, (100_000.0, 100_700.0, 99_900.0, 100_600.0)]
    (t,) = backtest(Script({0: long_()}), frame(rows)).trades.itertuples()
    assert t.exit_reason == "tp" and t.exit_price == 100_650.0
    assert t.fees == pytest.approx(100_000 * 0.001 * TAKER)  # maker fee 0 on BTC_USDC-PERPETUAL
    assert t.pnl == pytest.approx(0.65)


@pytest.mark.parametrize("intrabar", ["path", "pessimistic"])
def test_sl_counts_first_when_both_in_one_candle_and_the_low_is_nearer(intrabar):
    rows = [FLAT, FLAT, (100_000.0, 100_700.0, 99_400.0, 100_000.0)]
    (t,) = backtest(Script({0: long_()}), frame(rows), intrabar=intrabar).trades.itertuples()
    assert t.exit_reason == "sl" and t.exit_price == 99_500.0
    assert t.fees == pytest.approx((100_000 + 99_500) * 0.001 * TAKER)


def test_tp_counts_first_on_the_path_when_the_high_is_nearer_and_sl_when_pessimistic():
    rows = [FLAT, FLAT, (100_000.0, 100_700.0, 99_200.0, 100_000.0)]  # SL 99,500 and TP 100,650 both inside
    (t,) = backtest(Script({0: long_()}), frame(rows)).trades.itertuples()
    assert t.exit_reason == "tp" and t.exit_price == 100_650.0
    assert t.fees == pytest.approx(100_000 * 0.001 * TAKER)  # maker exit: fee 0
    (p,) = backtest(Script({0: long_()}), frame(rows), intrabar="pessimistic").trades.itertuples()
    assert p.exit_reason == "sl" and p.exit_price == 99_500.0
    # a short's brackets (SL 100,500, TP 99,350) in the same candle: the path reaches the SL first
    (s,) = backtest(Script({0: short_()}), frame(rows)).trades.itertuples()
    assert s.exit_reason == "sl" and s.exit_price == 100_500.0


def test_stop_gapped_through_fills_at_the_open():
    rows = [FLAT, FLAT, (99_000.0, 99_100.0, 98_900.0, 99_000.0)]
    (t,) = backtest(Script({0: long_()}), frame(rows)).trades.itertuples()
    assert t.exit_reason == "sl" and t.exit_price == 99_000.0


def test_short_brackets_mirror_long_ones():
    rows = [FLAT, FLAT, (100_000.0, 100_010.0, 99_300.0, 99_400.0)]
    (t,) = backtest(Script({0: short_()}), frame(rows)).trades.itertuples()
    assert t.direction == "short" and t.exit_reason == "tp" and t.exit_price == 99_350.0 and t.pnl == pytest.approx(0.65)


def test_the_entry_candle_itself_can_hit_the_stop():
    rows = [FLAT, (100_000.0, 100_010.0, 99_000.0, 99_100.0)]
    (t,) = backtest(Script({0: long_()}), frame(rows)).trades.itertuples()
    assert t.exit_reason == "sl" and t.entry_time == t.exit_time


def test_slippage_is_paid_on_market_fills_not_on_stops():
    rows = [FLAT, FLAT, FLAT, (99_000.0, 99_100.0, 98_900.0, 99_000.0)]
    (t,) = backtest(Script({0: long_()}), frame(rows), slippage=0.001).trades.itertuples()
    assert t.entry_price == pytest.approx(100_100.0)
    assert t.exit_price == 99_000.0  # gap: the open, no extra slippage
    r = backtest(Script({0: short_(None, None), 1: (Exit(),)}), frame(rows), slippage=0.001)
    assert r.trades.entry_price[0] == pytest.approx(99_900.0) and r.trades.exit_price[0] == pytest.approx(100_100.0)


def test_brackets_come_from_the_actual_fill_rounded_to_the_tick():
    rows = [FLAT, (100_003.0, 100_010.0, 99_990.0, 100_000.0)]
    r = backtest(Script({0: long_()}), frame(rows))
    pos = r.open_position
    assert pos.entry_price == 100_003.0 and pos.stop_price == 99_503.0 and pos.take_price == 100_653.0


def test_move_stop_takes_effect_from_the_next_candle():
    # entry 100000 (SL 99500); candle 2 asks to move the stop to 100001 and itself dips to 99950 (no exit);
    # candle 3 dips to 99990: the moved stop fills at 100001.
    rows = [FLAT, FLAT, (100_000.0, 100_400.0, 99_950.0, 100_100.0), (100_100.0, 100_150.0, 99_990.0, 100_000.0)]
    s = Script({0: long_(), 2: (MoveStop(100_001.0, break_even=True),)})
    (t,) = backtest(s, frame(rows)).trades.itertuples()
    assert t.exit_reason == "sl" and t.exit_price == 100_001.0 and t.exit_time == pd.Timestamp(T0 + 3 * M, unit="ms", tz="UTC")


def test_context_bookkeeping_counts_entries_per_utc_day_and_starts_cooldowns():
    # the day changes between candle 2 (23:58) and candle 3 (23:59 closes at 00:00)
    t0 = T0 + 86_400_000 - 3 * M
    rows = [FLAT, FLAT, FLAT, FLAT, FLAT]
    s = Script({0: long_(None, None), 1: (Exit(),)}, cooldown_ms=2 * M)
    backtest(s, frame(rows, t0))
    seen = s.seen
    assert seen[1].position is not None and seen[1].trades_today == 1
    assert seen[1].cooldown_until_ms == t0 + M + 2 * M  # entry at candle 1's open + 2 min
    assert seen[2].position is None and seen[2].cooldown_until_ms == t0 + 2 * M + 2 * M  # exit at candle 2's open
    assert seen[3].trades_today == 0 and seen[3].trading_day == (t0 + 4 * M) // 86_400_000


def test_an_exit_inside_a_candle_books_the_cooldown_from_the_candles_end():
    rows = [FLAT, FLAT, (100_000.0, 100_700.0, 99_900.0, 100_600.0), FLAT]
    s = Script({0: long_()}, cooldown_ms=M)
    backtest(s, frame(rows))
    assert s.seen[2].position is None and s.seen[2].cooldown_until_ms == T0 + 3 * M - 1 + M


def test_ema_cross_flips_at_the_next_open_and_stays_in_the_market():
    closes = [100.0] * 21 + [110.0, 120.0, 90.0, 80.0, 70.0]
    rows = [(c, c, c, c) for c in closes]
    r = backtest("ema_cross", frame(rows), config={"fast": 2, "slow": 3})
    assert len(r.trades) >= 1 and r.open_position is not None
    first = r.trades.iloc[0]
    assert first.exit_reason == "flip" and r.open_position.opened_ts_ms == int(first.exit_time.value // 1_000_000)
    assert r.open_position.direction != Direction(first.direction)


def test_trades_and_equity_follow_the_analytics_contract():
    from tradebaas.analytics.frames import TRADE_COLUMNS

    rows = [FLAT, FLAT, (100_000.0, 100_700.0, 99_900.0, 100_600.0), FLAT, FLAT, (99_000.0, 99_000.0, 98_000.0, 98_500.0)]
    r = backtest(Script({0: long_(), 3: short_()}), frame(rows), capital=1_000.0)
    assert tuple(r.trades.columns[: len(TRADE_COLUMNS)]) == TRADE_COLUMNS
    assert str(r.trades.entry_time.dt.tz) == "UTC" and set(r.trades.currency) == {"USDC"}
    assert r.equity.name == "equity" and len(r.equity) == len(r.trades) + 1
    assert r.equity.iloc[0] == 1_000.0 and r.equity.iloc[-1] == pytest.approx(1_000.0 + r.trades.net_pnl.sum())
    assert r.stats["trades"] == 2


def test_fees_can_be_overridden():
    rows = [FLAT, FLAT, FLAT]
    r = backtest(Script({0: long_(None, None), 1: (Exit(),)}), frame(rows), fees={"taker": 0.0})
    assert r.trades.fees[0] == 0.0


def test_strategy_by_name_gets_a_validated_config():
    with pytest.raises(ConfigError, match="unknown config key"):
        backtest("razor", frame([FLAT]), config={"nope": 1})


def test_unknown_strategy_name_lists_the_known_ones():
    with pytest.raises(UserError, match=r"known: ema_cross, razor"):
        backtest("nope", frame([FLAT]))


def test_bad_arguments_are_user_errors():
    with pytest.raises(BacktestError):
        backtest("razor", frame([FLAT]), slippage=2)
    with pytest.raises(BacktestError):
        backtest("razor", frame([FLAT]), fees={"maker": 0, "bogus": 1})
    with pytest.raises(BacktestError, match=r"intrabar must be 'path' or 'pessimistic' \(default 'path'\), got 'worst'"):
        backtest("razor", frame([FLAT]), intrabar="worst")
