"""The simulator's market data: deterministic ticks inside each candle, quotes on the tick grid, charts."""

from __future__ import annotations

from itertools import islice
from pathlib import Path

import numpy as np
import pytest

from tradebaas.backtest import data as candle_data
from tradebaas.domain import Candle
from tradebaas.errors import UserError
from tradebaas.exchange.sim import marketdata as md
from tradebaas.fillmodel import candle_path
from tradebaas.instruments import BTC_PERPETUAL, BTC_USDC_PERPETUAL

DATA = Path(__file__).resolve().parents[2] / "tradebaas" / "data"


@pytest.fixture(scope="module")
def bitstamp() -> md.MarketData:
    return md.load(None)


def test_same_data_gives_the_same_ticks(bitstamp: md.MarketData) -> None:
    again = md.load(DATA / candle_data.DEFAULT_FILE)
    start = bitstamp.default_start_ms()
    assert list(islice(bitstamp.ticks_from(start), 2000)) == list(islice(again.ticks_from(start), 2000))


def test_every_tick_lies_inside_its_candle_and_visits_open_extremes_close(bitstamp: md.MarketData) -> None:
    c = bitstamp.candles
    for i in range(0, 5000, 7):
        t, o, h, lo, cl, v = c.row(i)
        ticks = md.candle_ticks(t, o, h, lo, cl, v, 0)
        prices = [x.price for x in ticks]
        assert all(lo <= p <= h for p in prices)
        assert prices[0] == o and prices[-1] == cl
        assert max(prices) == h and min(prices) == lo
        assert all(t <= x.ts_ms < t + md.MINUTE_MS for x in ticks)
        assert sum(x.amount_btc for x in ticks) == pytest.approx(v)


def test_ticks_follow_the_fill_models_candle_path(bitstamp: md.MarketData) -> None:
    """The waypoints (0, 15, 40, 55 s) are ticks, at exactly the prices of ``fillmodel.candle_path``."""
    c = bitstamp.candles
    for i in range(0, 5000, 7):
        t, o, h, lo, cl, v = c.row(i)
        at = {x.ts_ms - t: x.price for x in md.candle_ticks(t, o, h, lo, cl, v, 0)}
        assert tuple(at[ms] for ms in (0, 15_000, 40_000, 55_000)) == candle_path(Candle(t, o, h, lo, cl, v))


def test_ticks_are_time_ordered_with_increasing_sequence(bitstamp: md.MarketData) -> None:
    ticks = list(islice(bitstamp.ticks_from(bitstamp.default_start_ms()), 5000))
    assert all(a.ts_ms < b.ts_ms and a.seq < b.seq for a, b in zip(ticks, ticks[1:], strict=False))


def test_default_start_leaves_warm_up_history(bitstamp: md.MarketData) -> None:
    assert bitstamp.default_start_ms() - bitstamp.start_ms == md.WARMUP_MINUTES * md.MINUTE_MS


def test_quotes_are_on_the_tick_grid_and_not_crossed() -> None:
    for inst in (BTC_USDC_PERPETUAL, BTC_PERPETUAL):
        for price, side in ((101749.6, "buy"), (101749.6, "sell"), (100000.0, "buy")):
            q = md.quote_for(md.PriceTick(0, price, 1.0, side, 1), inst)
            assert inst.is_on_tick(q.best_bid) and inst.is_on_tick(q.best_ask) and inst.is_on_tick(q.last_price)
            assert q.best_bid < q.best_ask
            assert q.best_bid <= q.last_price <= q.best_ask
        q = md.quote_for(md.PriceTick(0, 61700.0, 0.0, "buy", 1, bid=61699.9, ask=61700.1), inst)
        assert q.best_bid <= 61699.9 and q.best_ask >= 61700.1


def test_synthetic_walk_is_seeded() -> None:
    a, b, c = md.synthetic(7, minutes=500), md.synthetic(7, minutes=500), md.synthetic(8, minutes=500)
    assert np.array_equal(a.candles.close, b.candles.close)
    assert not np.array_equal(a.candles.close, c.candles.close)
    assert np.all(a.candles.low <= np.minimum(a.candles.open, a.candles.close))
    assert np.all(a.candles.high >= np.maximum(a.candles.open, a.candles.close))


def test_tick_sample_loads_trades_and_quotes_in_exchange_time() -> None:
    data = md.load(DATA / md.TICK_SAMPLE)
    ticks = list(data.ticks_from(0))
    trades = [t for t in ticks if t.amount_btc > 0]
    assert len(trades) == 21313
    assert all(61590.0 <= t.price <= 61840.0 for t in trades)
    assert all(t.bid is not None for t in ticks[100:])
    assert data.start_ms >= 1723161256000 - 60_000


def test_parquet_candles_load_like_csv(tmp_path: Path, bitstamp: md.MarketData) -> None:
    import pandas as pd

    c = bitstamp.candles
    df = pd.DataFrame({"timestamp": c.ts_ms[:400] // 1000, "open": c.open[:400], "high": c.high[:400],
                       "low": c.low[:400], "close": c.close[:400], "volume": c.volume[:400]})
    df.to_parquet(tmp_path / "c.parquet")
    loaded = md.load(tmp_path / "c.parquet")
    assert list(islice(loaded.ticks_from(0), 100)) == list(islice(bitstamp.ticks_from(0), 100))


def test_candle_files_load_as_the_backtest_loads_them(tmp_path: Path) -> None:
    """One reader: ISO times, unsorted rows and a repeated bar come out as ``backtest.data.load_candles`` has them."""
    import pandas as pd

    path = tmp_path / "c.csv"
    pd.DataFrame({
        "time": ["2025-01-10T00:02:00Z", "2025-01-10T00:00:00Z", "2025-01-10T00:01:00Z", "2025-01-10T00:02:00Z"],
        "open": [102.0, 100.0, 101.0, 103.0], "high": [104.0, 101.0, 102.0, 105.0],
        "low": [101.0, 99.0, 100.0, 102.0], "close": [103.0, 101.0, 102.0, 104.0],
    }).to_csv(path, index=False)
    frame = candle_data.load_candles(path)
    c = md.load(path).candles
    assert c.ts_ms.tolist() == (frame.index.as_unit("ms").asi8).tolist()
    assert c.ts_ms.tolist() == [1736467200000, 1736467260000, 1736467320000]
    for k in ("open", "high", "low", "close", "volume"):
        assert getattr(c, k).tolist() == frame[k].tolist()
    assert c.open.tolist() == [100.0, 101.0, 103.0]  # the repeated bar: the last row wins, as in a backtest


def test_an_unusable_candle_file_is_the_backtests_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "bad.csv"
    path.write_text("timestamp,open,high,close\n1736467200,1,2,1\n")
    with pytest.raises(candle_data.DataError, match="missing column.*low") as err:
        md.load(path)
    assert isinstance(err.value, UserError)


def test_chart_history_stops_at_now_and_aggregates(bitstamp: md.MarketData) -> None:
    chart = md.ChartBook(bitstamp)
    now = bitstamp.default_start_ms() + 30_000
    for t in bitstamp.ticks_from(now - md.MINUTE_MS):
        if t.ts_ms > now:
            break
        chart.on_tick(t)
    bars = chart.bars(bitstamp.start_ms, now + 10 * md.MINUTE_MS, 1, now)
    assert bars[-1].tick == now // md.MINUTE_MS * md.MINUTE_MS  # the forming minute, nothing later
    assert len(bars) == md.WARMUP_MINUTES + 1
    five = chart.bars(bitstamp.start_ms, now, 5, now)
    first5 = [b for b in bars if b.tick // 300_000 == five[1].tick // 300_000]
    five = five[1:]
    assert five[0].high == max(b.high for b in first5) and five[0].close == first5[-1].close
    assert chart.bars(now + md.MINUTE_MS, now + 5 * md.MINUTE_MS, 1, now) == []


@pytest.mark.parametrize(("value", "minutes"), [("1", 1), (1, 1), ("60", 60), ("1D", 1440), ("720", 720)])
def test_resolution_accepts_strings_and_numbers(value: object, minutes: int) -> None:
    assert md.parse_resolution(value) == minutes


def test_bad_resolution_is_rejected() -> None:
    with pytest.raises(ValueError):
        md.parse_resolution("7")


def test_live_bar_kept_per_tick_equals_the_bar_rebuilt_from_history(bitstamp: md.MarketData) -> None:
    live, fresh = md.ChartBook(bitstamp), md.ChartBook(bitstamp)
    start = bitstamp.default_start_ms()
    for t in islice(bitstamp.ticks_from(start), 12 * 12):  # 12 minutes: crosses 5- and 10-minute buckets
        live.on_tick(t)
        fresh.on_tick(t)
        for res in (1, 5, 60):
            a = live.current_bar(res, t.ts_ms)
            fresh._live.clear()
            b = fresh.current_bar(res, t.ts_ms)
            assert a is not None and b is not None
            assert (a.tick, a.open, a.high, a.low, a.close) == (b.tick, b.open, b.high, b.low, b.close)
            assert a.volume == pytest.approx(b.volume) and a.cost == pytest.approx(b.cost, rel=1e-3)  # cost ~ v*price
