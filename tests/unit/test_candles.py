"""The pure candle builder: clock-aligned minutes, closed by the next event or a timer, holes filled flat."""

from __future__ import annotations

from tradebaas.domain import Candle
from tradebaas.engine.core.candles import CandleBuilder

T0 = 1_736_208_000_000  # 2025-01-07 00:00:00 UTC, a whole minute
M = 60_000


def test_trades_inside_one_minute_build_one_ohlcv_candle_closed_by_the_next_minutes_trade():
    b = CandleBuilder()
    assert b.on_trade(100.0, 1.0, T0 + 5_000) == []
    assert b.on_trade(103.0, 0.5, T0 + 10_000) == []
    assert b.on_trade(99.0, 0.25, T0 + 20_000) == []
    assert b.on_trade(101.0, 0.25, T0 + 59_999) == []
    closed = b.on_trade(102.0, 2.0, T0 + M + 1)
    assert closed == [Candle(T0, 100.0, 103.0, 99.0, 101.0, 2.0)]
    assert b.forming == Candle(T0 + M, 102.0, 102.0, 102.0, 102.0, 2.0)


def test_candle_starts_at_the_whole_minute_not_at_the_first_trade():
    b = CandleBuilder()
    b.on_trade(100.0, 1.0, T0 + 42_123)
    (c,) = b.on_trade(101.0, 1.0, T0 + M)
    assert c.ts_ms == T0


def test_an_event_exactly_at_the_minute_end_closes_it_and_belongs_to_the_next_candle():
    b = CandleBuilder()
    b.on_trade(100.0, 1.0, T0)
    closed = b.on_trade(105.0, 1.0, T0 + M)
    assert closed == [Candle(T0, 100.0, 100.0, 100.0, 100.0, 1.0)]
    assert b.forming.open == 105.0


def test_timer_closes_a_candle_one_second_after_its_minute_when_no_event_came():
    b = CandleBuilder()
    b.on_trade(100.0, 1.0, T0 + 1_000)
    assert b.on_timer(T0 + M) == []
    assert b.on_timer(T0 + M + 999) == []
    assert b.on_timer(T0 + M + 1_000) == [Candle(T0, 100.0, 100.0, 100.0, 100.0, 1.0)]
    assert b.on_timer(T0 + M + 5_000) == []  # never twice


def test_empty_minutes_repeat_the_previous_close_with_zero_volume():
    b = CandleBuilder()
    b.on_trade(100.0, 1.0, T0 + 1)
    b.on_trade(98.0, 1.0, T0 + 2)
    closed = b.on_trade(110.0, 1.0, T0 + 3 * M + 7)
    assert closed == [
        Candle(T0, 100.0, 100.0, 98.0, 98.0, 2.0),
        Candle(T0 + M, 98.0, 98.0, 98.0, 98.0, 0.0),
        Candle(T0 + 2 * M, 98.0, 98.0, 98.0, 98.0, 0.0),
    ]


def test_timer_emits_flat_candles_for_silent_minutes():
    b = CandleBuilder()
    b.on_trade(100.0, 1.0, T0 + 1)
    assert [c.ts_ms for c in b.on_timer(T0 + 3 * M + 1_000)] == [T0, T0 + M, T0 + 2 * M]
    assert b.on_timer(T0 + 4 * M + 1_000)[0] == Candle(T0 + 3 * M, 100.0, 100.0, 100.0, 100.0, 0.0)


def test_other_market_events_close_candles_without_changing_prices():
    b = CandleBuilder()
    b.on_trade(100.0, 1.0, T0 + 1)
    assert b.on_event(T0 + 30_000) == []
    assert b.on_event(T0 + M) == [Candle(T0, 100.0, 100.0, 100.0, 100.0, 1.0)]


def test_late_trades_for_an_emitted_candle_are_counted_not_applied():
    b = CandleBuilder()
    b.on_trade(100.0, 1.0, T0 + 1)
    b.on_trade(101.0, 1.0, T0 + M + 1)
    assert b.on_trade(50.0, 1.0, T0 + 30_000) == []
    assert b.late_events == 1
    assert b.forming.low == 101.0


def test_nothing_is_emitted_before_the_first_event():
    b = CandleBuilder()
    assert b.on_timer(T0 + 10 * M) == []
    assert b.forming is None


def test_prime_continues_after_warm_up_history_and_fills_gaps_with_its_close():
    b = CandleBuilder()
    b.prime(Candle(T0, 100.0, 101.0, 99.0, 100.5, 3.0))
    assert b.next_close_ms == T0 + 2 * M
    closed = b.on_timer(T0 + 2 * M + 1_000)
    assert closed == [Candle(T0 + M, 100.5, 100.5, 100.5, 100.5, 0.0)]


def test_chart_bar_updates_replace_the_forming_bar_and_a_later_bar_closes_it():
    b = CandleBuilder()
    assert b.on_bar(T0, 100.0, 100.0, 100.0, 100.0, 0.1) == []
    assert b.on_bar(T0, 100.0, 102.0, 99.0, 101.0, 0.7) == []  # re-sent while forming
    closed = b.on_bar(T0 + M, 101.0, 101.0, 101.0, 101.0, 0.2)
    assert closed == [Candle(T0, 100.0, 102.0, 99.0, 101.0, 0.7)]


def test_chart_bar_gap_is_filled_flat_and_late_updates_are_ignored():
    b = CandleBuilder()
    b.on_bar(T0, 100.0, 100.0, 100.0, 100.0, 1.0)
    closed = b.on_bar(T0 + 3 * M, 105.0, 105.0, 105.0, 105.0, 1.0)
    assert [c.volume for c in closed] == [1.0, 0.0, 0.0]
    assert b.on_bar(T0 + M, 1.0, 1.0, 1.0, 1.0, 1.0) == [] and b.late_events == 1


def test_chart_bar_closed_by_timer_when_no_later_bar_comes():
    b = CandleBuilder()
    b.on_bar(T0, 100.0, 101.0, 99.0, 100.0, 1.0)
    assert b.on_timer(T0 + M + 1_000) == [Candle(T0, 100.0, 101.0, 99.0, 100.0, 1.0)]


def test_other_intervals_align_to_their_own_boundaries():
    b = CandleBuilder(interval_ms=5 * M)
    b.on_trade(100.0, 1.0, T0 + 7 * M)
    (c,) = b.on_trade(100.0, 1.0, T0 + 10 * M)
    assert c.ts_ms == T0 + 5 * M


def test_rebuilding_real_candles_from_their_ohlc_as_trades_gives_them_back():
    from tradebaas.backtest.data import load_default

    df = load_default().iloc[:300]
    b = CandleBuilder()
    out: list[Candle] = []
    for ts, o, h, l_, c, v in zip(df.index.asi8 // 1_000_000 if df.index.unit == "ns" else df.index.asi8,
                                  df["open"], df["high"], df["low"], df["close"], df["volume"], strict=True):
        ts = int(ts)
        for k, p in enumerate((o, h, l_, c)):
            out += b.on_trade(float(p), float(v) / 4, ts + k * 10_000)
    out += b.on_timer(int(df.index[-1].value // 1_000_000) + M + 1_000)
    assert len(out) == 300
    for got, (_, row) in zip(out, df.iterrows(), strict=True):
        assert (got.open, got.high, got.low, got.close) == (row.open, row.high, row.low, row.close)
        assert abs(got.volume - row.volume) < 1e-9
