"""The EMA-cross reference strategy: always in the market once warm, flips on crosses, no brackets."""

from __future__ import annotations

from tradebaas.domain import Candle, Direction
from tradebaas.instruments import BTC_USDC_PERPETUAL
from tradebaas.strategies.base import Enter, Exit, PositionView, StrategyContext
from tradebaas.strategies.ema_cross import EmaCross

T0 = 1_736_208_000_000
M = 60_000


def candles(closes: list[float]) -> list[Candle]:
    return [Candle(T0 + i * M, c, c, c, c, 1.0) for i, c in enumerate(closes)]


def test_warm_after_slow_period_and_takes_the_side_of_the_trend_at_once():
    s, ctx = EmaCross({"fast": 2, "slow": 4}), StrategyContext(BTC_USDC_PERPETUAL)
    ds = [s.on_candle(c, ctx) for c in candles([1, 2, 3, 4])]
    assert [d.skipped for d in ds[:3]] == ["warming up"] * 3
    (enter,) = ds[3].intents
    assert enter == Enter(Direction.LONG, 100.0, None, None, enter.reason) and not enter.has_brackets


def test_cross_down_while_long_flips_with_exit_then_enter():
    s, ctx = EmaCross({"fast": 2, "slow": 4}), StrategyContext(BTC_USDC_PERPETUAL)
    for c in candles([1, 2, 3, 4]):
        s.on_candle(c, ctx)
    ctx.position = PositionView(Direction.LONG, 0.001, 4.0, None, None, T0)
    assert s.on_candle(Candle(T0 + 4 * M, 5, 5, 5, 5, 1), ctx).intents == ()
    d = s.on_candle(Candle(T0 + 5 * M, 1, 1, 1, 1, 1), ctx)
    assert isinstance(d.intents[0], Exit) and d.intents[1].direction is Direction.SHORT
    assert d.signal == "short"


def test_equal_emas_change_nothing():
    s, ctx = EmaCross({"fast": 2, "slow": 4}), StrategyContext(BTC_USDC_PERPETUAL)
    ds = [s.on_candle(c, ctx) for c in candles([5, 5, 5, 5, 5])]
    assert all(not d.intents for d in ds)
