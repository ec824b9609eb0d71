"""Where stops fill, in the simulator and in the backtest: the one rule of ``fillmodel.stop_fill_price``.

A stop crossed by a continuous move (inside a candle; between the ticks of a replayed candle after its open) fills
at its trigger; one the market jumped over (a candle's open, a recorded tick) fills at the market. Also: an exit
at a candle's open is booked at the open's instant in a backtest (cooldowns start there, as live), and the
backtest's ``candle_exit`` meets brackets in the order the simulator's ticks of the candle do.
"""

from __future__ import annotations

import pandas as pd
from hypothesis import given
from hypothesis import strategies as st

from tradebaas import fillmodel
from tradebaas.backtest.backtester import backtest
from tradebaas.domain import Candle, Direction, Liquidity, OrderType
from tradebaas.exchange.sim.marketdata import candle_ticks
from tradebaas.exchange.sim.matching import MarketTick, SimExchange
from tradebaas.instruments import DEFAULT_INSTRUMENTS

LIN = "BTC_USDC-PERPETUAL"


def _exchange_with_long_and_stop(trigger: float) -> SimExchange:
    ex = SimExchange(DEFAULT_INSTRUMENTS)
    ex.create_account("a", {"USDC": 100_000.0})
    ex.on_market(MarketTick(LIN, 1, 50_000, 50_000, 50_000, 49_999, 50_001), 1)
    ex.handle("a", "buy", {"instrument_name": LIN, "amount": 0.01, "type": "market"}, 2)
    ex.handle("a", "sell", {"instrument_name": LIN, "amount": 0.01, "type": "stop_market", "trigger_price": trigger,
                            "trigger": "mark_price", "reduce_only": True, "label": "sl"}, 3)
    return ex


def _fill_price(events: list) -> float:
    [trades] = [e.data for e in events if e.kind == "user.trades"]
    return trades[0]["price"]


def test_stop_crossed_by_a_continuous_move_fills_at_its_trigger() -> None:
    ex = _exchange_with_long_and_stop(49_800)
    events = ex.on_market(MarketTick(LIN, 10, 49_700, 49_700.4, 49_700.4, 49_699, 49_701, continuous=True), 10)
    assert _fill_price(events) == 49_800


def test_stop_jumped_over_fills_at_the_market() -> None:
    ex = _exchange_with_long_and_stop(49_800)
    events = ex.on_market(MarketTick(LIN, 10, 49_700, 49_700, 49_700, 49_699, 49_701), 10)
    assert _fill_price(events) == 49_699


def test_candle_ticks_are_continuous_after_the_open() -> None:
    ticks = candle_ticks(0, 100.0, 110.0, 95.0, 105.0, 1.0, 1)
    assert ticks[0].price == 100.0 and not ticks[0].continuous
    assert all(t.continuous for t in ticks[1:])


def test_candle_exit_uses_the_same_rule() -> None:
    long = Direction.LONG
    inside = fillmodel.candle_exit(long, 99.0, None, Candle(0, 100.0, 101.0, 97.0, 98.0, 0.0))
    assert inside == fillmodel.CandleExit("sl", 99.0, Liquidity.TAKER, False)
    gap = fillmodel.candle_exit(long, 99.0, None, Candle(0, 98.5, 101.0, 97.0, 98.0, 0.0))
    assert gap == fillmodel.CandleExit("sl", 98.5, Liquidity.TAKER, True)
    tp_gap = fillmodel.candle_exit(long, 90.0, 102.0, Candle(0, 103.0, 104.0, 101.0, 103.0, 0.0))
    assert tp_gap is not None and tp_gap.at_open and tp_gap.price == 102.0


def _sim_exit(direction: Direction, stop: float | None, take: float | None,
              candle: Candle) -> fillmodel.CandleExit | None:
    """What the simulator does with the brackets over its ticks of ``candle``: on each tick, triggers fire first
    (a stop fills at its trigger after a continuous move, else at the tick), then resting limits fill at their
    price (the order of ``SimExchange.on_market``)."""
    side = direction.exit_side
    ticks = candle_ticks(candle.ts_ms, candle.open, candle.high, candle.low, candle.close, 1.0, 1)
    for tick in ticks:
        at_open = not tick.continuous
        if stop is not None and fillmodel.trigger_fires(OrderType.STOP_MARKET, side, stop, tick.price):
            return fillmodel.CandleExit("sl", fillmodel.stop_fill_price(stop, tick.price, tick.continuous),
                                        Liquidity.TAKER, at_open)
        if take is not None and fillmodel.limit_crosses(side, take, tick.price):
            return fillmodel.CandleExit("tp", take, Liquidity.MAKER, at_open)
    return None


@st.composite
def _bracketed_candles(draw: st.DrawFn) -> tuple[Direction, float | None, float | None, Candle]:
    """A candle on a coarse grid (so ties between the distances to its extremes are common) and brackets around,
    inside or beyond it, in either direction, each possibly absent."""
    o, c = draw(st.integers(90, 110)), draw(st.integers(90, 110))
    lo = min(o, c) - draw(st.integers(0, 8))
    h = max(o, c) + draw(st.integers(0, 8))
    direction = draw(st.sampled_from([Direction.LONG, Direction.SHORT]))
    below, above = draw(st.integers(lo - 3, o + 8)), draw(st.integers(o - 8, h + 3))
    stop, take = (min(below, above), max(below, above) + 1)
    if direction is Direction.SHORT:
        stop, take = take, stop
    stop_or_none = draw(st.sampled_from([float(stop), None]))
    take_or_none = draw(st.sampled_from([float(take), None]))
    return direction, stop_or_none, take_or_none, Candle(0, float(o), float(h), float(lo), float(c), 1.0)


@given(_bracketed_candles())
def test_candle_exit_on_the_path_is_what_the_simulators_ticks_do(case: tuple) -> None:
    direction, stop, take, candle = case
    assert fillmodel.candle_exit(direction, stop, take, candle) == _sim_exit(direction, stop, take, candle)


def test_the_simulators_ticks_reach_the_nearer_extreme_first_unlike_the_pessimistic_rule() -> None:
    # long 100, SL 99, TP 101; the candle opens nearer its high
    candle = Candle(0, 100.0, 101.5, 97.0, 100.0)
    sim = _sim_exit(Direction.LONG, 99.0, 101.0, candle)
    assert sim == fillmodel.CandleExit("tp", 101.0, Liquidity.MAKER)
    assert fillmodel.candle_exit(Direction.LONG, 99.0, 101.0, candle) == sim
    assert fillmodel.candle_exit(Direction.LONG, 99.0, 101.0, candle, "pessimistic").kind == "sl"


class _Probe:
    """Enters long on the first live candle (SL 1 %, no TP), then records when it may trade again."""

    name = "probe"
    cooldown_ms = 60_000

    def __init__(self) -> None:
        self.config: dict = {}
        self.entered = False
        self.seen: list[tuple[int, bool]] = []

    def on_start(self, ctx) -> None:  # noqa: ANN001
        pass

    def on_candle(self, candle: Candle, ctx):  # noqa: ANN001
        from tradebaas.strategies.base import Decision, Enter

        self.seen.append((candle.ts_ms, ctx.position is None and candle.ts_ms + 60_000 >= ctx.cooldown_until_ms))
        intents = ()
        if not self.entered and not ctx.warming_up:
            self.entered = True
            intents = (Enter(Direction.LONG, 100.0, 1.0, None),)
        return Decision(candle.ts_ms, "none", {}, {}, (), intents)


def test_gap_exit_is_booked_at_the_open_so_the_cooldown_ends_a_minute_later() -> None:
    idx = pd.date_range("2025-01-10", periods=6, freq="1min", tz="UTC")
    # entry at the open of minute 1 (100); minute 2 opens at 95: through the 99 stop -> exit at 95, at 00:02:00
    df = pd.DataFrame({"open": [100, 100, 95, 95, 95, 95], "high": [100, 100, 95, 95, 95, 95],
                       "low": [100, 100, 95, 95, 95, 95], "close": [100, 100, 95, 95, 95, 95],
                       "volume": 1.0}, index=idx, dtype=float)
    probe = _Probe()
    r = backtest(probe, df, start=idx[0])
    [t] = r.trades.itertuples()
    assert t.exit_price == 95.0 and t.exit_reason == "sl"
    # the close at 00:02:00 + 1 min cooldown: the decision at the close of minute 2 (00:03:00) may trade again
    assert dict(probe.seen)[idx[2].value // 1_000_000] is True


def test_start_warms_up_without_trading() -> None:
    idx = pd.date_range("2025-01-10", periods=6, freq="1min", tz="UTC")
    df = pd.DataFrame({c: [100.0] * 6 for c in ("open", "high", "low", "close")}, index=idx).assign(volume=1.0)
    probe = _Probe()
    r = backtest(probe, df, start=idx[3])
    assert r.candles.index[0] == idx[3]
    assert r.open_position is not None and r.open_position.opened_ts_ms == idx[4].value // 1_000_000
